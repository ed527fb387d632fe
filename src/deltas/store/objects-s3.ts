import crypto from 'node:crypto';
import { DeleteObjectsCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { StoreUnavailableError, withStoreDeadline } from './unavailable.js';
import { assertKey, assertPrefix, type ObjectStore } from './objects.js';

/** Something that lets exactly one replica claim a key: a PostgreSQL table with the key as primary key (see postgres.ts). */
export interface Claims {
  readonly location: string;
  /** True when this call claimed `key`; false when any caller (any replica) had claimed it before. */
  claim(key: string): Promise<boolean>;
  /** Frees claims of deleted objects, so that they may be created again. */
  release(keys: readonly string[]): Promise<void>;
  close(): Promise<void>;
}

/**
 * How an S3 store makes `create` atomic, decided once per store:
 * - `claims`: a claims table (--control-db) arbitrates, then the object is written;
 * - `conditional`: `PutObject` with `If-None-Match: *` (AWS S3, MinIO, Cloudflare R2, ...), when
 *   a probe saw the server refuse the second of two conditional writes of one key;
 * - `local`: neither: creates are serialised inside this process only, so only one replica may
 *   write (s3rver ignores the header and overwrites: the probe catches that).
 */
export type ArbitrationMode = 'claims' | 'conditional' | 'local';

/** State shared by every scope of one S3 store: the arbitration mode and the in-process locks. */
export class S3Arbitration {
  private decided: Promise<ArbitrationMode> | undefined;
  readonly locks = new Map<string, Promise<void>>();

  /**
   * `probeBase`: the store's own key prefix ('' or ending in '/'), where the probe may write;
   * `conditional`: whether the server honours conditional writes, when known (no probe then).
   */
  constructor(
    readonly claims: Claims | undefined,
    private readonly probeBase: string,
    private readonly onLocal: (message: string) => void = (message) => console.warn(message),
    conditional?: boolean,
  ) {
    if (claims) this.decided = Promise.resolve('claims');
    else if (conditional !== undefined) this.decided = Promise.resolve(conditional ? 'conditional' : 'local');
  }

  /** The mode, probing the server the first time it is needed. */
  mode(client: S3Client, bucket: string): Promise<ArbitrationMode> {
    const base = this.probeBase;
    this.decided ??= probeConditionalWrites(client, bucket, base).then((honoured) => {
      if (honoured) return 'conditional';
      this.onLocal(`s3://${bucket}/${base}: the server does not honour If-None-Match on PutObject, so creates are atomic only inside this process; run one replica, or give --control-db postgres://… so that several can share the store`);
      return 'local';
    });
    return this.decided;
  }
}

/**
 * Writes a probe key twice with `If-None-Match: *`: a server that honours it refuses the second
 * (412); one that ignores it (s3rver) overwrites. 501 on the first means no support either.
 */
export async function probeConditionalWrites(client: S3Client, bucket: string, base: string): Promise<boolean> {
  const Key = `${base}.probe/${crypto.randomBytes(8).toString('hex')}`;
  const put = () => client.send(new PutObjectCommand({ Bucket: bucket, Key, Body: new Uint8Array(0), IfNoneMatch: '*' }));
  try {
    try {
      await put();
    } catch (error) {
      if (httpStatus(error) === 501) return false;
      throw error;
    }
    try {
      await put();
      return false;
    } catch (error) {
      const status = httpStatus(error);
      if (status === 412 || status === 409) return true;
      if (status === 501) return false;
      throw error;
    }
  } finally {
    await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: [{ Key }], Quiet: true } })).catch(() => undefined);
  }
}

/**
 * Records under an S3 prefix; see ObjectStore and ArbitrationMode.
 *
 * @example const objects = new S3Objects(client, 'bucket', 'deltas/.training/', arbitration);
 */
export class S3Objects implements ObjectStore {
  readonly location: string;

  /** `base` is '' or ends in '/'. */
  constructor(
    readonly client: S3Client,
    readonly bucket: string,
    readonly base: string,
    readonly arbitration: S3Arbitration,
    /** Deadline of each request, its body included (--store-timeout-ms). */
    readonly timeoutMs = 10_000,
  ) {
    this.location = `s3://${bucket}/${base.replace(/\/$/, "")}`;
  }

