/**
 * Deltas in an S3 bucket (AWS or any S3-compatible server): keys
 * `<prefix>/<owner>/<name>/v<N>/{adapter_config.json, adapter_model.safetensors, meta.json}`,
 * tombstones `<prefix>/<owner>/<name>/deleted/v<N>`, idempotency records
 * `<prefix>/<owner>/<name>/idempotency/<hash>`, other records under `<prefix>/.training/`.
 *
 * Commit protocol: a put uploads adapter_config.json, then adapter_model.safetensors, then
 * meta.json last. meta.json is the commit marker: a version without it does not exist (get, list
 * and versions ignore it), so a writer killed mid-upload leaves only invisible objects (removed by
 * delete(); they are never read).
 *
 * Version allocation: the next number is one above every `v<N>/` present, committed or not, and
 * above the tombstone (an unfinished version may be another writer still uploading, and a deleted
 * one may be pinned by a client, so neither number is reused; a killed upload leaves a gap). The
 * first object of a version is written with the store's atomic create (objects-s3.ts: a claims
 * table with --control-db, else `If-None-Match: *` where the server honours it), so of two
 * replicas racing for `v<N>` one wins and the other moves to the next number.
 */
import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import {
  CONFIG_FILE,
  deletedThrough,
  DeltaNotFoundError,
  META_FILE,
  WEIGHTS_FILE,
  assertValidDeltaName,
  assertVersionRef,
  decodeMeta,
  deltaLabel,
  encodeMeta,
  isValidVersion,
  makeVersion,
  parseVersionSegment,
  tombstoneKey,
  tombstoneRecord,
  verifyFiles,
  versionSegment,
} from './common.js';
import { isValidName } from '../ref.js';
import { putDeltaVersion } from './idempotency.js';
import { S3Arbitration, S3Objects, type Claims } from './objects-s3.js';
import type { ObjectStore } from './objects.js';
import type { DeltaFiles, DeltaStore, DeltaVersion, NewDeltaVersion, PutOptions } from './types.js';

/** Default deadline of one S3 request, body included (see S3DeltaStoreOptions.timeoutMs). */
export const DEFAULT_STORE_TIMEOUT_MS = 10_000;

export interface S3DeltaStoreOptions {
  /** e.g. `http://127.0.0.1:9000` for MinIO; AWS's own endpoint when unset. */
  endpoint?: string;
  /** `http://endpoint/bucket/key` instead of `http://bucket.endpoint/key` (most S3-compatible servers want it). */
  forcePathStyle?: boolean;
  /** Default: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`. */
  region?: string;
  /** Default: the SDK's chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, profiles, roles). */
  credentials?: S3ClientConfig['credentials'];
  /**
   * Whether the server honours `If-None-Match: *` on PutObject: 'probe' (default) finds out with
   * two writes of a probe key the first time a create is needed; true trusts it; false never sends
   * it (creates are then atomic only inside this process). Ignored with `claims`.
   */
  conditionalWrites?: boolean | 'probe';
  /**
   * Deadline of each request, its body included (default 10 s): a server that does not answer
   * in time fails the call with StoreUnavailableError (a 503 to clients) instead of holding it.
   */
  timeoutMs?: number;
  /** A claims table (PostgreSQL, --control-db) that arbitrates creates between replicas. */
  claims?: Claims;
  /** Where the warning goes when creates are atomic only inside this process. */
  warn?: (message: string) => void;
}

/** `s3://bucket/some/prefix/` → `{ bucket: 'bucket', prefix: 'some/prefix' }`. */
export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const match = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url);
  if (!match || !match[1]) throw new Error(`not an S3 URL (s3://bucket/prefix): ${JSON.stringify(url)}`);
  const prefix = (match[2] ?? '').replace(/^\/+|\/+$/g, '');
  if (prefix.split('/').some((segment) => segment === '' && prefix !== '')) {
    throw new Error(`S3 prefix has an empty segment: ${JSON.stringify(url)}`);
  }
  return { bucket: match[1], prefix };
}

/**
 * Options from the environment: `AWS_ENDPOINT_URL_S3` (else `AWS_ENDPOINT_URL`),
 * `AWS_S3_FORCE_PATH_STYLE` (`1`/`true`/`yes`), `AWS_REGION` (else `AWS_DEFAULT_REGION`).
 * Credentials stay with the SDK's default chain, which reads the standard variables itself.
 */
