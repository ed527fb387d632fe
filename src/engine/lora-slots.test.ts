import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mulberry32 } from '../model/random.js';
import { loraGrouping, LoraSlotStacks, slotRange } from './lora-slots.js';

const random = mulberry32(7);
const fill = (n: number) => Float32Array.from({ length: n }, () => random() - 0.5);

/** The spec, token by token: y[t] = scale * (x[t] @ lora_A^T) @ lora_B^T for the delta in token t's slot. */
function reference(x: Float32Array[], slots: number[], deltas: Map<number, { a: Float32Array; b: Float32Array; rank: number; scale: number }>, inF: number, outF: number): Float32Array[] {
  return x.map((row, t) => {
    const y = new Float32Array(outF);
    const d = deltas.get(slots[t]!);
    if (!d) return y;
    for (let r = 0; r < d.rank; r++) {
      let h = 0;
      for (let i = 0; i < inF; i++) h += row[i]! * d.a[r * inF + i]!;
      for (let o = 0; o < outF; o++) y[o]! += d.scale * h * d.b[o * d.rank + r]!;
    }
    return y;
  });
}

/** What the graph computes from the stacks and the grouping: gather, per-slot A then B, scatter. */
function gathered(x: Float32Array[], slots: number[], stacks: LoraSlotStacks, module: string, inF: number, outF: number): Float32Array[] {
  const { lo, hi } = slotRange(slots);
  const { gather, cells, scatter } = loraGrouping(slots, lo, hi);
  const { a, b } = stacks.range(module, lo, hi);
  const R = stacks.maxRank;
  const out: Float32Array[] = [];
  for (let s = 0; s < hi - lo; s++) {
    for (let j = 0; j < cells; j++) {
      const row = x[gather[s * cells + j]!]!;
      const h = new Float64Array(R);
      for (let r = 0; r < R; r++) for (let i = 0; i < inF; i++) h[r]! += row[i]! * a[(s * inF + i) * R + r]!;
      const y = new Float32Array(outF);
      for (let o = 0; o < outF; o++) for (let r = 0; r < R; r++) y[o]! += h[r]! * b[(s * R + r) * outF + o]!;
      out.push(y);
    }
  }
  out.push(new Float32Array(outF)); // the zero row
  return scatter.map((cell) => out[cell]!);
}

describe('LoRA slot stacks and token grouping', () => {
  it('groups tokens by slot as documented', () => {
    assert.deepEqual(loraGrouping([2, -1, 2, 3], 2, 4), { gather: [0, 2, 3, 0], cells: 2, scatter: [0, 4, 1, 2] });
    assert.deepEqual(loraGrouping([-1, -1], 0, 0), { gather: [], cells: 0, scatter: [0, 0] });
    assert.deepEqual(slotRange([-1, 5, 3, -1]), { lo: 3, hi: 6 });
    assert.deepEqual(slotRange([-1]), { lo: 0, hi: 0 });
  });

  it('gathered per-slot products equal the per-token spec, with ranks padded and a slot left unused', () => {
    const inF = 6, outF = 5, maxRank = 4;
    const stacks = new LoraSlotStacks([{ modulePath: 'm', inFeatures: inF, outFeatures: outF }], 4, maxRank);
    const deltas = new Map([
      [0, { a: fill(2 * inF), b: fill(outF * 2), rank: 2, scale: 2 }],
      [1, { a: fill(4 * inF), b: fill(outF * 4), rank: 4, scale: 0.5 }],
      [3, { a: fill(3 * inF), b: fill(outF * 3), rank: 3, scale: 1 / Math.sqrt(3) }],
    ]);
    for (const [slot, d] of deltas) stacks.write(slot, new Map([['m', d]]));
    const slots = [1, -1, 3, 1, 0, 3, -1, 1];
    const x = slots.map(() => fill(inF));
    const want = reference(x, slots, deltas, inF, outF);
    const got = gathered(x, slots, stacks, 'm', inF, outF);
    got.forEach((row, t) => row.forEach((v, o) => assert.ok(Math.abs(v - want[t]![o]!) < 1e-5, `token ${t} out ${o}: ${v} vs ${want[t]![o]}`)));
  });

  it('a delta prepared in slot layout writes the same slot contents as the PEFT layout', () => {
    const shapes = [{ modulePath: 'm', inFeatures: 5, outFeatures: 3 }, { modulePath: 'n', inFeatures: 4, outFeatures: 6 }];
    const direct = new LoraSlotStacks(shapes, 2, 4);
    const prepared = new LoraSlotStacks(shapes, 2, 4);
    const delta = new Map([['m', { a: fill(3 * 5), b: fill(3 * 3), rank: 3, scale: 0.7 }]]);
    prepared.write(1, new Map([['n', { a: fill(4), b: fill(6), rank: 1, scale: 1 }]])); // stale contents to overwrite
    direct.write(1, delta);
    prepared.write(1, prepared.toSlotLayout(delta));
    for (const m of ['m', 'n']) {
      assert.deepEqual(prepared.range(m, 1, 2).a, direct.range(m, 1, 2).a);
      assert.deepEqual(prepared.range(m, 1, 2).b, direct.range(m, 1, 2).b);
    }
  });

  it('rewriting a slot replaces its delta entirely, and clearing zeroes it', () => {
    const stacks = new LoraSlotStacks([{ modulePath: 'm', inFeatures: 3, outFeatures: 2 }], 2, 2);
    stacks.write(1, new Map([['m', { a: fill(6), b: fill(4), rank: 2, scale: 1 }]]));
    stacks.write(1, new Map([['m', { a: fill(3), b: fill(2), rank: 1, scale: 1 }]]));
    const { a } = stacks.range('m', 1, 2);
    assert.ok([1, 3, 5].every((i) => a[i] === 0), 'the second rank column must be zero after writing a rank-1 delta');
    stacks.clear(1);
    assert.ok(stacks.range('m', 1, 2).a.every((v) => v === 0) && stacks.range('m', 1, 2).b.every((v) => v === 0));
  });
});

it('slots are faulted in one per call (a written slot counts), then prefaultNext reports none left', () => {
  const stacks = new LoraSlotStacks([{ modulePath: 'm', inFeatures: 4, outFeatures: 3 }], 3, 2);
  stacks.write(1, new Map());
  assert.equal(stacks.prefaultNext(), true);
  assert.equal(stacks.prefaultNext(), true);
  assert.equal(stacks.prefaultNext(), false);
});
