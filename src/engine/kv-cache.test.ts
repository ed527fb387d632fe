import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KvCache } from './kv-cache.js';

/** Key/value vectors [rows=count, seq, kvHeads*headDim] whose entries encode (row, position, head, d). */
function tokens(rows: number[], positions: number[], kvHeads: number, headDim: number, sign = 1): Float32Array {
  const out = new Float32Array(rows.length * positions.length * kvHeads * headDim);
  rows.forEach((row, r) => positions.forEach((p, s) => {
    for (let h = 0; h < kvHeads; h++) for (let d = 0; d < headDim; d++) out[((r * positions.length + s) * kvHeads + h) * headDim + d] = sign * (row * 1000 + p * 10 + h + d / 100);
  }));
  return out;
}

function read(cache: KvCache, row: number, position: number, head: number): number[] {
  const view = cache.view(0, row, 1);
  const [, , capacity, headDim] = view.dims as [number, number, number, number];
  const at = (head * capacity + position) * headDim;
  return [...view.key.subarray(at, at + headDim)];
}

test('the cache grows geometrically and shrinks, keeping every row, head and position', () => {
  const cache = new KvCache({ layers: 1, rows: 3, kvHeads: 2, maxLength: 512, headDim: 4, initialCapacity: 8 });
  const write = (row: number, from: number, count: number) => {
    const positions = Array.from({ length: count }, (_, i) => from + i);
    cache.reserve(from + count);
    cache.append(0, row, [from], [count], count, tokens([row], positions, 2, 4), tokens([row], positions, 2, 4, -1));
  };
  write(0, 0, 5);
  write(1, 0, 3);
  assert.equal(cache.capacity, 8);
  write(0, 5, 20); // row 0 now 25 long
  assert.equal(cache.capacity, 32);
  assert.deepEqual(cache.view(0, 0, 3).dims, [3, 2, 32, 4]);
  cache.reserve(33);
  assert.equal(cache.capacity, 64, 'a quarter more than 32, at least 33, in multiples of 32');
  assert.deepEqual(read(cache, 0, 24, 1), [241, 241.01, 241.02, 241.03].map(Math.fround));
  assert.deepEqual(read(cache, 1, 2, 0), [1020, 1020.01, 1020.02, 1020.03].map(Math.fround));
  cache.moveRow(1, 2, 3);
  assert.deepEqual(read(cache, 2, 2, 1), read(cache, 1, 2, 1));
  cache.fit(25); // still needed: no shrink
  assert.equal(cache.capacity, 64);
  cache.fit(3); // only short rows left: shrink (capacities stay multiples of 32)
  assert.equal(cache.capacity, 32);
  assert.deepEqual(read(cache, 1, 2, 1), [1021, 1021.01, 1021.02, 1021.03].map(Math.fround));
  assert.throws(() => cache.reserve(513), /at most 512/);
});
