/**
 * kill -9 during an upload: whether the process dies while the body arrives, while the store
 * writes the version, or while S3 receives its objects, no replica ever sees a partial version,
 * a restart leaves no staging behind, and the version number of the lost upload is never reused.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { FilesystemDeltaStore, S3DeltaStore } from '../../src/deltas/store/index.js';
import { findUncommittedVersions, sweepUncommittedVersions } from '../../src/deltas/store/s3-sweep.js';
import { tempDir } from '../helpers.js';
import { assertStoreConsistent } from './consistency.js';
import { BUCKET, call, complete, deltaForm, killAll, S3_CREDENTIALS, S3Process, startReplica, StoreProxy, variantWeights, waitFor, type Replica } from './harness.js';

after(killAll);
const cacheDir = tempDir();

async function kill9(replica: Replica): Promise<void> {
  replica.child.kill('SIGKILL');
  assert.equal((await replica.exited).signal, 'SIGKILL');
}

/** Sends the headers and the first half of an upload's body, then nothing more. */
async function startHalfUpload(url: string, name: string): Promise<http.ClientRequest> {
  const request = new Request(`${url}/v1/deltas`, { method: 'POST', body: deltaForm(name) });
  const body = Buffer.from(await request.arrayBuffer());
  const req = http.request(`${url}/v1/deltas`, { method: 'POST', headers: { 'content-type': request.headers.get('content-type')!, 'content-length': body.length } });
  req.on('error', () => undefined);
  req.write(body.subarray(0, body.length >> 1));
  return req;
}

describe('kill -9 during an upload (filesystem store)', () => {
  const dataDir = tempDir();
  const store = () => new FilesystemDeltaStore(path.join(dataDir, 'deltas'));
  const seen = new Map<string, string>();
  let replica: Replica;

  it('while the body arrives: the spooled parts go at the next start, nothing is stored', async () => {
    const first = await startReplica({ cacheDir, dataDir });
    assert.equal((await call(first.url, 'POST', '/v1/deltas', deltaForm('kept'))).status, 201);
    const upload = await startHalfUpload(first.url, 'lost');
    const spool = path.join(dataDir, 'uploads');
    await waitFor(() => fs.existsSync(spool) && fs.readdirSync(spool).length > 0, 10_000, () => 'the upload was never spooled');
    await kill9(first);
    upload.destroy();
    assert.ok(fs.readdirSync(spool).length > 0, 'the killed process left its spooled parts');

    replica = await startReplica({ cacheDir, dataDir });
    assert.equal((await call(replica.url, 'GET', '/v1/deltas/lost')).status, 404);
    assert.equal((await complete(replica.url, 'kept')).status, 200);
    await assertStoreConsistent({ store: store(), replicas: [replica.url], dataDirs: [dataDir], seen });
  });

  it('while the store writes the version: a whole version or none, and staging is swept at the next start', async () => {
    const staging = path.join(dataDir, 'deltas', '.staging');
    // The kill follows the staging directory's creation by microseconds, so it lands inside the
    // put unless the whole put (two fsynced files, a rename) beat it; then it is tried again.
    for (let attempt = 1; ; attempt++) {
      const watcher = fs.watch(staging);
      const created = new Promise<void>((resolve) => watcher.once('change', () => resolve()));
      const upload = call(replica.url, 'POST', '/v1/deltas', deltaForm(`racing${attempt}`)).catch(() => undefined);
      await created;
      replica.child.kill('SIGKILL');
      watcher.close();
      await replica.exited;
      await upload;
      const midPut = fs.readdirSync(staging).length > 0;
      replica = await startReplica({ cacheDir, dataDir });
      const listed = await call(replica.url, 'GET', `/v1/deltas/racing${attempt}`);
      if (midPut) assert.equal(listed.status, 404, 'a version whose put was cut is not visible');
      else assert.ok(listed.status === 404 || (await complete(replica.url, `racing${attempt}`)).status === 200);
      await assertStoreConsistent({ store: store(), replicas: [replica.url], dataDirs: [dataDir], seen });
      if (midPut) break;
      assert.ok(attempt < 5, 'the kill never landed inside the put in 5 attempts');
    }
    await kill9(replica);
  });
});

describe('kill -9 during an upload to S3, seen from two replicas', () => {
  const s3 = new S3Process();
  const proxy = new StoreProxy(() => s3.port);
  const seen = new Map<string, string>();

  it('the killed replica left a version without its commit marker: invisible to every replica, its weights swept once abandoned, its number never reused', async () => {
    await s3.start();
    const viaProxy = await proxy.listen();
    const storeArgs = ['--store', `s3://${BUCKET}/deltas`];
    const writerData = tempDir();
    const [writer, reader] = await Promise.all([
      startReplica({ cacheDir, dataDir: writerData, args: storeArgs, env: s3.env(viaProxy) }),
      startReplica({ cacheDir, dataDir: tempDir(), args: storeArgs, env: s3.env() }),
    ]);

    // A put writes the config object (the claim on v1), the weights, then meta.json (the commit
    // marker). The marker's PUT starts and stalls in the proxy: all but the commit is stored.
    const stalled = proxy.holdWhen(/^PUT \/faults\/deltas\/default\/partial\/v1\/meta\.json/);
    const upload = call(writer.url, 'POST', '/v1/deltas', deltaForm('partial')).catch(() => undefined);
    await stalled;
    await kill9(writer);
    await upload;

    const store = new S3DeltaStore(`s3://${BUCKET}/deltas`, { endpoint: s3.endpoint, forcePathStyle: true, region: 'us-east-1', credentials: S3_CREDENTIALS });
    const [leftover] = await findUncommittedVersions(store);
    assert.deepEqual(leftover?.keys.sort(), ['deltas/default/partial/v1/adapter_config.json', 'deltas/default/partial/v1/adapter_model.safetensors'], 'the cut upload left its claim and its weights');
    assert.equal((await call(reader.url, 'GET', '/v1/deltas/partial')).status, 404);
    // The writer again, its proxy passing everything now: it reads the store at startup.
    await proxy.close();
    const fresh = await startReplica({ cacheDir, dataDir: writerData, args: storeArgs, env: s3.env() });
    assert.equal((await call(fresh.url, 'GET', '/v1/deltas/partial')).status, 404, 'a replica reading the store at startup does not see it');
    assert.equal((await complete(fresh.url, 'partial')).status, 404);

    const again = await call(reader.url, 'POST', '/v1/deltas', deltaForm('partial'));
    assert.equal(again.status, 201, JSON.stringify(again.json));
    assert.equal(again.json.version, 2, 'the number an unfinished upload took is not reused');
    assert.equal((await complete(reader.url, 'partial')).status, 200);

    // An hour-old leftover would be swept at startup; this one is minutes old, so the test sweeps it.
    assert.deepEqual(await sweepUncommittedVersions(store, 60 * 60 * 1000), [], 'a young leftover is left alone');
    assert.deepEqual(await sweepUncommittedVersions(store, 0), ['deltas/default/partial/v1/']);
    // The weights went; the config object stays, so v1 stays taken (a third upload is v3).
    assert.deepEqual((await findUncommittedVersions(store)).map((v) => v.keys), [['deltas/default/partial/v1/adapter_config.json']]);
    assert.equal((await call(fresh.url, 'POST', '/v1/deltas', deltaForm('partial', variantWeights(1)))).json.version, 3);
    await assertStoreConsistent({ store, replicas: [reader.url, fresh.url], seen });
    store.client.destroy();
    await Promise.all([kill9(reader), kill9(fresh)]);
    await s3.stop();
  });
});
