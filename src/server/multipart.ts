import { randomUUID } from 'node:crypto';
import fs, { type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { MultipartError, PartScanner, clip, parseParameters, type PartEvent, type PartHead } from './multipart-scanner.js';

export { MultipartError } from './multipart-scanner.js';

/**
 * Streaming `multipart/form-data` (RFC 7578, RFC 2046): limits are enforced while bytes arrive,
 * whether or not the request declared a Content-Length, and file parts go to disk, so an upload
 * costs about one chunk of memory however large it is.
 */
export interface MultipartOptions {
  /** Directory for spooled file parts (created if missing); each file gets a unique name inside it. */
  spoolDir: string;
  /** Largest body, all parts together (bytes read from the stream, headers included). */
  maxBodyBytes: number;
  /** Per file field, its largest size in bytes; a file part whose field is not listed is a 400 naming it. */
  files: Record<string, number>;
  /** Text fields accepted (a text part with another name is a 400 naming it); each at most maxFieldBytes. */
  fields: readonly string[];
  maxFieldBytes?: number; // default 64 KiB
}

/** A file part on disk. `filename` is the client's (never used as a path); null when it sent `filename=""`. */
export interface SpooledFile {
  field: string;
  filename: string | null;
  path: string;
  size: number;
}

export interface MultipartForm {
  fields: Record<string, string>;
  files: Record<string, SpooledFile>;
  /** removes every spooled file; idempotent */
  cleanup(): Promise<void>;
}

export const DEFAULT_MAX_FIELD_BYTES = 64 * 1024;

/** Small writes are gathered up to this size, so a body arriving in tiny chunks is not one syscall per chunk. */
const SPOOL_WRITE_BYTES = 64 * 1024;

// RFC 2046 bchars; the last one may not be a space.
const BOUNDARY = /^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/;

/**
 * Reads a multipart body: text fields into memory, file parts into `options.spoolDir`. Throws
 * MultipartError (415 wrong content type; 400 malformed, unknown or repeated field; 413 over a
 * limit, naming the field, or `param: null` for the whole body). On any error the stream is
 * cancelled unread and every spooled file is deleted; on success the caller owns the files until
 * it calls `cleanup()`.
 *
 * @example
 * const form = await readMultipart(c.req.raw.body, c.req.header('content-type'), {
 *   spoolDir: path.join(os.tmpdir(), 'deltaserve-uploads'),
 *   maxBodyBytes: 512 * 2 ** 20,
 *   files: { adapter_config: 64 * 1024, adapter_model: 500 * 2 ** 20 },
 *   fields: ['name'],
 * });
 * try {
 *   await install(form.fields.name, form.files.adapter_model?.path);
 * } finally {
 *   await form.cleanup();
 * }
 */
export async function readMultipart(body: ReadableStream<Uint8Array> | null, contentType: string | undefined, options: MultipartOptions): Promise<MultipartForm> {
  const limits = checkOptions(options);
  const boundary = boundaryOf(contentType);
  if (!body) throw new MultipartError(400, 'a multipart/form-data request body is required', null);
  const reader = body.getReader();
  const spool = new Spool(options.spoolDir);
  const form = new FormAssembler(limits, spool);
  try {
    await pump(reader, new PartScanner(boundary), form, limits.maxBodyBytes);
  } catch (err) {
    // Stop the upload first (nothing more is read), then remove what was already written.
    await reader.cancel().catch(() => {});
    await form.abort();
    throw err;
  }
  return { fields: form.fields, files: form.files, cleanup: () => spool.cleanup() };
}

interface Limits {
  maxBodyBytes: number;
  maxFieldBytes: number;
  files: ReadonlyMap<string, number>;
  fields: ReadonlySet<string>;
}

/** Programmer mistakes in the options are plain Errors, thrown before the body is touched. */
function checkOptions(options: MultipartOptions): Limits {
  const positive = (what: string, n: unknown): number => {
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n <= 0) throw new Error(`readMultipart: ${what} must be a positive integer, got ${String(n)}`);
    return n;
  };
  if (typeof options?.spoolDir !== 'string' || !options.spoolDir) throw new Error('readMultipart: options.spoolDir must name a directory');
  // Maps, not the given objects, so a part named `constructor` or `__proto__` finds nothing inherited.
  const files = new Map(Object.entries(options.files ?? {}).map(([name, max]) => [name, positive(`options.files.${name}`, max)] as const));
  const fields = new Set(options.fields ?? []);
  for (const name of fields) if (files.has(name)) throw new Error(`readMultipart: '${name}' is listed both as a file and as a text field`);
  const maxFieldBytes = positive('options.maxFieldBytes', options.maxFieldBytes ?? DEFAULT_MAX_FIELD_BYTES);
  return { maxBodyBytes: positive('options.maxBodyBytes', options.maxBodyBytes), maxFieldBytes, files, fields };
}

