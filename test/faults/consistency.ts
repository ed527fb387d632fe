/**
 * The check every fault case ends with: the store is consistent. Every stored version (and every
 * delta a replica lists) has its files, matching their recorded SHA-256; nothing is left in
 * staging (the filesystem store's `.staging/`, objects of an uncommitted `v<N>/` in S3 beyond the
 * config object that claims its number, spooled upload parts); and no version number ever named
 * two different contents (`seen` remembers them across checks of one test).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { findUncommittedVersions, partialObjects } from '../../src/deltas/store/s3-sweep.js';
import { FilesystemDeltaStore, S3DeltaStore, type DeltaStore } from '../../src/deltas/store/index.js';
import { call, type Json } from './harness.js';

export interface ConsistencyOptions {
  store: DeltaStore;
  /** Replicas whose delta lists must agree with the store (every entry stored, with its files). */
  replicas?: string[];
  /** Data directories whose upload spool must be empty. */
  dataDirs?: string[];
  /** `owner/name@version` → SHA-256 of every version seen so far in this test. */
  seen: Map<string, string>;
}

/**
 * Asserts the store is consistent (see the module comment); returns how many versions it holds.
 *
 * @example await assertStoreConsistent({ store, replicas: [a.url, b.url], dataDirs: [dataA], seen });
 */
export async function assertStoreConsistent(o: ConsistencyOptions): Promise<number> {
  let versions = 0;
  for (const latest of await o.store.list()) {
    const all = await o.store.versions(latest.owner, latest.name);
    for (const version of all) {
      const key = `${version.owner}/${version.name}@${version.version}`;
      // read() verifies both files against the recorded digest and size, or throws.
      await o.store.read(version);
      const before = o.seen.get(key);
      assert.ok(before === undefined || before === version.sha256, `version number reused: ${key} held ${before}, now ${version.sha256}`);
      o.seen.set(key, version.sha256);
      versions++;
    }
  }
  for (const url of o.replicas ?? []) {
    const listed = (await call(url, 'GET', '/v1/deltas')).json as Json;
    for (const entry of listed.data as Json[]) {
      const stored = await o.store.get(entry.owner, entry.name, entry.latest_version);
      assert.ok(stored, `${url} lists ${entry.owner}/${entry.name}@${entry.latest_version}, which the store does not hold`);
      await o.store.read(stored);
    }
  }
  if (o.store instanceof FilesystemDeltaStore) {
    const staging = path.join(o.store.root, '.staging');
    assert.deepEqual(fs.existsSync(staging) ? fs.readdirSync(staging) : [], [], 'staging leftovers in the filesystem store');
  }
  if (o.store instanceof S3DeltaStore) {
    // An uncommitted version may keep its config object: the claim on its number (s3-sweep.ts).
    assert.deepEqual((await findUncommittedVersions(o.store)).flatMap(partialObjects), [], 'partial versions in S3 (objects of an uncommitted version beyond its claim)');
  }
  for (const dir of o.dataDirs ?? []) {
    const spool = path.join(dir, 'uploads');
    assert.deepEqual(fs.existsSync(spool) ? fs.readdirSync(spool) : [], [], `spooled upload parts left in ${spool}`);
  }
  return versions;
}
