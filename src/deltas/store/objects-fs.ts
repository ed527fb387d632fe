import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { fsyncDirectory, replaceFileAtomically, writeFileDurably } from './durable.js';
import { assertKey, assertPrefix, type ObjectStore } from './objects.js';

/**
 * Records as files under a directory (a shared volume for several replicas). `create` writes a
 * durable temporary file and `link(2)`s it onto the key: link fails with EEXIST when the key
 * exists, atomically, on every POSIX filesystem (local, NFSv3+, EFS), and the record appears
 * whole. `put` renames a temporary file over the key. Temporary files start with '.', which no key
 * segment may, so list() never returns them.
 *
 * @example
 * const objects = new FilesystemObjects('/var/lib/deltaserve/deltas/.training');
 * await objects.create('jobs/ftjob-1/lease/000000000001', bytes); // true once, false after
 */
export class FilesystemObjects implements ObjectStore {
  readonly location: string;

  constructor(readonly root: string) {
    this.root = path.resolve(root);
    this.location = pathToFileURL(this.root).href;
  }

  async get(key: string): Promise<Uint8Array | null> {
    assertKey(key);
    try {
      const buffer = await fsp.readFile(this.file(key));
      return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    } catch (error) {
      if (isMissing(error)) return null;
      throw error;
    }
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    assertKey(key);
    const file = this.file(key);
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await replaceFileAtomically(file, bytes);
    await fsyncDirectory(path.dirname(file));
  }

  async create(key: string, bytes: Uint8Array): Promise<boolean> {
    assertKey(key);
    const file = this.file(key);
    const dir = path.dirname(file);
    await fsp.mkdir(dir, { recursive: true });
    const temp = path.join(dir, `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(6).toString('hex')}.new`);
    await writeFileDurably(temp, bytes);
    try {
      await fsp.link(temp, file);
      await fsyncDirectory(dir);
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw error;
    } finally {
      await fsp.rm(temp, { force: true });
    }
  }

  async list(prefix: string, options: { after?: string } = {}): Promise<string[]> {
    assertPrefix(prefix);
    // The folder that holds every key with this prefix, and the part of the name to match in it.
    const slash = prefix.lastIndexOf('/');
    const folder = prefix.slice(0, slash + 1);
    const start = prefix.slice(slash + 1);
    const keys: string[] = [];
    const walk = async (relative: string): Promise<void> => {
      for (const entry of await readDir(path.join(this.root, relative))) {
        if (entry.name.startsWith('.')) continue;
        const key = `${relative}${entry.name}`;
        if (relative === folder && !entry.name.startsWith(start)) continue;
        if (entry.isDirectory()) await walk(`${key}/`);
        else if (entry.isFile()) keys.push(key);
      }
    };
    await walk(folder);
    keys.sort();
    return options.after === undefined ? keys : keys.filter((k) => k > options.after!);
  }

  async delete(keys: readonly string[]): Promise<void> {
    for (const key of keys) {
      assertKey(key);
      await fsp.rm(this.file(key), { force: true });
    }
  }

  scope(prefix: string): ObjectStore {
    assertKey(prefix);
    return new FilesystemObjects(path.join(this.root, ...prefix.split('/')));
  }

  private file(key: string): string {
    return path.join(this.root, ...key.split('/'));
  }
}

async function readDir(dir: string) {
  try {
    return await fsp.readdir(dir, { withFileTypes: true });
  } catch (error) {
    if (isMissing(error)) return [];
    throw error;
  }
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
