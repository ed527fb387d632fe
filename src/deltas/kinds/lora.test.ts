import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ProjectionSpec } from '../../model/architecture.js';
import { mulberry32 } from '../../model/random.js';
import { SlotStacks, slotRange } from '../../engine/slot-stacks.js';
import type { ParsedDelta, SlotTensor } from '../kind.js';
import type { LoraModule } from '../peft-lora.js';
import { loraA, loraB, loraGrouping, toSlotLayout } from './lora.js';

const random = mulberry32(7);
const fill = (n: number) => Float32Array.from({ length: n }, () => random() - 0.5);
const projection = (modulePath: string, inFeatures: number, outFeatures: number): ProjectionSpec => ({ name: modulePath, modulePath, inFeatures, outFeatures, weight: `${modulePath}.weight`, layout: 'out_in' });
const specsOf = (shapes: ProjectionSpec[], R: number): SlotTensor[] =>
  shapes.flatMap((p) => [
    { name: loraA(p.modulePath), length: p.inFeatures * R, neutral: 0, dims: [p.inFeatures, R] },
    { name: loraB(p.modulePath), length: R * p.outFeatures, neutral: 0, dims: [R, p.outFeatures] },
  ]);
const parsed = (shapes: ProjectionSpec[], modules: Map<string, LoraModule>, R: number): ParsedDelta => ({ kind: 'lora', name: 'x', tensors: toSlotLayout(shapes, modules, R), virtualTokens: 0, summary: {}, warnings: [] });

/** The spec, token by token: y[t] = scale * (x[t] @ lora_A^T) @ lora_B^T for the delta in token t's slot. */
function reference(x: Float32Array[], slots: number[], deltas: Map<number, LoraModule>, inF: number, outF: number): Float32Array[] {
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
function gathered(x: Float32Array[], slots: number[], stacks: SlotStacks, module: string, inF: number, outF: number, R: number): Float32Array[] {
  const { lo, hi } = slotRange(slots);
  const { gather, cells, scatter } = loraGrouping(slots, lo, hi);
  const a = stacks.range(loraA(module), lo, hi);
  const b = stacks.range(loraB(module), lo, hi);
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

describe('LoRA slot layout and token grouping', () => {
  it('groups tokens by slot as documented', () => {
    assert.deepEqual(loraGrouping([2, -1, 2, 3], 2, 4), { gather: [0, 2, 3, 0], cells: 2, scatter: [0, 4, 1, 2] });
    assert.deepEqual(loraGrouping([-1, -1], 0, 0), { gather: [], cells: 0, scatter: [0, 0] });
    assert.deepEqual(slotRange([-1, 5, 3, -1]), { lo: 3, hi: 6 });
    assert.deepEqual(slotRange([-1]), { lo: 0, hi: 0 });
  });

  it('gathered per-slot products equal the per-token spec, with ranks padded and a slot left unused', () => {
    const inF = 6, outF = 5, R = 4;
    const shapes = [projection('m', inF, outF)];
    const stacks = new SlotStacks('lora', specsOf(shapes, R), 4);
    const deltas = new Map<number, LoraModule>([
      [0, { a: fill(2 * inF), b: fill(outF * 2), rank: 2, scale: 2 }],
      [1, { a: fill(4 * inF), b: fill(outF * 4), rank: 4, scale: 0.5 }],
      [3, { a: fill(3 * inF), b: fill(outF * 3), rank: 3, scale: 1 / Math.sqrt(3) }],
    ]);
    for (const [slot, d] of deltas) stacks.write(slot, parsed(shapes, new Map([['m', d]]), R));
    const slots = [1, -1, 3, 1, 0, 3, -1, 1];
    const x = slots.map(() => fill(inF));
    const want = reference(x, slots, deltas, inF, outF);
    const got = gathered(x, slots, stacks, 'm', inF, outF, R);
    got.forEach((row, t) => row.forEach((v, o) => assert.ok(Math.abs(v - want[t]![o]!) < 1e-5, `token ${t} out ${o}: ${v} vs ${want[t]![o]}`)));
  });

  it('rewriting a slot replaces its delta entirely: modules it does not target are reset to zero', () => {
    const shapes = [projection('m', 3, 2), projection('n', 4, 6)];
    const stacks = new SlotStacks('lora', specsOf(shapes, 2), 2);
    stacks.write(1, parsed(shapes, new Map([['m', { a: fill(6), b: fill(4), rank: 2, scale: 1 }], ['n', { a: fill(4), b: fill(6), rank: 1, scale: 1 }]]), 2));
    stacks.write(1, parsed(shapes, new Map([['m', { a: fill(3), b: fill(2), rank: 1, scale: 1 }]]), 2));
    const a = stacks.range(loraA('m'), 1, 2);
    assert.ok([1, 3, 5].every((i) => a[i] === 0), 'the second rank column must be zero after writing a rank-1 delta');
    assert.ok(stacks.range(loraA('n'), 1, 2).every((v) => v === 0) && stacks.range(loraB('n'), 1, 2).every((v) => v === 0));
  });

  it('slots are faulted in one per call (a written slot counts), then prefaultNext reports none left', () => {
    const shapes = [projection('m', 4, 3)];
    const stacks = new SlotStacks('lora', specsOf(shapes, 2), 3);
    stacks.write(1, parsed(shapes, new Map(), 2));
    assert.equal(stacks.prefaultNext(), true);
    assert.equal(stacks.prefaultNext(), true);
    assert.equal(stacks.prefaultNext(), false);
  });
});