/** The boundary from `multipart/form-data; boundary=...`: 415 for another type, 400 for a missing or invalid boundary. */
export function boundaryOf(contentType: string | undefined): string {
  const expected = 'expected Content-Type multipart/form-data with a boundary';
  const type = (contentType ?? '').split(';', 1)[0]!.trim().toLowerCase();
  if (type !== 'multipart/form-data') throw new MultipartError(415, `${expected}, got ${contentType ? `'${clip(contentType)}'` : 'none'}`, null);
  const boundary = parseParameters(contentType!, 'Content-Type').params.get('boundary');
  if (boundary === undefined) throw new MultipartError(400, `${expected}: the boundary parameter is missing`, null);
  if (!BOUNDARY.test(boundary)) throw new MultipartError(400, `${expected}: '${clip(boundary)}' is not 1-70 of RFC 2046's boundary characters`, null);
  return boundary;
}

/** Reads the stream into the scanner and the scanner's parts into the form, one chunk at a time. */
async function pump(reader: ReadableStreamDefaultReader<Uint8Array>, scanner: PartScanner, form: FormAssembler, maxBodyBytes: number): Promise<void> {
  let received = 0;
  // Read to the end even after the closing delimiter: the scanner ignores the epilogue, but it is
  // still counted against the limit, and the request is consumed whole.
  for (;;) {
    const { done, value } = await readChunk(reader);
    if (done) return scanner.finish();
    received += value.byteLength;
    // Counted before parsing, so an unbounded body stops within a chunk of the limit.
    if (received > maxBodyBytes) throw new MultipartError(413, `request body exceeds the limit of ${maxBodyBytes} bytes`, null);
    // Events are handled as the scanner yields them: the first problem in stream order is the one
    // reported, however the body happened to be chunked.
    for (const event of scanner.push(value)) await form.handle(event);
  }
}

