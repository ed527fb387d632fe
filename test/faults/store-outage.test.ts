/**
 * The S3 endpoint stopped, then slow, under a serving replica; then down while a replica starts.
 * Deltas already at hand keep serving (resident, host-cached, and on the disk tier with their
 * digest); one that must come from the store is a 503 with Retry-After that names the store's
 * kind but not its address, after at most the store timeout; everything recovers, without a
 * restart, when the store does.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { S3DeltaStore } from '../../src/deltas/store/index.js';
import { tempDir } from '../helpers.js';
import { assertStoreConsistent } from './consistency.js';
import { BUCKET, call, complete, deltaForm, killAll, S3_CREDENTIALS, S3Process, startReplica, StoreProxy, variantWeights, waitFor, type Replica } from './harness.js';

after(killAll);

describe('the S3 store stopped, slow, and down at startup', () => {
  const s3 = new S3Process();
  const proxy = new StoreProxy(() => s3.port);
  const cacheDir = tempDir();
  const dataDir = tempDir();
  // --catalog-ttl-ms 0: every request asks the store about its delta, so serving through the
  // outage cannot lean on a catalog entry that happens to be fresh.
  const storeArgs = ['--store', `s3://${BUCKET}/deltas`, '--store-timeout-ms', '1000', '--delta-slots', '2', '--max-rank', '8', '--host-cache-bytes', '160000', '--catalog-ttl-ms', '0'];
  const seen = new Map<string, string>();
  let replica: Replica;
  let proxyUrl: string;
  after(() => proxy.close());

  /** The 503 a store outage must be: Retry-After, the store's kind, no address of it. */
  const assertUnavailable = (res: Awaited<ReturnType<typeof call>>, what: string) => {
    assert.equal(res.status, 503, `${what}: ${JSON.stringify(res.json)}`);
    assert.ok(Number(res.headers.get('retry-after')) > 0, `${what}: Retry-After`);
    assert.equal(res.json.error.code, 'store_unavailable', what);
    assert.match(res.json.error.message, /delta store \(S3\)/, what);
    assert.doesNotMatch(res.json.error.message, new RegExp(`127\\.0\\.0\\.1|${s3.port}|${new URL(proxyUrl).port}|localhost`), `${what}: the message names no address`);
  };
  const digestOf = async (name: string) => (await call(replica.url, 'GET', `/v1/deltas/${name}`)).json.sha256 as string;
  /** Every case ends here: the store directly (not through the proxy) against what the replica lists. */
  const assertConsistent = async () => {
    const store = new S3DeltaStore(`s3://${BUCKET}/deltas`, { endpoint: s3.endpoint, forcePathStyle: true, region: 'us-east-1', credentials: S3_CREDENTIALS });
    try {
      return await assertStoreConsistent({ store, replicas: [replica.url], dataDirs: [dataDir], seen });
    } finally {
      store.client.destroy();
    }
  };

  it('stopped: resident, host-cached and disk-tier deltas serve; an uncached one is a 503; all recovers when S3 returns', async () => {
    await s3.start();
    proxyUrl = await proxy.listen();
    replica = await startReplica({ cacheDir, dataDir, args: storeArgs, env: s3.env(proxyUrl) });
    // Uploads go to the store, the disk tier and host memory (which holds two of these deltas: the
    // last two, 'host' and 'resident'). Each has its own weights: the disk tier is keyed by digest,
    // and equal bytes would share an entry.
    for (const [i, name] of ['cold', 'disk', 'host', 'resident'].entries()) assert.equal((await call(replica.url, 'POST', '/v1/deltas', deltaForm(name, variantWeights(i + 1)))).status, 201);
    // 'host' is then in host memory only, 'disk' on the disk tier only, 'cold' in the store only.
    for (const name of ['cold', 'host']) fs.rmSync(path.join(cacheDir, 'deltas', await digestOf(name)), { recursive: true });
    assert.equal((await call(replica.url, 'POST', '/admin/v1/deltas/resident/pin')).status, 200);

    await s3.stop();
    for (const name of ['resident', 'host', 'disk']) assert.equal((await complete(replica.url, name)).status, 200, `${name} serves while S3 is down`);
    const cold = await complete(replica.url, 'cold');
    assertUnavailable(cold, 'an uncached delta');
    assertUnavailable(await call(replica.url, 'POST', '/v1/deltas', deltaForm('during-outage', variantWeights(5))), 'an upload');
    assertUnavailable(await call(replica.url, 'GET', '/v1/deltas/resident'), 'a description (read from the store)');
    assert.equal((await call(replica.url, 'GET', '/health/ready')).status, 200, 'still serving what it holds');
    const logged = replica.logs().find((l) => l.path === '/v1/deltas' && l.status === 503);
    assert.match(String(logged?.error), /ECONNREFUSED|connect|socket/i, 'the log line keeps the cause for operators');

    await s3.start();
    assert.equal((await complete(replica.url, 'cold')).status, 200, 'recovered without a restart');
    assert.equal((await call(replica.url, 'POST', '/v1/deltas', deltaForm('after-outage', variantWeights(6)))).status, 201);
    assert.equal((await call(replica.url, 'GET', '/v1/deltas/during-outage')).status, 404, 'the refused upload left nothing');
    assert.equal(await assertConsistent(), 5);
  });

  it('slow: a load that must reach the store fails at the store timeout with a 503, and recovers when it speeds up', async (t) => {
    // 'cold' leaves every tier: its disk entry goes, and loading 'disk' then 'host' takes its slot and host places.
    fs.rmSync(path.join(cacheDir, 'deltas', await digestOf('cold')), { recursive: true });
    for (const name of ['disk', 'host']) assert.equal((await complete(replica.url, name)).status, 200);
    proxy.delayMs = 5000;
    const cold = await complete(replica.url, 'cold');
    assertUnavailable(cold, 'a load through a slow store');
    assert.match(cold.json.error.message, /no answer within 1000 ms/);
    // The store timeout is 1 s; before it existed this request waited for the stalled socket.
    assert.ok(cold.ms < 10_000, `answered after ${Math.round(cold.ms)} ms`);
    t.diagnostic(`a load through a store 5 s slow per chunk: 503 after ${Math.round(cold.ms)} ms (--store-timeout-ms 1000)`);
    assertUnavailable(await call(replica.url, 'GET', '/v1/deltas/resident'), 'a description through a slow store');
    proxy.delayMs = 0;
    assert.equal((await complete(replica.url, 'cold')).status, 200);
    assert.equal(await assertConsistent(), 5);
  });

  it('down at startup: the replica stays up and not ready, then becomes ready when the store answers', async () => {
    replica.child.kill('SIGKILL');
    await replica.exited;
    await s3.stop();
    replica = await startReplica({ cacheDir, dataDir, args: storeArgs, env: s3.env(), waitReady: false });
    await waitFor(() => replica.logs().filter((l) => String(l.msg).startsWith('waiting for the delta store')).length >= 2, 30_000, () => `no retries:\n${replica.output()}`);
    const ready = await call(replica.url, 'GET', '/health/ready');
    assert.equal(ready.status, 503);
    assert.match(ready.json.error.message, /waiting for the delta store: the delta store \(S3\) is unavailable/);
    assert.equal(replica.child.exitCode, null, 'it did not exit');
    await s3.start();
    await waitFor(async () => (await call(replica.url, 'GET', '/health/ready')).status === 200, 30_000, () => `never ready:\n${replica.output()}`);
    assert.equal((await complete(replica.url, 'cold')).status, 200);

    assert.equal(await assertConsistent(), 5);
    replica.child.kill('SIGKILL');
    await s3.stop();
  });
});
