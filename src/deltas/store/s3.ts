/**
 * Deltas in an S3 bucket (AWS or any S3-compatible server): keys
 * `<prefix>/<owner>/<name>/v<N>/{adapter_config.json, adapter_model.safetensors, meta.json}`.
 *
 * Commit protocol: a put uploads adapter_config.json, then adapter_model.safetensors, then
 * meta.json last. meta.json is the commit marker: a version without it does not exist (get, list
 * and versions ignore it), so a writer killed mid-upload leaves only invisible objects (removed by
 * delete(); they are never read).
 *
 * Version allocation: the next number is one above every `v<N>/` present, committed or not (an
 * unfinished version may be another writer still uploading, so its number is never reused; a
 * killed upload leaves a gap). Each object is written with `If-None-Match: *`, so on a server with
 * conditional writes (AWS S3 since 2024, MinIO, Cloudflare R2, ...) the first upload claims `v<N>`
 * and a concurrent writer from another process or host gets 412 and moves to the next number.
 * Puts of one owner/name are also serialised inside this process, which is all the protection on
 * a server that ignores the header (s3rver does): with such a server, run a single writer replica.
 */
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import {
  CONFIG_FILE,
  DeltaNotFoundError,
  META_FILE,
  WEIGHTS_FILE,
  assertValidDeltaName,
  assertVersionRef,
  decodeMeta,
  deltaLabel,
  digestFiles,
  encodeMeta,
  isValidVersion,
  makeVersion,
  parseVersionSegment,
  verifyFiles,
  versionSegment,
} from './common.js';
import { isValidName } from '../ref.js';
import type { DeltaFiles, DeltaStore, DeltaVersion, NewDeltaVersion } from './types.js';
import { withStoreDeadline } from './unavailable.js';

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
   * Send `If-None-Match: *` on uploads (default true). Turned off automatically when the server
   * answers 501 to it; see the module comment for what that means for several writers.
   */
  conditionalWrites?: boolean;
  /**
   * Deadline of each request, its body included (default 10 s): a server that does not answer
   * in time fails the call with StoreUnavailableError (a 503 to clients) instead of holding it.
   */
  timeoutMs?: number;
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
  private conditionalWrites: boolean;
  private readonly timeoutMs: number;
  /** Tail of the promise chain per owner/name: puts and deletes of one delta run one at a time. */
  private readonly locks = new Map<string, Promise<void>>();

  constructor(url: string, options: S3DeltaStoreOptions = {}) {
    const { bucket, prefix } = parseS3Url(url);
    this.bucket = bucket;
    this.prefix = prefix;
    this.location = prefix ? `s3://${bucket}/${prefix}` : `s3://${bucket}`;
    this.conditionalWrites = options.conditionalWrites ?? true;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_STORE_TIMEOUT_MS;
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
  }

  async put(delta: NewDeltaVersion, files: DeltaFiles): Promise<DeltaVersion> {
    assertValidDeltaName('owner', delta.owner);
    assertValidDeltaName('name', delta.name);
    return this.serialised(delta.owner, delta.name, () => this.putUnlocked(delta, files));
  }

  async get(owner: string, name: string, version?: number): Promise<DeltaVersion | null> {
    assertValidDeltaName('owner', owner);
    assertValidDeltaName('name', name);
    if (version !== undefined) return isValidVersion(version) ? this.readMeta(owner, name, version) : null;
    const { committed } = await this.scan(owner, name);
    for (let i = committed.length - 1; i >= 0; i--) {
      const meta = await this.readMeta(owner, name, committed[i]!);
      if (meta) return meta;
    }
    return null;
  }

  async list(owner?: string): Promise<DeltaVersion[]> {
    if (owner !== undefined) assertValidDeltaName('owner', owner);
    const keys = await this.listKeys(owner === undefined ? this.base : `${this.base}${owner}/`);
    const latest = new Map<string, { owner: string; name: string; version: number }>();
    for (const key of keys) {
      const parsed = this.parseKey(key);
      if (!parsed || parsed.file !== META_FILE) continue;
      const id = `${parsed.owner}/${parsed.name}`;
      const seen = latest.get(id);
      if (!seen || seen.version < parsed.version) latest.set(id, parsed);
    }
    const ids = [...latest.keys()].sort();
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
      this.getObject(this.key(owner, name, version.version, CONFIG_FILE)),
      this.getObject(this.key(owner, name, version.version, WEIGHTS_FILE)),
    ]);
    if (!config || !weights) throw new DeltaNotFoundError(deltaLabel(owner, name, version.version), this.location);
    return verifyFiles(version, { config, weights });
  }

  async delete(owner: string, name: string): Promise<boolean> {
    assertValidDeltaName('owner', owner);
    assertValidDeltaName('name', name);
    return this.serialised(owner, name, async () => {
      const keys = await this.listKeys(this.deltaPrefix(owner, name));
      const markers = keys.filter((key) => key.endsWith(`/${META_FILE}`));
      // Commit markers first, so readers stop seeing versions before their files go.
      await this.deleteKeys(markers);
      await this.deleteKeys(keys.filter((key) => !key.endsWith(`/${META_FILE}`)));
      return markers.length > 0;
    });
  }

  private async putUnlocked(delta: NewDeltaVersion, files: DeltaFiles): Promise<DeltaVersion> {
    const sha256 = digestFiles(files);
    let version = (await this.scan(delta.owner, delta.name)).highest + 1;
    for (let attempt = 1; ; attempt++) {
      const record = makeVersion(delta, files, version, sha256);
      const uploads: Array<[string, Uint8Array, string]> = [
        [CONFIG_FILE, files.config, 'application/json'],
        [WEIGHTS_FILE, files.weights, 'application/octet-stream'],
        [META_FILE, encodeMeta(record), 'application/json'],
      ];
      let taken = false;
      for (const [file, body, contentType] of uploads) {
        if (!(await this.putIfAbsent(this.key(delta.owner, delta.name, version, file), body, contentType))) {
          taken = true;
          break;
        }
      }
      if (!taken) return record;
      if (attempt >= 100) throw new Error(`could not allocate a version of ${deltaLabel(delta.owner, delta.name)} after ${attempt} attempts`);
      version = Math.max(version + 1, (await this.scan(delta.owner, delta.name)).highest + 1);
    }
  }

  /** Uploads one object; false when a conditional write found the key taken (412/409). */
  private async putIfAbsent(key: string, body: Uint8Array, contentType: string): Promise<boolean> {
    const conditional = this.conditionalWrites;
    try {
      await this.send('PutObject', (abortSignal) =>
        this.client.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key: key,
            Body: body,
            ContentType: contentType,
            ...(conditional ? { IfNoneMatch: '*' } : {}),
          }),
          { abortSignal },
        ),
      );
      return true;
    } catch (error) {
      const status = httpStatus(error);
      if (conditional && (status === 412 || status === 409)) return false;
      if (conditional && status === 501) {
        this.conditionalWrites = false;
        return this.putIfAbsent(key, body, contentType);
      }
      throw error;
    }
  }

  private get base(): string {
    return this.prefix ? `${this.prefix}/` : '';
  }

  private deltaPrefix(owner: string, name: string): string {
    return `${this.base}${owner}/${name}/`;
  }

  private key(owner: string, name: string, version: number, file: string): string {
    return `${this.deltaPrefix(owner, name)}${versionSegment(version)}/${file}`;
  }

  /** `<base><owner>/<name>/v<N>/<file>` → its parts, or null for anything else under the prefix. */
  private parseKey(key: string): { owner: string; name: string; version: number; file: string } | null {
    if (!key.startsWith(this.base)) return null;
    const parts = key.slice(this.base.length).split('/');
    if (parts.length !== 4) return null;
    const [owner, name, segment, file] = parts as [string, string, string, string];
    const version = parseVersionSegment(segment);
    if (!isValidName(owner) || !isValidName(name) || version === undefined) return null;
    return { owner, name, version, file };
  }

  /** Committed versions (with meta.json), ascending, and the highest version with any object. */
  private async scan(owner: string, name: string): Promise<{ committed: number[]; highest: number }> {
    const committed: number[] = [];
    let highest = 0;
    for (const key of await this.listKeys(this.deltaPrefix(owner, name))) {
      const parsed = this.parseKey(key);
      if (!parsed || parsed.owner !== owner || parsed.name !== name) continue;
      highest = Math.max(highest, parsed.version);
      if (parsed.file === META_FILE) committed.push(parsed.version);
    }
    return { committed: committed.sort((a, b) => a - b), highest };
  }

  private async readMeta(owner: string, name: string, version: number): Promise<DeltaVersion | null> {
    const key = this.key(owner, name, version, META_FILE);
    const bytes = await this.getObject(key);
    return bytes ? decodeMeta(bytes, `s3://${this.bucket}/${key}`, { owner, name, version }) : null;
  }

  private async getObject(key: string): Promise<Uint8Array | null> {
    try {
      // The deadline covers the body too: a server may stall after the headers.
      return await this.send('GetObject', async (abortSignal) => {
        const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal });
        return response.Body ? await response.Body.transformToByteArray() : new Uint8Array(0);
      });
    } catch (error) {
      if (httpStatus(error) === 404 || (error as { name?: string }).name === 'NoSuchKey') return null;
      throw error;
    }
  }

  private async listKeys(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.send('ListObjectsV2', (abortSignal) =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }), { abortSignal }),
      );
      for (const object of page.Contents ?? []) if (object.Key) keys.push(object.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return keys;
  }

  private async deleteKeys(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      const response = await this.send('DeleteObjects', (abortSignal) =>
        this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }), { abortSignal }),
      );
      const failed = response.Errors ?? [];
      if (failed.length > 0) {
        const first = failed[0]!;
        throw new Error(`${this.location}: could not delete ${failed.length} object(s), e.g. ${first.Key}: ${first.Code} ${first.Message}`);
      }
    }
  }

  /** One S3 request under the deadline; unavailability (refused, reset, 5xx, timeout) becomes StoreUnavailableError. */
  private send<T>(operation: string, request: (abortSignal: AbortSignal) => Promise<T>): Promise<T> {
    return withStoreDeadline('S3', this.timeoutMs, operation, request);
  }

  private async serialised<T>(owner: string, name: string, task: () => Promise<T>): Promise<T> {
    const id = `${owner}/${name}`;
    const previous = this.locks.get(id) ?? Promise.resolve();
    const run = previous.then(task);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.locks.set(id, tail);
    try {
      return await run;
    } finally {
      if (this.locks.get(id) === tail) this.locks.delete(id);
    }
  }
}

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
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