async function readChunk(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<ReadableStreamReadResult<Uint8Array>> {
  let result: ReadableStreamReadResult<Uint8Array>;
  try {
    result = await reader.read();
  } catch (err) {
    throw new MultipartError(400, `request body could not be read: ${(err as Error)?.message ?? String(err)}`, null);
  }
  if (!result.done && !(result.value instanceof Uint8Array)) throw new MultipartError(400, 'request body stream gave something other than bytes', null);
  return result;
}

/** Creates spool files and remembers them until they are removed. */
class Spool {
  private readonly paths: string[] = [];
  private ready = false;

  constructor(private readonly dir: string) {}

  async create(): Promise<{ path: string; handle: FileHandle }> {
    if (!this.ready) await fs.mkdir(this.dir, { recursive: true });
    this.ready = true;
    // A random name, never the client's filename: nothing it sends can choose where bytes land.
    // The pid lets a restart tell a killed process's leftovers from a live upload's.
    const file = path.join(this.dir, `upload-${process.pid}-${randomUUID()}.part`);
    this.paths.push(file);
    // Owner-only: uploads are tenants' private adapters and training data.
    return { path: file, handle: await fs.open(file, 'wx', 0o600) };
  }

  async cleanup(): Promise<void> {
    const paths = this.paths.splice(0);
    await Promise.all(paths.map((file) => fs.rm(file, { force: true })));
  }
}

/**
 * Removes spooled parts that a killed process left (its pid is gone), and unnamed ones older than
 * an hour; an upload in progress in a live process sharing the directory keeps its file.
 *
 * @example await removeAbandonedSpool(path.join(dataDir, 'uploads')); // at startup
 */
export async function removeAbandonedSpool(dir: string): Promise<number> {
  const entries = await fs.readdir(dir).catch(() => [] as string[]);
  let removed = 0;
  for (const entry of entries) {
    const match = /^upload-(?:(\d+)-)?[0-9a-f-]{36}\.part$/.exec(entry);
    if (!match) continue;
    const file = path.join(dir, entry);
    const abandoned = match[1] ? !processIsAlive(Number(match[1])) : Date.now() - ((await fs.stat(file).catch(() => undefined))?.mtimeMs ?? Date.now()) > 3_600_000;
    if (!abandoned) continue;
    await fs.rm(file, { force: true });
    removed++;
  }
  return removed;
}

function processIsAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

type OpenPart =
  | { kind: 'file'; name: string; filename: string | null; path: string; handle: FileHandle; limit: number; size: number; queued: Uint8Array[]; queuedBytes: number }
  | { kind: 'field'; name: string; chunks: Uint8Array[]; size: number };

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Turns scanner events into the form: checks names and limits, writes files, decodes text. */
class FormAssembler {
  readonly fields: Record<string, string> = {};
  readonly files: Record<string, SpooledFile> = {};
  private readonly seen = new Set<string>();
  private open: OpenPart | null = null;

  constructor(
    private readonly limits: Limits,
    private readonly spool: Spool,
  ) {}

  async handle(event: PartEvent): Promise<void> {
    if (event.kind === 'part') await this.begin(event.head);
    else if (event.kind === 'data') await this.data(this.open!, event.bytes);
    else await this.end(this.open!);
  }

  /** After a failure: closes the open file, if any, and deletes every spooled one. */
  async abort(): Promise<void> {
    if (this.open?.kind === 'file') await this.open.handle.close().catch(() => {});
    this.open = null;
    await this.spool.cleanup();
  }

  private async begin({ name, filename }: PartHead): Promise<void> {
    if (this.seen.has(name)) throw new MultipartError(400, `form field '${clip(name)}' is given more than once`, name);
    this.seen.add(name);
    const limit = this.limits.files.get(name);
    if (filename !== undefined && limit !== undefined) {
      const { path, handle } = await this.spool.create();
      this.open = { kind: 'file', name, filename: filename || null, path, handle, limit, size: 0, queued: [], queuedBytes: 0 };
    } else if (filename === undefined && this.limits.fields.has(name)) {
      this.open = { kind: 'field', name, chunks: [], size: 0 };
    } else {
      throw new MultipartError(400, this.unexpected(name, filename !== undefined), name);
    }
  }

  private unexpected(name: string, isFile: boolean): string {
    if (isFile && this.limits.fields.has(name)) return `form field '${name}' must be text, not a file`;
    if (!isFile && this.limits.files.has(name)) return `form field '${name}' must be a file (a part with a filename)`;
    const expected = [...this.limits.files.keys(), ...this.limits.fields].map((n) => `'${n}'`).join(', ');
    return `unexpected ${isFile ? 'file' : 'form field'} '${clip(name)}' (expected ${expected || 'no fields'})`;
  }

  private async data(part: OpenPart, bytes: Uint8Array): Promise<void> {
    part.size += bytes.length;
    if (part.kind === 'field') {
      const max = this.limits.maxFieldBytes;
      if (part.size > max) throw new MultipartError(413, `form field '${part.name}' exceeds the limit of ${max} bytes`, part.name);
      part.chunks.push(new Uint8Array(bytes)); // a copy, so a short value does not pin its whole chunk
      return;
    }
    if (part.size > part.limit) throw new MultipartError(413, `file '${part.name}' exceeds the limit of ${part.limit} bytes`, part.name);
    // Written (and awaited) once a write's worth is queued: the next chunk is not read until it is
    // on disk. Bytes held past this chunk are copied, so small runs do not pin whole chunks.
    const flushNow = part.queuedBytes + bytes.length >= SPOOL_WRITE_BYTES;
    part.queued.push(flushNow ? bytes : new Uint8Array(bytes));
    part.queuedBytes += bytes.length;
    if (flushNow) await flush(part);
  }

  private async end(part: OpenPart): Promise<void> {
    if (part.kind === 'field') {
      this.open = null;
      this.fields[part.name] = decodeField(part.name, part.chunks);
      return;
    }
    // Still `open` until closed, so abort() closes it if the last write fails.
    await flush(part);
    await part.handle.close();
    this.open = null;
    this.files[part.name] = { field: part.name, filename: part.filename, path: part.path, size: part.size };
  }
}

/** Writes a file part's queued bytes, all of them (a write may take fewer than it is given). */
async function flush(part: Extract<OpenPart, { kind: 'file' }>): Promise<void> {
  const bytes = part.queued.length === 1 ? part.queued[0]! : Buffer.concat(part.queued);
  part.queued = [];
  part.queuedBytes = 0;
  for (let done = 0; done < bytes.length; ) {
    done += (await part.handle.write(bytes, done, bytes.length - done)).bytesWritten;
  }
}

function decodeField(name: string, chunks: Uint8Array[]): string {
  try {
    return utf8.decode(Buffer.concat(chunks));
  } catch {
    throw new MultipartError(400, `form field '${name}' is not valid UTF-8`, name);
  }
}
