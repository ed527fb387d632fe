import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Worker } from 'node:worker_threads';
import { openDeltaStore } from '../../src/deltas/store/index.js';
import { DeltaLoaderThread } from '../../src/engine/delta-loader.js';
import { FIXTURE, tempDir } from '../helpers.js';

const LORA_DIR = path.join(FIXTURE, 'lora_all_r8');
const files = () => ({ config: fs.readFileSync(path.join(LORA_DIR, 'adapter_config.json')), weights: fs.readFileSync(path.join(LORA_DIR, 'adapter_model.safetensors')) });

describe('DeltaLoaderThread (filesystem store)', () => {
  const storeDir = tempDir();
  let loader: DeltaLoaderThread;
  before(async () => {
    await openDeltaStore(storeDir).put({ owner: 'acme', name: 'fixture', public: false, kind: 'lora', summary: { rank: 8, modules: 14 }, virtualTokens: 0 }, files());
    loader = new DeltaLoaderThread({ modelDir: path.join(FIXTURE, 'base'), limits: { maxRank: 16, maxVirtualTokens: 64, maxBottleneck: 256 }, store: storeDir });
  });
  after(() => loader.close());

  it('loads a stored version in slot layout, and parses files in hand the same way', async () => {
    const { delta, tier } = await loader.load('acme/fixture@1');
    assert.equal(tier, 'store');
    const parsed = await loader.parse('in-hand', files());
    assert.equal(delta.kind, 'lora');
    assert.deepEqual(delta.summary, { rank: 8, modules: 14 });
    assert.equal(delta.tensors.size, parsed.tensors.size);
    for (const [name, t] of delta.tensors) assert.deepEqual(t, parsed.tensors.get(name), name);
  });

  it('a missing version is delta_not_found', async () => {
    await assert.rejects(loader.load('acme/fixture@2'), (err: Error & { code?: string }) => err.code === 'delta_not_found');
    await assert.rejects(loader.load('not-a-key'), (err: Error & { code?: string }) => err.code === 'delta_not_found');
  });

  it('a thread that dies fails its pending calls and is replaced; later loads work', async () => {
    const pending = loader.load('acme/fixture@1');
    await (loader as unknown as { worker: Worker }).worker.terminate();
    await assert.rejects(pending, /loader thread exited/);
    const { delta } = await loader.load('acme/fixture@1');
    assert.ok(delta.tensors.size > 0);
  });
});
