/**
 * Uploaded fine-tuning files, in the shape of OpenAI's Files API, kept in the store every replica
 * shares (the `training` records of the delta store): `files/<id>-<digest>.jsonl` holds the bytes
 * and `files/<id>.json` the TrainingFile record. The data goes first and the record last, so a
 * record always has its complete data beside it; removal deletes the record first. A replica keeps
 * an index of the records as a cache: a file it does not know is looked up in the store, and the
 * whole list is read again once older than the TTL.
 */
import crypto from 'node:crypto';
import { jsonBytes, readJson, type ObjectStore } from '../deltas/store/objects.js';

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
  /** SHA-256 (hex) of the bytes: which data object is this record's, and whether a retried upload is the same */
  sha256: string;
}

/** What the caller knows about an upload; the store fills in the rest. */
export interface NewTrainingFile {
  filename: string;
  tenant: string;
  rows: number;
}

/** An Idempotency-Key used before for other bytes. */
export class TrainingFileConflictError extends Error {
  readonly code = 'idempotency_key_reused';
}

const ID_PATTERN = /^file-[0-9a-f]{24}$/;

/**
 * The training files of every replica, with this replica's index of their records.
 *
 * @example
 * const store = await TrainingFileStore.open(deltaStore.records('training'));
 * const file = await store.put({ filename: 'train.jsonl', tenant: 'acme', rows: 120 }, bytes);
 * store.list('acme'); // [file]
 * await store.read(file.id); // the uploaded bytes
 */
export class TrainingFileStore {
  private readonly files = new Map<string, TrainingFile>();
  private listedAt = -Infinity;

  /** An empty index over `objects`; use `open` to load what the store already holds. */
  constructor(readonly objects: ObjectStore, private readonly ttlMs = 1000) {}

  /**
   * Loads the index of every complete file in the store.
   *
   * @example const store = await TrainingFileStore.open(new FilesystemObjects(dir));
   */
  static async open(objects: ObjectStore, ttlMs = 1000): Promise<TrainingFileStore> {
    const store = new TrainingFileStore(objects, ttlMs);
    await store.refresh(true);
    return store;
  }

  /**
   * Stores `bytes` under a fresh id (or, with an idempotency key, the id that key always names
   * for this tenant, so that a retried upload returns the first one) and returns its record.
   *
   * @example const file = await store.put({ filename: 'chat.jsonl', tenant: 'acme', rows: 3 }, bytes);
   */
  async put(meta: NewTrainingFile, bytes: Uint8Array, options: { idempotencyKey?: string } = {}): Promise<TrainingFile> {
    checkMeta(meta);
    const id = options.idempotencyKey === undefined ? `file-${crypto.randomBytes(12).toString('hex')}` : `file-${crypto.createHash('sha256').update(`${meta.tenant}\0${options.idempotencyKey}`).digest('hex').slice(0, 24)}`;
    const sha256 = crypto.createHash('sha256').update(bytes).digest('hex');
    const file: TrainingFile = { id, object: 'file', bytes: bytes.length, created_at: Math.floor(Date.now() / 1000), filename: meta.filename, purpose: 'fine-tune', status: 'processed', tenant: meta.tenant, rows: meta.rows, sha256 };
    await this.objects.put(dataKey(file), bytes);
    if (!(await this.objects.create(recordKey(id), jsonBytes(file)))) {
      // The id was taken: by the first attempt of this idempotency key (on any replica).
      const first = await readJson<TrainingFile>(this.objects, recordKey(id));
      if (first?.sha256 !== sha256) {
        if (first) await this.objects.delete([dataKey(file)]);
        throw new TrainingFileConflictError(`Idempotency-Key was first used for a training file with other content (${first?.id ?? id}); use a new key for a new upload`);
      }
      this.files.set(id, first);
      return first;
    }
    this.files.set(id, file);
    return file;
  }

  /** The record for `id` as this replica last saw it, or undefined (also for strings that are not file ids). */
  get(id: string): TrainingFile | undefined {
    return this.files.get(id);
  }

  /** The record for `id`, from the store when this replica does not know it (another replica's upload). */
  async find(id: string): Promise<TrainingFile | undefined> {
    if (!ID_PATTERN.test(id)) return undefined;
    const known = this.files.get(id);
    if (known) return known;
    const record = parseRecord(await readJson<unknown>(this.objects, recordKey(id)), id);
    if (record) this.files.set(id, record);
    return record;
  }

  /**
   * The stored bytes of `id`; throws if there is no such file.
   *
   * @example const text = new TextDecoder().decode(await store.read(file.id));
   */
  async read(id: string): Promise<Uint8Array> {
    const file = await this.find(id);
    const bytes = file ? await this.objects.get(dataKey(file)) : null;
    if (!file || !bytes) throw new Error(`no training file '${id}'`);
    return bytes;
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

  /** Reads every record again when the index is older than the TTL (or `force`): other replicas' uploads and deletes. */
  async refresh(force = false): Promise<void> {
    if (!force && Date.now() - this.listedAt < this.ttlMs) return;
    const started = Date.now();
    const keys = new Set(await this.objects.list('files/'));
    const ids = [...keys].filter((k) => k.endsWith('.json')).map((k) => k.slice('files/'.length, -'.json'.length));
    const seen = new Set<string>();
    for (const id of ids.filter((i) => ID_PATTERN.test(i))) {
      const record = this.files.get(id) ?? parseRecord(await readJson<unknown>(this.objects, recordKey(id)).catch(() => null), id);
      if (record && keys.has(dataKey(record))) {
        this.files.set(id, record);
        seen.add(id);
      }
    }
    for (const id of this.files.keys()) if (!seen.has(id)) this.files.delete(id);
    this.listedAt = started;
  }

  /**
   * Deletes `id`; false if it did not exist.
   *
   * @example if (!(await store.remove(id))) throw notFound(id);
   */
  async remove(id: string): Promise<boolean> {
    const file = await this.find(id);
    if (!file) return false;
    this.files.delete(id);
    // Record first: a crash between the two leaves data without a record, which is ignored.
    await this.objects.delete([recordKey(id)]);
    await this.objects.delete([dataKey(file)]);
    return true;
  }
}

const recordKey = (id: string) => `files/${id}.json`;
const dataKey = (file: Pick<TrainingFile, 'id' | 'sha256'>) => `files/${file.id}-${file.sha256.slice(0, 16)}.jsonl`;

function checkMeta({ filename, tenant, rows }: NewTrainingFile): void {
  if (typeof filename !== 'string' || filename === '') throw new TypeError('filename must be a non-empty string');
  if (typeof tenant !== 'string' || tenant === '') throw new TypeError('tenant must be a non-empty string');
  if (!Number.isInteger(rows) || rows < 0) throw new RangeError(`rows must be a non-negative integer, got ${rows}`);
}

/** A record is trusted only if it is whole and names its own id; others are skipped, not fatal. */
function parseRecord(value: unknown, id: string): TrainingFile | undefined {
  const record = value as TrainingFile | null;
  const whole = record !== null && typeof record === 'object' && record.id === id && record.object === 'file' && Number.isInteger(record.bytes) && Number.isInteger(record.created_at) &&
    typeof record.filename === 'string' && typeof record.tenant === 'string' && Number.isInteger(record.rows) && typeof record.sha256 === 'string' && /^[0-9a-f]{64}$/.test(record.sha256);
  return whole ? record : undefined;
}
