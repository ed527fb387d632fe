/**
 * Uploaded fine-tuning files, in the shape of OpenAI's Files API, kept in one directory:
 * `<dir>/<id>.jsonl` holds the bytes and `<dir>/<id>.json` the TrainingFile record.
 *
 * Each file is written to a temporary name in the same directory, fsynced and renamed into place,
 * and the record goes last: a record on disk therefore always has its complete data beside it.
 * A crash can leave only a temporary file or a data file without a record, and `open` ignores
 * both. Removal deletes the record first for the same reason.
 */
import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fsyncDirectory, replaceFileAtomically } from '../deltas/store/durable.js';

/** One uploaded training file, as the Files API returns it (plus the owning tenant and row count). */
export interface TrainingFile {
  /** 'file-' + 24 hex digits */
  id: string;
  object: 'file';
  bytes: number;
  /** unix seconds */
  created_at: number;
  filename: string;
  purpose: 'fine-tune';
  status: 'processed';
  tenant: string;
  /** examples in the file, as counted when it was validated */
  rows: number;
}

/** What the caller knows about an upload; the store fills in the rest. */
export interface NewTrainingFile {
  filename: string;
  tenant: string;
  rows: number;
}

const ID_PATTERN = /^file-[0-9a-f]{24}$/;
const DATA_EXT = '.jsonl';
const META_EXT = '.json';

/**
 * A directory of training files with an in-memory index of their records.
 *
 * @example
 * const store = await TrainingFileStore.open('/var/lib/deltaserve/files');
 * const file = await store.put({ filename: 'train.jsonl', tenant: 'acme', rows: 120 }, bytes);
 * store.list('acme'); // [file]
 * await store.read(file.id); // the uploaded bytes
 */
export class TrainingFileStore {
  private readonly files = new Map<string, TrainingFile>();

  /** An empty index over `dir`; use `open` to load what the directory already holds. */
  constructor(readonly dir: string) {}

  /**
   * Creates `dir` if needed and loads every complete file in it.
   *
   * @example const store = await TrainingFileStore.open(path.join(dataDir, 'files'));
   */
  static async open(dir: string): Promise<TrainingFileStore> {
    const store = new TrainingFileStore(dir);
    await fsp.mkdir(dir, { recursive: true });
    await store.load();
    return store;
  }

  /**
   * Stores `bytes` durably under a fresh id and returns its record.
   *
   * @example const file = await store.put({ filename: 'chat.jsonl', tenant: 'acme', rows: 3 }, bytes);
   */
  async put(meta: NewTrainingFile, bytes: Uint8Array): Promise<TrainingFile> {
    checkMeta(meta);
    await fsp.mkdir(this.dir, { recursive: true });
    const id = `file-${crypto.randomBytes(12).toString('hex')}`;
    const file: TrainingFile = {
      id,
      object: 'file',
      bytes: bytes.length,
      created_at: Math.floor(Date.now() / 1000),
      filename: meta.filename,
      purpose: 'fine-tune',
      status: 'processed',
      tenant: meta.tenant,
      rows: meta.rows,
    };
    await replaceFileAtomically(path.join(this.dir, `${id}${DATA_EXT}`), bytes);
    // The data's rename must be durable before the record's, or a crash could keep only the record.
    await fsyncDirectory(this.dir);
    await replaceFileAtomically(path.join(this.dir, `${id}${META_EXT}`), new TextEncoder().encode(JSON.stringify(file)));
    await fsyncDirectory(this.dir);
    this.files.set(id, file);
    return file;
  }

  /** The record for `id`, or undefined (also for strings that are not file ids). */
  get(id: string): TrainingFile | undefined {
    return this.files.get(id);
  }

  /**
   * The stored bytes of `id`; throws if there is no such file.
   *
   * @example const text = new TextDecoder().decode(await store.read(file.id));
   */
  async read(id: string): Promise<Uint8Array> {
    if (!this.files.has(id)) throw new Error(`no training file '${id}'`);
    return new Uint8Array(await fsp.readFile(this.dataPath(id)));
  }

  /**
   * Records, newest first (the Files API's default order), optionally of one tenant only.
   *
   * @example store.list('acme').map((f) => f.id);
   */
  list(tenant?: string): TrainingFile[] {
    return [...this.files.values()]
      .filter((f) => tenant === undefined || f.tenant === tenant)
      .sort((a, b) => b.created_at - a.created_at || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /**
   * Deletes `id`; false if it did not exist.
   *
   * @example if (!(await store.remove(id))) throw notFound(id);
   */
  async remove(id: string): Promise<boolean> {
    if (!this.files.delete(id)) return false;
    // Record first: a crash between the two leaves a data file without a record, which is ignored.
    await fsp.rm(path.join(this.dir, `${id}${META_EXT}`), { force: true });
    await fsp.rm(this.dataPath(id), { force: true });
    return true;
  }

  private dataPath(id: string): string {
    return path.join(this.dir, `${id}${DATA_EXT}`);
  }

  /** Reads every `<id>.json` whose data file exists; anything else in the directory is ignored. */
  private async load(): Promise<void> {
    const names = new Set(await fsp.readdir(this.dir));
    for (const name of names) {
      const id = name.slice(0, -META_EXT.length);
      if (!name.endsWith(META_EXT) || !ID_PATTERN.test(id) || !names.has(`${id}${DATA_EXT}`)) continue;
      const record = parseRecord(await fsp.readFile(path.join(this.dir, name), 'utf8'), id);
      if (record) this.files.set(id, record);
    }
  }

}

function checkMeta({ filename, tenant, rows }: NewTrainingFile): void {
  if (typeof filename !== 'string' || filename === '') throw new TypeError('filename must be a non-empty string');
  if (typeof tenant !== 'string' || tenant === '') throw new TypeError('tenant must be a non-empty string');
  if (!Number.isInteger(rows) || rows < 0) throw new RangeError(`rows must be a non-negative integer, got ${rows}`);
}

/** A record is trusted only if it is whole and names its own id; others are skipped, not fatal. */
function parseRecord(text: string, id: string): TrainingFile | undefined {
  try {
    const record = JSON.parse(text) as TrainingFile;
    const whole = record.id === id && record.object === 'file' && Number.isInteger(record.bytes) && Number.isInteger(record.created_at) &&
      typeof record.filename === 'string' && typeof record.tenant === 'string' && Number.isInteger(record.rows);
    return whole ? record : undefined;
  } catch {
    return undefined;
  }
}

