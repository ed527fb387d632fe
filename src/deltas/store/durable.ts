import crypto from 'node:crypto';
import fsp, { type FileHandle } from 'node:fs/promises';
import path from 'node:path';

/** Writes of at most this size per call, so a 20 MB file never needs one huge syscall. */
const WRITE_CHUNK = 1 << 20;

/**
 * Writes `bytes` to a new file (or replaces it with `overwrite`) and fsyncs it before returning.
 *
 * @example await writeFileDurably(path.join(stage, 'adapter_config.json'), bytes);
 */
export async function writeFileDurably(file: string, bytes: Uint8Array, overwrite = false): Promise<void> {
  const handle = await fsp.open(file, overwrite ? 'w' : 'wx');
  try {
    for (let offset = 0; offset < bytes.byteLength; ) {
      const length = Math.min(WRITE_CHUNK, bytes.byteLength - offset);
      const { bytesWritten } = await handle.write(bytes, offset, length, offset);
      offset += bytesWritten;
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Replaces `target` atomically: a durable temporary file in the same directory, renamed over it,
 * so a reader (or a crash) sees the old bytes or the new ones, never a mix.
 */
export async function replaceFileAtomically(target: string, bytes: Uint8Array): Promise<void> {
  const temp = path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`);
  await writeFileDurably(temp, bytes);
  try {
    await fsp.rename(temp, target);
  } catch (err) {
    await fsp.rm(temp, { force: true });
    throw err;
  }
}

/** fsync a directory so a rename or create inside it is durable (a no-op where unsupported). */
export async function fsyncDirectory(dir: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await fsp.open(dir, 'r');
    await handle.sync();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException | undefined)?.code;
    if (code !== 'EISDIR' && code !== 'EPERM' && code !== 'EINVAL' && code !== 'EBADF' && code !== 'ENOENT') throw error;
  } finally {
    await handle?.close();
  }
}
