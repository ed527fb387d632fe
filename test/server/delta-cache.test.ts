import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { S3Client, CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import { ConfigSchema } from '../../src/config.js';
import { parsedBytes } from '../../src/deltas/kind.js';
import { parseDelta } from '../../src/deltas/parse.js';
import { deltaLimits } from '../../src/engine/model-runtime.js';
import { ModelRuntime } from '../../src/engine/model-runtime.js';
import { encodeSafetensors, parseSafetensors } from '../../src/model/safetensors.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, loadReference, tempDir } from '../helpers.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const ref = loadReference();
const LORA_DIR = path.join(FIXTURE, 'lora_all_r8');
const CONFIG = fs.readFileSync(path.join(LORA_DIR, 'adapter_config.json'));
const WEIGHTS = fs.readFileSync(path.join(LORA_DIR, 'adapter_model.safetensors'));

/** The fixture adapter with every weight multiplied by `factor` (a different delta, same size). */
function scaled(factor: number): Uint8Array {
  const parsed = parseSafetensors(WEIGHTS, 'fixture');
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const [name, entry] of parsed.header.tensors) tensors[name] = { dtype: 'F32', shape: entry.shape, data: parsed.tensor(name).map((v) => v * factor) };
  return encodeSafetensors(tensors);
}

function form(name: string, weights: Uint8Array): FormData {
  const f = new FormData();
  f.set('name', name);
  f.set('adapter_config', new Blob([CONFIG as Uint8Array<ArrayBuffer>]), 'adapter_config.json');
  f.set('adapter_model', new Blob([weights as Uint8Array<ArrayBuffer>]), 'adapter_model.safetensors');
  return f;
}