export function s3OptionsFromEnv(env: NodeJS.ProcessEnv = process.env): S3DeltaStoreOptions {
  const options: S3DeltaStoreOptions = {};
  const endpoint = env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL;
  if (endpoint) options.endpoint = endpoint;
  const pathStyle = env.AWS_S3_FORCE_PATH_STYLE?.trim().toLowerCase();
  if (pathStyle) options.forcePathStyle = ['1', 'true', 'yes', 'on'].includes(pathStyle);
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION;
  if (region) options.region = region;
  return options;
}

export class S3DeltaStore implements DeltaStore {
  readonly location: string;
  readonly bucket: string;
  /** Key prefix without a trailing slash ('' for the bucket root). */
  readonly prefix: string;
  readonly client: S3Client;
  /** The store's keys as records: versions are claimed, tombstones and idempotency keys written, through it. */
  private readonly objects: S3Objects;

  constructor(url: string, options: S3DeltaStoreOptions = {}) {
    const { bucket, prefix } = parseS3Url(url);
    this.bucket = bucket;
    this.prefix = prefix;
    this.location = prefix ? `s3://${bucket}/${prefix}` : `s3://${bucket}`;
    const config: S3ClientConfig = {
      region: options.region || process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || 'us-east-1',
      forcePathStyle: options.forcePathStyle ?? false,
      // S3-compatible servers often reject the newer default CRC checksums.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    };
    if (options.endpoint) config.endpoint = options.endpoint;
    if (options.credentials) config.credentials = options.credentials;
    this.client = new S3Client(config);
    const conditional = options.conditionalWrites ?? 'probe';
    const arbitration = new S3Arbitration(options.claims, this.base, options.warn, conditional === 'probe' ? undefined : conditional);
    this.objects = new S3Objects(this.client, bucket, this.base, arbitration, options.timeoutMs ?? DEFAULT_STORE_TIMEOUT_MS);
  }

  records(namespace: 'training'): ObjectStore {
    return new S3Objects(this.client, this.bucket, `${this.base}.${namespace}/`, this.objects.arbitration, this.objects.timeoutMs);
  }

  put(delta: NewDeltaVersion, files: DeltaFiles, options: PutOptions = {}): Promise<DeltaVersion> {
    return putDeltaVersion(this, this.objects, delta, files, options, (sha256) => this.putNew(delta, files, sha256));
  }

  async get(owner: string, name: string, version?: number): Promise<DeltaVersion | null> {
    assertValidDeltaName('owner', owner);
    assertValidDeltaName('name', name);
    if (version !== undefined) {
      if (!isValidVersion(version)) return null;
      const deleted = deletedThrough(await this.objects.list(`${owner}/${name}/deleted/`));
      return version > deleted ? this.readMeta(owner, name, version) : null;
    }
    const { committed } = await this.scan(owner, name);
    for (let i = committed.length - 1; i >= 0; i--) {
      const meta = await this.readMeta(owner, name, committed[i]!);
      if (meta) return meta;
    }
    return null;
  }

  async list(owner?: string): Promise<DeltaVersion[]> {
    if (owner !== undefined) assertValidDeltaName('owner', owner);
    // Owner names never start with '.', and '~' sorts after every character of our (ASCII) keys:
    // listing after '.~' skips the store's own records (.training/: every job's events and
    // checkpoints, overwritten leases), which a list of every delta would otherwise page through.
    const keys = await this.objects.list(owner === undefined ? '' : `${owner}/`, owner === undefined ? { after: '.~' } : {});
    const latest = new Map<string, { owner: string; name: string; version: number }>();
    const deleted = new Map<string, number>();
    for (const key of keys) {
      const parsed = this.parseKey(key);
      if (!parsed) continue;
      const id = `${parsed.owner}/${parsed.name}`;
      if (parsed.file === 'tombstone') deleted.set(id, Math.max(deleted.get(id) ?? 0, parsed.version));
      if (parsed.file !== META_FILE) continue;
      const seen = latest.get(id);
      if (!seen || seen.version < parsed.version) latest.set(id, parsed);
    }
    const ids = [...latest.keys()].filter((id) => latest.get(id)!.version > (deleted.get(id) ?? 0)).sort();
    const metas = await mapLimit(ids, 8, (id) => {
      const { owner: o, name: n, version: v } = latest.get(id)!;
      return this.readMeta(o, n, v);
    });
    return metas.filter((meta): meta is DeltaVersion => meta !== null);
  }

  async versions(owner: string, name: string): Promise<DeltaVersion[]> {
    assertValidDeltaName('owner', owner);
    assertValidDeltaName('name', name);
    const { committed } = await this.scan(owner, name);
    const metas = await mapLimit(committed, 8, (v) => this.readMeta(owner, name, v));
    return metas.filter((meta): meta is DeltaVersion => meta !== null);
  }

  async read(version: DeltaVersion): Promise<DeltaFiles> {
    assertVersionRef(version);
    const { owner, name } = version;
    const [config, weights] = await Promise.all([
      this.objects.get(this.key(owner, name, version.version, CONFIG_FILE)),
      this.objects.get(this.key(owner, name, version.version, WEIGHTS_FILE)),
    ]);
    if (!config || !weights) throw new DeltaNotFoundError(deltaLabel(owner, name, version.version), this.location);
    return verifyFiles(version, { config, weights });
  }

  async delete(owner: string, name: string): Promise<boolean> {
    assertValidDeltaName('owner', owner);
    assertValidDeltaName('name', name);
    const { committed } = await this.scan(owner, name);
    if (committed.length === 0) return false;
    const highest = committed[committed.length - 1]!;
    // The tombstone first: every replica stops seeing these versions at once, and their numbers stay taken.
    await this.objects.create(tombstoneKey(owner, name, highest), tombstoneRecord());
    const keys = (await this.objects.list(`${owner}/${name}/`)).filter((key) => {
      const parsed = this.parseKey(key);
      return parsed !== null && parsed.file !== 'tombstone' && parsed.version <= highest;
    });
    // Commit markers first, so that nothing half-removed is ever read as a version.
    await this.objects.delete(keys.filter((key) => key.endsWith(`/${META_FILE}`)));
    await this.objects.delete(keys.filter((key) => !key.endsWith(`/${META_FILE}`)));
    return true;
  }

  private async putNew(delta: NewDeltaVersion, files: DeltaFiles, sha256: string): Promise<DeltaVersion> {
    let version = (await this.scan(delta.owner, delta.name)).highest + 1;
    for (let attempt = 1; ; attempt++) {
      const record = makeVersion(delta, files, version, sha256);
      // The first object claims the number; the claimant alone writes the rest of v<N>.
      if (await this.objects.create(this.key(delta.owner, delta.name, version, CONFIG_FILE), files.config)) {
        await this.objects.put(this.key(delta.owner, delta.name, version, WEIGHTS_FILE), files.weights);
        await this.objects.put(this.key(delta.owner, delta.name, version, META_FILE), encodeMeta(record));
        return record;
      }
      if (attempt >= 100) throw new Error(`could not allocate a version of ${deltaLabel(delta.owner, delta.name)} after ${attempt} attempts`);
      version = Math.max(version + 1, (await this.scan(delta.owner, delta.name)).highest + 1);
    }
  }

  private get base(): string {
    return this.prefix ? `${this.prefix}/` : '';
  }

  /** Relative to the store's prefix. */
  private key(owner: string, name: string, version: number, file: string): string {
    return `${owner}/${name}/${versionSegment(version)}/${file}`;
  }

  /** `<owner>/<name>/v<N>/<file>` or `<owner>/<name>/deleted/v<N>` (file 'tombstone') → its parts; null for anything else. */
  private parseKey(key: string): { owner: string; name: string; version: number; file: string } | null {
    const parts = key.split('/');
    if (parts.length !== 4) return null;
    const [owner, name, segment, last] = parts as [string, string, string, string];
    if (!isValidName(owner) || !isValidName(name)) return null;
    if (segment === 'deleted') {
      const version = parseVersionSegment(last);
      return version === undefined ? null : { owner, name, version, file: 'tombstone' };
    }
    const version = parseVersionSegment(segment);
    return version === undefined ? null : { owner, name, version, file: last };
  }

  /**
   * Committed versions above the tombstone, ascending, and the highest number ever used (any
   * object of a version, or the tombstone).
   */
  private async scan(owner: string, name: string): Promise<{ committed: number[]; highest: number }> {
    const committed: number[] = [];
    let highest = 0;
    let deleted = 0;
    for (const key of await this.objects.list(`${owner}/${name}/`)) {
      const parsed = this.parseKey(key);
      if (!parsed || parsed.owner !== owner || parsed.name !== name) continue;
      highest = Math.max(highest, parsed.version);
      if (parsed.file === 'tombstone') deleted = Math.max(deleted, parsed.version);
      else if (parsed.file === META_FILE) committed.push(parsed.version);
    }
    return { committed: committed.filter((v) => v > deleted).sort((a, b) => a - b), highest };
  }

  private async readMeta(owner: string, name: string, version: number): Promise<DeltaVersion | null> {
    const key = this.key(owner, name, version, META_FILE);
    const bytes = await this.objects.get(key);
    return bytes ? decodeMeta(bytes, `${this.location}/${key}`, { owner, name, version }) : null;
  }
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
