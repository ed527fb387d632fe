import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parsedBytes, type ParsedDelta } from '../../src/deltas/kind.js';
import { DiskDeltaCache, HostDeltaCache } from '../../src/engine/delta-cache.js';
import { ModelRuntime } from '../../src/engine/model-runtime.js';
import type { DeltaSource } from '../../src/engine/residency.js';
import { Scheduler } from '../../src/engine/scheduler.js';
import { EngineError, greedyRequest, type GenerateEvent, type GenerateRequest } from '../../src/engine/types.js';
import { FIXTURE, readDelta, tempDir } from '../helpers.js';

const fakeDelta = (name: string, floats: number): ParsedDelta => ({
  kind: 'lora',
  name,
  tensors: new Map([['a', new Float32Array(floats / 2)], ['b', new Float32Array(floats / 2)]]),
  virtualTokens: 0,
  summary: {},
  warnings: [],
});

describe('host delta cache', () => {
  it('is bounded in bytes and drops the least recently used delta first', () => {
    const cache = new HostDeltaCache(10_000);
    assert.equal(parsedBytes(fakeDelta('x', 1000)), 4000);
    cache.set('a', fakeDelta('a', 1000));
    cache.set('b', fakeDelta('b', 1000));
    assert.equal(cache.bytes, 8000);
    assert.ok(cache.get('a')); // a is now more recent than b
    cache.set('c', fakeDelta('c', 1000));
    assert.deepEqual(cache.keys().sort(), ['a', 'c']);
    assert.equal(cache.bytes, 8000);
    cache.set('big', fakeDelta('big', 2400)); // 9600 bytes: everything else goes
    assert.deepEqual(cache.keys(), ['big']);
    assert.equal(cache.set('huge', fakeDelta('huge', 4000)), false, 'a delta larger than the bound is not kept');
    assert.deepEqual(cache.keys(), ['big']);
  });

  it('the disk tier returns verified files only', async () => {
    const disk = new DiskDeltaCache(path.join(tempDir(), 'deltas'));
    const files = { config: Buffer.from('{"r":1}'), weights: Buffer.from([1, 2, 3]) };
    const sha = (await import('node:crypto')).createHash('sha256').update(files.config).update(files.weights).digest('hex');
    assert.equal(await disk.read(sha), undefined);
    await disk.write(sha, files);
    assert.deepEqual(Buffer.from((await disk.read(sha))!.weights), files.weights);
    fs.writeFileSync(path.join(disk.dir, sha, 'adapter_model.safetensors'), Buffer.from([1, 2, 4]));
    assert.equal(await disk.read(sha), undefined, 'a corrupted entry is a miss');
    assert.equal(fs.existsSync(path.join(disk.dir, sha)), false, 'and is removed');
  });
});

const request = (id: string, delta: string | null): GenerateRequest => greedyRequest(id, [5, 17, 42, 100 + id.length], delta === null ? [] : [delta], 5);

describe('Scheduler with an asynchronous delta source', () => {
  let rt: ModelRuntime;
  let lora: ParsedDelta;
  before(async () => {
    rt = await ModelRuntime.create({ modelDir: path.join(FIXTURE, 'base'), cacheDir: tempDir(), device: 'cpu', maxRows: 3, maxContext: 64, deltaSlots: 2, maxRank: 8, threads: 1 });
    lora = readDelta(rt, path.join(FIXTURE, 'lora_all_r8'), 'lora');
  });
  after(() => rt.release());

  /** Runs the scheduler the way the worker does: step while there is work, sleep until a load settles. */
  async function run(source: DeltaSource, requests: GenerateRequest[]) {
    const out = new Map<string, { tokens: number[]; finish?: string; error?: string }>(requests.map((r) => [r.id, { tokens: [] }]));
    const emit = (e: GenerateEvent) => {
      const entry = out.get(e.id)!;
      if (e.type === 'token') entry.tokens.push(e.token);
      if (e.type === 'done') entry.finish = e.finishReason;
      if (e.type === 'error') entry.error = e.code;
    };
    let wake: (() => void) | null = null;
    const scheduler = new Scheduler(rt, source, emit, { prefillChunk: 64, maxQueue: 100, wake: () => wake?.() });
    for (const r of requests) scheduler.submit(r);
    for (let i = 0; i < 10_000; i++) {
      if (scheduler.idle) {
        if (!scheduler.loads) break;
        await new Promise<void>((resolve) => (wake = resolve));
        continue;
      }
      await scheduler.step();
    }
    assert.ok(scheduler.idle);
    return out;
  }

  /** A cold source: `lookup` misses until `load` (slow, counted) has put the delta in host memory. */
  function coldSource(stored: Record<string, ParsedDelta>) {
    const host = new Map<string, ParsedDelta>();
    const loads: string[] = [];
    const source: DeltaSource = {
      lookup: (name) => host.get(name),
      has: (name) => host.has(name),
      async load(name) {
        loads.push(name);
        await new Promise((resolve) => setTimeout(resolve, 30));
        const delta = stored[name];
        if (!delta) throw new EngineError('delta_not_found', `no ${name}`);
        host.set(name, delta);
      },
    };
    return { source, loads };
  }

  it('5 concurrent requests for one cold delta load it once and equal a warm run', async () => {
    const requests = Array.from({ length: 5 }, (_, i) => request(`r${i}`, 'lora'));
    const warm = await run({ lookup: (n) => (n === 'lora' ? lora : undefined) }, requests);
    const { source, loads } = coldSource({ lora });
    const cold = await run(source, requests);
    assert.deepEqual(loads, ['lora']);
    for (const r of requests) {
      assert.equal(cold.get(r.id)!.tokens.length, 5);
      assert.deepEqual(cold.get(r.id), warm.get(r.id), r.id);
    }
  });

  it('a failing load ends every request waiting for it with an error; others complete', async () => {
    const { source, loads } = coldSource({ lora });
    const out = await run(source, [request('m1', 'missing'), request('m2', 'missing'), request('b', null), request('m3', 'missing'), request('l', 'lora')]);
    assert.deepEqual(loads.sort(), ['lora', 'missing']);
    for (const id of ['m1', 'm2', 'm3']) assert.deepEqual(out.get(id), { tokens: [], error: 'delta_not_found' }, id);
    assert.equal(out.get('b')!.finish, 'length');
    assert.equal(out.get('l')!.finish, 'length');
  });
});
