import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
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
    const disk = new DiskDeltaCache(path.join(tempDir(), 'deltas'), 1 << 20);
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

describe('disk delta cache bound', () => {
  /** A version's files, `bytes` of weights filled with `fill`, and their digest. */
  const version = (fill: number, bytes = 1000) => {
    const files = { config: Buffer.from(`{"fill":${String(fill).padStart(3, '0')}}`), weights: Buffer.alloc(bytes, fill) };
    return { files, sha: createHash('sha256').update(files.config).update(files.weights).digest('hex'), bytes: files.config.length + bytes };
  };
  const ENTRY = version(0).bytes;
  /** Bytes of every entry on disk, as eviction counts them. */
  const entryBytes = (dir: string) =>
    fs.readdirSync(dir).filter((n) => /^[0-9a-f]{64}$/.test(n)).reduce((sum, sha) => sum + fs.readdirSync(path.join(dir, sha)).reduce((s, f) => s + fs.statSync(path.join(dir, sha, f)).size, 0), 0);
  /** Marks an entry as last used `secondsAgo`, so the order of use does not hang on the clock's resolution. */
  const usedAgo = (disk: DiskDeltaCache, sha: string, secondsAgo: number) => {
    const at = new Date(Date.now() - secondsAgo * 1000);
    fs.utimesSync(path.join(disk.dir, sha), at, at);
  };

  it('a new entry evicts the least recently used ones, a read counting as a use, and their keys', async () => {
    const disk = new DiskDeltaCache(path.join(tempDir(), 'deltas'), 3 * ENTRY);
    const [a, b, c, d] = [1, 2, 3, 4].map((fill) => version(fill));
    for (const [i, v] of [a, b, c].entries()) {
      await disk.write(v!.sha, v!.files, `acme/v${i}@1`);
      usedAgo(disk, v!.sha, 300 - i * 100); // a oldest, then b, then c
    }
    assert.equal(entryBytes(disk.dir), 3 * ENTRY, 'at the bound, nothing is evicted');
    assert.ok(await disk.read(a!.sha), 'a hit makes a the most recently used');

    await disk.write(d!.sha, d!.files, 'acme/v3@1');
    assert.equal(await disk.read(b!.sha), undefined, 'b, now the least recently used, was evicted');
    for (const v of [a, c, d]) assert.ok(await disk.read(v!.sha), 'the others stay');
    assert.ok(entryBytes(disk.dir) <= 3 * ENTRY);

    // A version whose files were evicted is a miss through its key, not an error.
    const recorded = await disk.digestOf('acme/v1@1');
    assert.equal(recorded, undefined, "the evicted entry's key file went with it");
    assert.equal(fs.existsSync(path.join(disk.dir, 'keys', 'acme', 'v1@1')), false);
    assert.equal(await disk.digestOf('acme/v0@1'), a!.sha, 'the keys of kept entries stay');
  });

  it('a key file left pointing at an evicted entry leads to a miss', async () => {
    const disk = new DiskDeltaCache(path.join(tempDir(), 'deltas'), ENTRY);
    const [a, b] = [1, 2].map((fill) => version(fill));
    await disk.write(a!.sha, a!.files, 'acme/a@1');
    usedAgo(disk, a!.sha, 100);
    await disk.write(b!.sha, b!.files);
    // Another replica sharing the directory may have recorded the key after this one's eviction scan.
    fs.writeFileSync(path.join(disk.dir, 'keys', 'acme', 'a@1'), a!.sha);
    assert.equal(await disk.digestOf('acme/a@1'), a!.sha);
    assert.equal(await disk.read(a!.sha), undefined);
  });

  it('never evicts the entry just written, even when it alone is larger than the bound', async () => {
    const disk = new DiskDeltaCache(path.join(tempDir(), 'deltas'), 2 * ENTRY);
    const [a, b] = [1, 2].map((fill) => version(fill));
    const big = version(3, 3 * ENTRY);
    await disk.write(a!.sha, a!.files);
    await disk.write(b!.sha, b!.files);
    await disk.write(big.sha, big.files, 'acme/big@1');
    assert.ok(await disk.read(big.sha), 'the new entry is kept');
    assert.equal(await disk.read(a!.sha), undefined);
    assert.equal(await disk.read(b!.sha), undefined);
    assert.equal(entryBytes(disk.dir), big.bytes);

    usedAgo(disk, big.sha, 100);
    const c = version(4);
    await disk.write(c.sha, c.files);
    assert.equal(await disk.read(big.sha), undefined, 'the oversized entry is the first to go once another is written');
    assert.equal(entryBytes(disk.dir), c.bytes);
  });

  it('two instances writing one directory while reads run stay within the bound, and reads only hit or miss', async () => {
    const dir = path.join(tempDir(), 'deltas');
    const bound = 4 * ENTRY;
    const [engineSide, loaderSide] = [new DiskDeltaCache(dir, bound), new DiskDeltaCache(dir, bound)];
    const versions = Array.from({ length: 16 }, (_, i) => version(i + 1));
    let writing = true;
    const reads = (async () => {
      let hits = 0;
      while (writing) {
        for (const v of versions) {
          const files = await engineSide.read(v.sha);
          if (files) {
            assert.deepEqual(Buffer.from(files.weights), v.files.weights);
            hits++;
          }
        }
        await new Promise((resolve) => setImmediate(resolve));
      }
      return hits;
    })();
    await Promise.all(versions.map((v, i) => (i % 2 ? engineSide : loaderSide).write(v.sha, v.files, `acme/v${i}@1`)));
    writing = false;
    await reads;
    assert.ok(entryBytes(dir) <= bound, `${entryBytes(dir)} bytes of entries, over the bound of ${bound}`);
    assert.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith('.tmp-')), [], 'no temporary directory is left');
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