function client(server: () => RunningServer) {
  return {
    async upload(name: string, weights: Uint8Array) {
      const res = await fetch(`${server().url}/v1/deltas`, { method: 'POST', body: form(name, weights) });
      const json = (await res.json()) as Json;
      assert.equal(res.status, 201, JSON.stringify(json));
      return json;
    },
    async greedy(model: string): Promise<number[]> {
      const res = await fetch(`${server().url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, prompt: ref.input_ids[0], max_tokens: 8, temperature: 0, return_token_ids: true }) });
      const json = (await res.json()) as Json;
      assert.equal(res.status, 200, JSON.stringify(json));
      return json.choices[0].token_ids;
    },
    stats: () => server().ready.then((engine) => engine.stats()),
    admin: async (method: string, pathname: string) => {
      const res = await fetch(`${server().url}/admin/v1/deltas/${pathname}`, { method });
      return { status: res.status, json: (await res.json()) as Json };
    },
  };
}

describe('delta cache tiers (filesystem store, host cache of one delta, 2 slots)', () => {
  let server: RunningServer;
  const api = client(() => server);
  let deltaBytes = 0;
  before(async () => {
    const rt = await ModelRuntime.create({ modelDir: path.join(FIXTURE, 'base'), cacheDir: tempDir(), device: 'cpu', maxRows: 1, maxContext: 16, deltaSlots: 1, maxRank: 8, threads: 1 });
    deltaBytes = parsedBytes(parseDelta('x', { config: CONFIG, weights: WEIGHTS }, rt.arch, deltaLimits({ maxRank: 8 })));
    await rt.release();
    const hostCacheBytes = Math.floor(deltaBytes * 1.5);
    server = await startServer(ConfigSchema.parse({ port: 0, cacheDir: tempDir(), dataDir: tempDir(), model: path.join(FIXTURE, 'base'), modelName: 'tiny-llama', maxContext: 64, threads: 1, maxRank: 8, deltaSlots: 2, hostCacheBytes }));
    await server.ready;
  });
  after(() => server.close());

  const expected = new Map<number, number[]>();

  it('three versions, each warm after upload (host hits, no store loads)', async () => {
    for (const [i, factor] of [1, 2.5, 6].entries()) {
      await api.upload('v', scaled(factor));
      expected.set(i + 1, await api.greedy(`v@${i + 1}`));
    }
    assert.deepEqual(expected.get(1), ref.lora_all_r8.greedy_12[0]!.slice(0, 8));
    assert.equal(new Set([...expected.values()].map((t) => t.join())).size, 3, 'the versions generate different tokens');
    const stats = await api.stats();
    assert.equal(stats.hostHits, 3);
    assert.equal(stats.hostMisses, 0);
    assert.equal(stats.storeLoads, 0);
    assert.equal(stats.hostEntries, 1, 'the host tier holds one delta');
    assert.ok(stats.hostBytes <= deltaBytes * 1.5);
    assert.equal(stats.residentSlots, 2);
  });

  it('after eviction from slots and host memory every version still serves its own numbers, loaded from the store', async () => {
    const before = await api.stats();
    for (const v of [1, 2, 3, 1]) assert.deepEqual(await api.greedy(`v@${v}`), expected.get(v), `v@${v}`);
    const stats = await api.stats();
    assert.equal(stats.hostMisses - before.hostMisses, 4);
    assert.equal(stats.storeLoads - before.storeLoads, 4);
    assert.equal(stats.loads - before.loads, 4);
    assert.equal(stats.diskHits + stats.diskMisses, 0, 'no disk tier for a filesystem store');
    assert.ok(stats.lastLoadMs > 0 && stats.avgLoadMs > 0);
    assert.equal(stats.loadsInFlight, 0);
  });

  it('prefetch loads into host memory and a slot; pins keep a delta resident, at most deltaSlots - 1', async () => {
    const pre = await api.admin('POST', 'v@2/prefetch');
    assert.equal(pre.status, 200, JSON.stringify(pre.json));
    assert.equal(pre.json.host, true);
    assert.equal(typeof pre.json.slot, 'number');
    assert.equal(pre.json.id, 'default/v@2');
    const pin = await api.admin('POST', 'v@2/pin');
    assert.equal(pin.status, 200, JSON.stringify(pin.json));
    assert.equal(pin.json.pinned, true);
    const second = await api.admin('POST', 'default/v@3/pin');
    assert.equal(second.status, 409);
    assert.equal(second.json.error.code, 'pin_limit');
    // v@1 and v@3 share the one unpinned slot; v@2 stays resident throughout.
    for (const v of [1, 3, 1]) assert.deepEqual(await api.greedy(`v@${v}`), expected.get(v));
    const before = await api.stats();
    assert.deepEqual(await api.greedy('v@2'), expected.get(2));
    const stats = await api.stats();
    assert.equal(stats.hostMisses, before.hostMisses, 'a pinned delta needs no load');
    assert.equal(stats.hostHits, before.hostHits);
    assert.equal(stats.pinnedDeltas, 1);
    const unpin = await api.admin('DELETE', 'v@2/pin');
    assert.equal(unpin.status, 200);
    assert.equal(unpin.json.pinned, false);
    assert.equal((await api.admin('POST', 'v/pin')).status, 200, 'the latest version may be pinned now');
    assert.equal((await api.admin('POST', 'nope/prefetch')).status, 404);
    assert.equal((await api.admin('POST', 'v@9/prefetch')).status, 404);
  });
});

describe('delta cache tiers (S3 store via s3rver): a restart serves through the disk tier', () => {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const directory = tempDir('deltaserve-s3rver-');
  const s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory });
  const cacheDir = tempDir();
  let server: RunningServer;
  const api = client(() => server);
  let config: ReturnType<typeof ConfigSchema.parse>;
  let admin: S3Client;
  /** The disk tier's entries (one directory per SHA-256). */
  const cachedEntries = () => fs.readdirSync(path.join(cacheDir, 'deltas')).filter((f) => /^[0-9a-f]{64}$/.test(f));
  const restart = async () => {
    await server?.close();
    server = await startServer(config);
    await server.ready;
  };

  before(async () => {
    const { port } = await s3.run();
    Object.assign(process.env, { AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${port}`, AWS_S3_FORCE_PATH_STYLE: 'true', AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' });
    admin = new S3Client({ endpoint: `http://127.0.0.1:${port}`, forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
    await admin.send(new CreateBucketCommand({ Bucket: 'tiers' }));
    config = ConfigSchema.parse({ port: 0, cacheDir, dataDir: tempDir(), store: 's3://tiers/prefix', model: path.join(FIXTURE, 'base'), modelName: 'tiny-llama', maxContext: 64, threads: 1, maxRank: 8 });
    await restart();
  });
  after(async () => {
    admin.destroy();
    await server.close();
    await s3.close();
    fs.rmSync(directory, { recursive: true, force: true });
  });

  it('upload (kept on disk too), restart (disk hit); without the disk entry, a restart loads from the store and caches it again', async () => {
    await api.upload('s3delta', WEIGHTS);
    const want = ref.lora_all_r8.greedy_12[0]!.slice(0, 8);
    assert.deepEqual(await api.greedy('s3delta'), want);
    assert.equal(cachedEntries().length, 1, 'the upload is in the disk tier');
    await restart();
    assert.deepEqual(await api.greedy('s3delta'), want);
    let stats = await api.stats();
    assert.deepEqual([stats.hostMisses, stats.diskMisses, stats.diskHits, stats.storeLoads], [1, 0, 1, 0]);
    fs.rmSync(path.join(cacheDir, 'deltas', cachedEntries()[0]!), { recursive: true });
    await restart();
    assert.deepEqual(await api.greedy('s3delta'), want);
    stats = await api.stats();
    assert.deepEqual([stats.hostMisses, stats.diskMisses, stats.diskHits, stats.storeLoads], [1, 1, 0, 1]);
    assert.equal(cachedEntries().length, 1);
  });

  it('a disk-tier entry that no longer matches its digest is dropped, and the delta comes from the store again', async () => {
    const [entry] = cachedEntries();
    const weightsFile = path.join(cacheDir, 'deltas', entry!, 'adapter_model.safetensors');
    const bytes = fs.readFileSync(weightsFile);
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff;
    fs.writeFileSync(weightsFile, bytes);
    await restart();
    assert.deepEqual(await api.greedy('s3delta'), ref.lora_all_r8.greedy_12[0]!.slice(0, 8));
    const stats = await api.stats();
    assert.deepEqual([stats.diskHits, stats.diskMisses, stats.storeLoads], [0, 1, 1]);
    assert.deepEqual(fs.readFileSync(weightsFile), Buffer.from(WEIGHTS), 'the entry is written again from the store');
  });

  it('deleting a delta removes its files from the disk cache too', async () => {
    assert.equal(cachedEntries().length, 1);
    const res = await fetch(`${server.url}/v1/deltas/s3delta`, { method: 'DELETE' });
    assert.equal(res.status, 200);
    assert.deepEqual(cachedEntries(), []);
  });

  it('a stored object that no longer matches its digest fails its requests with a clear error; the server keeps serving', async () => {
    const { version } = await api.upload('tampered', WEIGHTS);
    const changed = new Uint8Array(WEIGHTS);
    changed[changed.length - 1] = changed[changed.length - 1]! ^ 0xff;
    await admin.send(new PutObjectCommand({ Bucket: 'tiers', Key: `prefix/default/tampered/v${version}/adapter_model.safetensors`, Body: changed }));
    // The upload's own copy in the disk tier still matches the digest; without it the store is read.
    for (const entry of cachedEntries()) fs.rmSync(path.join(cacheDir, 'deltas', entry), { recursive: true });
    await restart();
    const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'tampered', prompt: ref.input_ids[0], max_tokens: 4 }) });
    const json = (await res.json()) as Json;
    assert.equal(res.status, 500, JSON.stringify(json));
    assert.match(json.error.message, /SHA-256/);
    assert.equal((await api.stats()).loadFailures, 1);
    assert.deepEqual(await api.greedy('tiny-llama'), ref.base.greedy_12[0]!.slice(0, 8));
  });
});
