/**
 * Small records shared by every replica over one store: a key → bytes map with one atomic
 * primitive, `create` (write a key only if it does not exist yet). Everything replicas must agree
 * on is built from it: delta version numbers, tombstones, idempotency keys, training files, job
 * records, job leases and their takeover.
 *
 * Implementations: a directory (`link(2)` of a finished temporary file onto the key fails with
 * EEXIST, so the first writer wins and readers never see a half-written record; see
 * objects-fs.ts) and an S3 prefix (`If-None-Match: *` where the server honours it, else a
 * PostgreSQL claims table given with --control-db; see objects-s3.ts).
 */

export interface ObjectStore {
  /** Human-readable location for logs and errors. */
  readonly location: string;
  /** The bytes under `key`, or null. */
  get(key: string): Promise<Uint8Array | null>;
  /** Writes `key` whole (replacing it); a reader sees the old bytes or the new ones, never a mix. */
  put(key: string, bytes: Uint8Array): Promise<void>;
  /**
   * Writes `key` only if no replica has created it before; true when this call did. Of several
   * concurrent creates of one key (from any process or host sharing the store) exactly one wins.
   */
  create(key: string, bytes: Uint8Array): Promise<boolean>;
  /** Every key that starts with `prefix` (a folder ends in '/'), ascending; only keys after `after` when given. */
  list(prefix: string, options?: { after?: string }): Promise<string[]>;
  /** Removes keys (absent ones are ignored). */
  delete(keys: readonly string[]): Promise<void>;
  /** The same store seen under `prefix/` (a namespace: training files, jobs, ...). */
  scope(prefix: string): ObjectStore;
}

const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9_.@=-]{0,127}$/;

/** Why `key` is not a storable key (segments of letters, digits, `_ . @ = -`, none starting with '.', no '..'), or null. */
export function keyProblem(key: string): string | null {
  if (typeof key !== 'string' || key === '') return 'is empty';
  for (const segment of key.split('/')) {
    if (!SEGMENT.test(segment) || segment.includes('..')) return `has a bad segment '${segment.slice(0, 40)}'`;
  }
  return null;
}

/** Throws unless `key` is a storable key. */
export function assertKey(key: string): void {
  const problem = keyProblem(key);
  if (problem) throw new Error(`invalid store key ${JSON.stringify(key.slice(0, 200))}: it ${problem}`);
}

/** A prefix given to list(): empty, or keys' leading segments followed by '/'. */
export function assertPrefix(prefix: string): void {
  if (prefix === '') return;
  assertKey(prefix.endsWith('/') ? prefix.slice(0, -1) : prefix);
}

/**
 * JSON helpers over an ObjectStore.
 *
 * @example const job = await readJson<JobRecord>(objects, 'jobs/ftjob-1/job.json');
 */
export async function readJson<T>(objects: ObjectStore, key: string): Promise<T | null> {
  for (let attempt = 1; ; attempt++) {
    const bytes = await objects.get(key);
    if (!bytes) return null;
    try {
      return JSON.parse(new TextDecoder().decode(bytes)) as T;
    } catch (error) {
      // S3 replaces an object atomically, but some compatible servers (s3rver among them) write
      // it in place, so a reader can catch a record half-written: read it again before giving up.
      if (attempt >= 5) throw new Error(`${objects.location}/${key} is not valid JSON`, { cause: error });
      await new Promise((resolve) => setTimeout(resolve, 20 * attempt));
    }
  }
}

export function jsonBytes(value: unknown): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify(value)}\n`);
}

/** Zero-padded so that lexical order (what list() returns) is numeric order. */
export function sequenceKey(n: number): string {
  return String(n).padStart(12, '0');
}