  async get(key: string): Promise<Uint8Array | null> {
    assertKey(key);
    for (let attempt = 1; ; attempt++) {
      try {
        // The deadline covers the body too: a server may stall after the headers.
        return await this.send('GetObject', async (abortSignal) => {
          const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.base + key }), { abortSignal });
          return response.Body ? await response.Body.transformToByteArray() : new Uint8Array(0);
        });
      } catch (error) {
        if (httpStatus(error) === 404 || (error as { name?: string }).name === 'NoSuchKey') return null;
        // A body cut off mid-read (a reset connection; s3rver also cuts the body of an object
        // being replaced, which it writes in place) is read again: a GET changes nothing.
        if (attempt >= 4 || !isCutOff(error)) throw error;
        await new Promise((resolve) => setTimeout(resolve, 25 * attempt));
      }
    }
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    assertKey(key);
    await this.putObject(this.base + key, bytes);
  }

  async create(key: string, bytes: Uint8Array): Promise<boolean> {
    assertKey(key);
    const mode = await this.arbitration.mode(this.client, this.bucket);
    const Key = this.base + key;
    if (mode === 'claims') {
      if (!(await this.arbitration.claims!.claim(`s3://${this.bucket}/${Key}`))) return false;
      await this.putObject(Key, bytes);
      return true;
    }
    if (mode === 'conditional') {
      try {
        await this.putObject(Key, bytes, { IfNoneMatch: '*' });
        return true;
      } catch (error) {
        const status = httpStatus(error);
        if (status === 412 || status === 409) return false;
        throw error;
      }
    }
    return this.serialised(Key, async () => {
      if ((await this.get(key)) !== null) return false;
      await this.putObject(Key, bytes);
      return true;
    });
  }

  async list(prefix: string, options: { after?: string } = {}): Promise<string[]> {
    assertPrefix(prefix);
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const command = new ListObjectsV2Command({
        Bucket: this.bucket,
        Prefix: this.base + prefix,
        ...(options.after !== undefined && !token ? { StartAfter: this.base + options.after } : {}),
        ...(token ? { ContinuationToken: token } : {}),
      });
      const page = await this.send('ListObjectsV2', (abortSignal) => this.client.send(command, { abortSignal }));
      for (const object of page.Contents ?? []) if (object.Key) keys.push(object.Key.slice(this.base.length));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return keys.sort();
  }

  async delete(keys: readonly string[]): Promise<void> {
    keys.forEach(assertKey);
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000).map((key) => ({ Key: this.base + key }));
      const command = new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch, Quiet: true } });
      const response = await this.send('DeleteObjects', (abortSignal) => this.client.send(command, { abortSignal }));
      const failed = response.Errors ?? [];
      if (failed.length > 0) throw new Error(`${this.location}: could not delete ${failed.length} object(s), e.g. ${failed[0]!.Key}: ${failed[0]!.Code} ${failed[0]!.Message}`);
      // After the objects: a claim freed first could let another replica create a key that this delete then removes.
      await this.arbitration.claims?.release(batch.map((o) => `s3://${this.bucket}/${o.Key}`));
    }
  }

  scope(prefix: string): ObjectStore {
    assertKey(prefix);
    return new S3Objects(this.client, this.bucket, `${this.base}${prefix}/`, this.arbitration, this.timeoutMs);
  }

  private putObject(Key: string, Body: Uint8Array, condition: { IfNoneMatch?: string } = {}): Promise<unknown> {
    const command = new PutObjectCommand({ Bucket: this.bucket, Key, Body, ...condition });
    return this.send('PutObject', (abortSignal) => this.client.send(command, { abortSignal }));
  }

  /** One S3 request under the deadline; unavailability (refused, reset, 5xx, timeout) becomes StoreUnavailableError. */
  private send<T>(operation: string, request: (abortSignal: AbortSignal) => Promise<T>): Promise<T> {
    return withStoreDeadline('S3', this.timeoutMs, operation, request);
  }

  private async serialised<T>(id: string, task: () => Promise<T>): Promise<T> {
    const locks = this.arbitration.locks;
    const previous = locks.get(id) ?? Promise.resolve();
    const run = previous.then(task);
    const tail = run.then(() => undefined, () => undefined);
    locks.set(id, tail);
    try {
      return await run;
    } finally {
      if (locks.get(id) === tail) locks.delete(id);
    }
  }
}

function isCutOff(error: unknown): boolean {
  // A reset is classified as the store being unavailable; the socket's error is its cause.
  if (error instanceof StoreUnavailableError) return error.detail !== '' && isCutOff(error.cause);
  const { code, message } = (error ?? {}) as { code?: string; message?: string };
  return code === 'ECONNRESET' || code === 'EPIPE' || message === 'aborted';
}

export function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
}
