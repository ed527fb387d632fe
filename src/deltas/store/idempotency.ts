/**
 * Idempotent puts: a client that lost the response to an upload retries with the same
 * `Idempotency-Key` and gets the version its first attempt created, never a second one.
 *
 * The key is claimed with the store's atomic create (`<owner>/<name>/idempotency/<sha256 of the
 * key>`, holding the upload's digest and "pending"); the claimant stores the version and then
 * records its number there. A retry that finds the record waits for the number (the first attempt
 * may still be uploading, on this replica or another) and answers with that version. A key reused
 * for different bytes is refused. Keys are scoped to one owner and delta name.
 */
import crypto from 'node:crypto';
import { assertValidDeltaName, digestFiles } from './common.js';
import { jsonBytes, readJson, type ObjectStore } from './objects.js';
import type { DeltaFiles, DeltaStore, DeltaVersion, NewDeltaVersion, PutOptions } from './types.js';

/** How long a retry waits for the first attempt (still uploading) before answering "in progress". */
const WAIT_MS = 30_000;
const POLL_MS = 50;
/** Idempotency keys are opaque client strings; this bounds what is hashed and echoed. */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;

interface IdempotencyRecord {
  sha256: string;
  state: 'pending' | 'done';
  version?: number;
  at: string;
}

/** An Idempotency-Key that cannot be honoured: reused for other bytes, or its first use is still in flight. */
export class IdempotencyError extends Error {
  constructor(
    readonly code: 'idempotency_key_reused' | 'idempotency_in_progress' | 'idempotency_version_deleted',
    message: string,
  ) {
    super(message);
    this.name = 'IdempotencyError';
  }
}

/**
 * DeltaStore.put for a store whose records live in `objects`: checks the names, digests the
 * files, and stores them with `putNew` (once per idempotency key, when the options carry one).
 */
export async function putDeltaVersion(
  store: Pick<DeltaStore, 'get'>,
  objects: ObjectStore,
  delta: NewDeltaVersion,
  files: DeltaFiles,
  options: PutOptions,
  putNew: (sha256: string) => Promise<DeltaVersion>,
): Promise<DeltaVersion> {
  assertValidDeltaName('owner', delta.owner);
  assertValidDeltaName('name', delta.name);
  const sha256 = digestFiles(files);
  if (options.idempotencyKey === undefined) return putNew(sha256);
  const request = { owner: delta.owner, name: delta.name, key: options.idempotencyKey, sha256 };
  return idempotentPut(objects, request, (v) => store.get(delta.owner, delta.name, v), () => putNew(sha256));
}

/**
 * Runs `putNew` at most once per (owner, name, key) across every replica sharing `objects`.
 *
 * @example
 * const version = await idempotentPut(objects, { owner, name, key, sha256 }, (v) => store.get(owner, name, v), () => putNew());
 */
export async function idempotentPut(
  objects: ObjectStore,
  request: { owner: string; name: string; key: string; sha256: string },
  getVersion: (version: number) => Promise<DeltaVersion | null>,
  putNew: () => Promise<DeltaVersion>,
): Promise<DeltaVersion> {
  const { owner, name, key, sha256 } = request;
  if (typeof key !== 'string' || key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
    throw new IdempotencyError('idempotency_key_reused', `Idempotency-Key must be 1-${MAX_IDEMPOTENCY_KEY_LENGTH} characters, got ${String(key).length}`);
  }
  const recordKey = `${owner}/${name}/idempotency/${crypto.createHash('sha256').update(key).digest('hex')}`;
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const pending: IdempotencyRecord = { sha256, state: 'pending', at: new Date().toISOString() };
    if (await objects.create(recordKey, jsonBytes(pending))) {
      let version: DeltaVersion;
      try {
        version = await putNew();
      } catch (error) {
        // Nothing was stored: free the key so that a retry can try again.
        await objects.delete([recordKey]).catch(() => undefined);
        throw error;
      }
      await objects.put(recordKey, jsonBytes({ ...pending, state: 'done', version: version.version }));
      return version;
    }
    const record = await readJson<IdempotencyRecord>(objects, recordKey);
    // The first attempt failed and freed the key (this one may go), or is between its claim and its write.
    if (record === null && Date.now() <= deadline) continue;
    if (record === null) throw new IdempotencyError('idempotency_in_progress', `an upload of ${owner}/${name} with this Idempotency-Key is still in progress; retry later`);
    if (record.sha256 !== sha256) {
      throw new IdempotencyError('idempotency_key_reused', `Idempotency-Key was first used for ${owner}/${name} with other content (SHA-256 ${record.sha256.slice(0, 12)}…, this upload ${sha256.slice(0, 12)}…); use a new key for a new upload`);
    }
    if (record.state === 'done' && record.version !== undefined) {
      const version = await getVersion(record.version);
      if (!version) throw new IdempotencyError('idempotency_version_deleted', `Idempotency-Key created ${owner}/${name}@${record.version}, which has since been deleted`);
      return version;
    }
    if (Date.now() > deadline) throw new IdempotencyError('idempotency_in_progress', `an upload of ${owner}/${name} with this Idempotency-Key is still in progress; retry later`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}
