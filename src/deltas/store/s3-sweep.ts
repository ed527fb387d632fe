/**
 * Leftovers of S3 uploads that never committed. A put writes a version's adapter_config.json
 * first (its claim on the number, see s3.ts), then its weights, then meta.json (the commit
 * marker), so a writer killed mid-upload leaves `v<N>/` objects without a marker: invisible to
 * every reader, but the weights hold storage. Once the newest of them is older than any upload
 * could still be running, the weights go; the config object stays, so that the number stays taken.
 */
import { DeleteObjectsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { CONFIG_FILE, META_FILE, parseVersionSegment } from './common.js';
import type { S3DeltaStore } from './s3.js';

/** The objects of one uncommitted version: its key prefix, keys, and when the newest was written. */
export interface UncommittedVersion {
  prefix: string;
  keys: string[];
  newest: number;
}

/**
 * Every `<owner>/<name>/v<N>/` under the store's prefix that has objects but no meta.json.
 *
 * @example const leftovers = await findUncommittedVersions(store); // [] after clean uploads
 */
export async function findUncommittedVersions(store: S3DeltaStore): Promise<UncommittedVersion[]> {
  const base = store.prefix ? `${store.prefix}/` : '';
  const versions = new Map<string, UncommittedVersion & { committed: boolean }>();
  let token: string | undefined;
  do {
    const page = await store.client.send(new ListObjectsV2Command({ Bucket: store.bucket, Prefix: base, ...(token ? { ContinuationToken: token } : {}) }));
    for (const object of page.Contents ?? []) {
      const parts = object.Key?.slice(base.length).split('/') ?? [];
      if (parts.length !== 4 || parseVersionSegment(parts[2]!) === undefined) continue;
      const prefix = `${base}${parts.slice(0, 3).join('/')}/`;
      const entry = versions.get(prefix) ?? { prefix, keys: [], newest: 0, committed: false };
      entry.keys.push(object.Key!);
      entry.newest = Math.max(entry.newest, object.LastModified?.getTime() ?? 0);
      entry.committed ||= parts[3] === META_FILE;
      versions.set(prefix, entry);
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return [...versions.values()].filter((v) => !v.committed).map(({ committed: _, ...v }) => v);
}

/**
 * The objects of an uncommitted version beyond its claim (the config object): what a killed
 * upload left half-written. A version with only its claim holds a number, and nothing else.
 *
 * @example partialObjects({ prefix: 'd/a/v1/', keys: ['d/a/v1/adapter_config.json'], newest: 0 }); // []
 */
export function partialObjects(version: UncommittedVersion): string[] {
  return version.keys.filter((key) => !key.endsWith(`/${CONFIG_FILE}`));
}

/**
 * Deletes the partial objects of the uncommitted versions whose newest object is older than
 * `olderThanMs`; returns their prefixes. An upload still in progress keeps writing (each object
 * within the store timeout), so an age well above the timeout only ever finds abandoned ones.
 * Each keeps its config object, the claim on its number, so the number is never given again.
 *
 * @example await sweepUncommittedVersions(store, 60 * 60 * 1000); // at startup: leftovers over an hour old
 */
export async function sweepUncommittedVersions(store: S3DeltaStore, olderThanMs: number): Promise<string[]> {
  const cutoff = Date.now() - olderThanMs;
  const abandoned = (await findUncommittedVersions(store)).filter((v) => v.newest <= cutoff && partialObjects(v).length > 0);
  for (const version of abandoned) {
    const Objects = partialObjects(version).map((Key) => ({ Key }));
    await store.client.send(new DeleteObjectsCommand({ Bucket: store.bucket, Delete: { Objects, Quiet: true } }));
  }
  return abandoned.map((v) => v.prefix);
}
