/**
 * LoRA (PEFT `LORA`, also rsLoRA and DoRA): per targeted linear layer `y += scale · (x Aᵀ) Bᵀ`;
 * with `use_dora`, `y = bias + g ⊙ (x Wᵀ + scale · (x Aᵀ) Bᵀ)`, g = m / ‖W + scale·B·A‖ per output
 * (see peft-dora.ts; g is computed from the frozen weight when the delta is parsed).
 *
 * Slot layout, per projection, with the rank zero-padded to R = --max-rank (exact):
 *   lora_A.<module>     [in, R]     A[i, r] = lora_A[r, i]
 *   lora_B.<module>     [R, out]    B[r, o] = g[o] · scale · lora_B[o, r]   (g = 1 without DoRA)
 *   dora_gain.<module>  [1, out]    G[o] = g[o] − 1                          (0 without DoRA)
 * The gain is stored as g − 1 so that a plain LoRA's slot holds exact zeros: its tokens get
 * `0 · (x Wᵀ)` added, which leaves them bit for bit as before; and g − 1 rounded to float32 keeps
 * the bits that g ≈ 1 would lose.
 * Batched semantics (the oracle in lora.test.ts): y[t] += x[t] @ A[s] @ B[s] + G[s] ⊙ (y[t] − bias)
 * with s = slot(t), for every token whose row has a LoRA. Tokens are grouped by slot (lora_gather
 * [slots, cells] lists each slot's tokens), so each resident delta is read once and multiplied
 * only with its own tokens, and the products are scattered back (lora_scatter [T], a zero row for
 * tokens without a LoRA).
 * Training (method.type 'lora', rsLoRA included) is lora-training.ts.
 */
import type { ArchitectureSpec, ProjectionSpec } from '../../model/architecture.js';
import { allProjections } from '../../model/architecture.js';
import type { DeltaLowering, HookContext } from '../../model/delta-hooks.js';
import { inlineTensor } from '../../graph/ir.js';
import { registerDeltaKind, type DeltaKind, type DeltaLimits, type FeedInput, type FeedTensor, type ParsedDelta, type SlotTensor } from '../kind.js';
import { doraGains } from '../peft-dora.js';
import { parsePeftLoraModules, type LoraModule } from '../peft-lora.js';

export const loraA = (modulePath: string) => `lora_A.${modulePath}`;
export const loraB = (modulePath: string) => `lora_B.${modulePath}`;
export const doraGain = (modulePath: string) => `dora_gain.${modulePath}`;
const GATHER = 'lora_gather';
const SCATTER = 'lora_scatter';

function projections(arch: ArchitectureSpec): ProjectionSpec[] {
  return allProjections(arch).flat();
}

export const lora: DeltaKind = {
  name: 'lora',
  family: 'reparameterization',
  format: "PEFT peft_type 'LORA' (use_dora: DoRA too)",
  detect: (config) => config['peft_type'] === 'LORA',

  parse({ name, config, weights, arch, limits, baseWeight }): ParsedDelta {
    const parsed = parsePeftLoraModules(name, config, weights, arch, limits.maxRank, { dora: true });
    let gains: Map<string, Float64Array> | undefined;
    if (parsed.dora) {
      if (!baseWeight) throw new Error(`${name}: a DoRA adapter needs the backbone's frozen weights to parse, and this parse was given none`);
      gains = doraGains(name, parsed.modules, projections(arch), baseWeight);
    }
    const tensors = toSlotLayout(projections(arch), parsed.modules, limits.maxRank, gains);
    const rank = Math.max(...[...parsed.modules.values()].map((m) => m.rank));
    const summary = { rank, modules: parsed.modules.size, ...(parsed.dora ? { dora: true } : {}) };
    return { kind: 'lora', name, tensors, virtualTokens: 0, summary, warnings: parsed.warnings };
  },

  slotTensors(arch, limits): SlotTensor[] {
    const R = limits.maxRank;
    return projections(arch).flatMap((p) => [
      { name: loraA(p.modulePath), length: p.inFeatures * R, neutral: 0, dims: [p.inFeatures, R] },
      { name: loraB(p.modulePath), length: R * p.outFeatures, neutral: 0, dims: [R, p.outFeatures] },
      { name: doraGain(p.modulePath), length: p.outFeatures, neutral: 0, dims: [1, p.outFeatures] },
    ]);
  },

  lowering: (arch, limits) => loraLowering(limits),

  feeds({ tokenSlots, slotCount }: FeedInput): FeedTensor[] {
    const { gather, cells, scatter } = loraGrouping(tokenSlots, 0, slotCount);
    return [
      { name: GATHER, dtype: 'int64', data: gather, dims: [slotCount, cells] },
      { name: SCATTER, dtype: 'int64', data: scatter, dims: [tokenSlots.length] },
    ];
  },
};

function loraLowering(limits: DeltaLimits): DeltaLowering {
  return {
    kind: 'lora',
    /** y + (x[gather] @ A @ B + G ⊙ (y − bias)[gather])[cell of t], a zero row for tokens without a LoRA. */
    projectionOutput(ctx: HookContext, p: ProjectionSpec, x: string, y: string): string {
      const { b } = ctx;
      const gatherIndex = ctx.input(GATHER, 'int64', ['lora_slots', 'lora_cells']);
      const scatterIndex = ctx.input(SCATTER, 'int64', ['tokens']);
      const a = ctx.input(loraA(p.modulePath), 'float32', ['lora_slots', p.inFeatures, limits.maxRank]);
      const bMat = ctx.input(loraB(p.modulePath), 'float32', ['lora_slots', limits.maxRank, p.outFeatures]);
      // Projections that share an input (q/k/v, gate/up) share one gather of its rows.
      const rows = ctx.shared(`lora.gathered.${x}`, () => b.op1('Gather', [x, gatherIndex], { axis: 0 })); // [slots, cells, in]
      const shrunk = b.op1('MatMul', [rows, a]); // [slots, cells, R]
      const expanded = doraRescaled(ctx, p, y, gatherIndex, b.op1('MatMul', [shrunk, bMat])); // [slots, cells, out]
      const flat = b.op1('Reshape', [expanded, b.constant('int64', [2], [-1, p.outFeatures])]); // [slots*cells, out]
      const zero = ctx.shared(`lora.zero.${p.outFeatures}`, () => b.initializer('lora_zero_row', inlineTensor('float32', [1, p.outFeatures], new Float32Array(p.outFeatures))));
      const padded = b.op1('Concat', [flat, zero], { axis: 0 });
      return b.op1('Add', [y, b.op1('Gather', [padded, scatterIndex], { axis: 0 })]); // selected, never masked
    },
  };
}

/**
 * DoRA's rescaling of each cell's output: the LoRA product plus G ⊙ (x Wᵀ), where x Wᵀ is the
 * base output without its bias (PEFT subtracts base_layer.bias from base_result: the magnitude
 * rescales the weight, not the bias). A plain LoRA's G is 0, which adds exact zeros.
 */
function doraRescaled(ctx: HookContext, p: ProjectionSpec, y: string, gatherIndex: string, product: string): string {
  const { b } = ctx;
  const gain = ctx.input(doraGain(p.modulePath), 'float32', ['lora_slots', 1, p.outFeatures]); // [slots, 1, out]: g − 1
  const base = b.op1('Gather', [y, gatherIndex], { axis: 0 }); // [slots, cells, out]: x Wᵀ + bias
  const weightOnly = p.bias ? b.op1('Sub', [base, ctx.weight(p.bias)]) : base; // [slots, cells, out]
  return b.op1('Add', [product, b.op1('Mul', [gain, weightOnly])]); // [slots, cells, out]
}

/**
 * Every module of a delta in slot layout for rank R, with DoRA's gains g per output where the
 * delta has them; pure, so the loader thread runs it. The modules share one buffer (one
 * allocation, one transfer between threads).
 */
export function toSlotLayout(shapes: readonly ProjectionSpec[], modules: ReadonlyMap<string, LoraModule>, R: number, gains?: ReadonlyMap<string, Float64Array>): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  const targeted = shapes.filter((m) => modules.has(m.modulePath));
  const gainLength = (m: ProjectionSpec) => (gains?.has(m.modulePath) ? m.outFeatures : 0);
  const buffer = new Float32Array(targeted.reduce((n, m) => n + R * (m.inFeatures + m.outFeatures) + gainLength(m), 0));
  let offset = 0;
  const take = (length: number) => buffer.subarray(offset, (offset += length));
  for (const m of targeted) {
    const a = take(m.inFeatures * R);
    const b = take(R * m.outFeatures);
    const g = gains?.get(m.modulePath);
    layOut(m, modules.get(m.modulePath)!, R, a, b, g);
    out.set(loraA(m.modulePath), a);
    out.set(loraB(m.modulePath), b);
    if (!g) continue;
    const gain = take(m.outFeatures);
    g.forEach((v, o) => (gain[o] = v - 1));
    out.set(doraGain(m.modulePath), gain);
  }
  return out;
}

/** PEFT layout → slot layout into zeroed arrays: A [r, in] → [in, R] and B [out, r] → g · scale · [R, out], zero-padded. */
function layOut(m: ProjectionSpec, w: LoraModule, R: number, a: Float32Array, b: Float32Array, g?: Float64Array): void {
  const { inFeatures, outFeatures } = m;
  const { rank, scale } = w;
  for (let r = 0; r < rank; r++) {
    for (let i = 0; i < inFeatures; i++) a[i * R + r] = w.a[r * inFeatures + i]!;
  }
  for (let o = 0; o < outFeatures; o++) {
    const s = g ? g[o]! * scale : scale;
    for (let r = 0; r < rank; r++) b[r * outFeatures + o] = s * w.b[o * rank + r]!;
  }
}

/**
 * Groups a pass's tokens by slot for the gathered LoRA: for slots [lo, hi), `gather`
 * [hi - lo, cells] lists each slot's tokens (spare cells repeat token 0, computed and discarded),
 * and `scatter` [tokens] points each token at its cell, or at the zero row after the last cell
 * when it has no delta.
 *
 * @example loraGrouping([2, -1, 2, 3], 2, 4) // gather [[0, 2], [3, 0]], cells 2, scatter [0, 4, 1, 2]
 */
export function loraGrouping(tokenSlots: ArrayLike<number>, lo: number, hi: number): { gather: number[]; cells: number; scatter: number[] } {
  const groups: number[][] = Array.from({ length: hi - lo }, () => []);
  for (let t = 0; t < tokenSlots.length; t++) if (tokenSlots[t]! >= 0) groups[tokenSlots[t]! - lo]!.push(t);
  const cells = Math.max(0, ...groups.map((g) => g.length));
  const zeroRow = (hi - lo) * cells;
  const scatter = Array<number>(tokenSlots.length).fill(zeroRow);
  const gather: number[] = [];
  groups.forEach((tokens, s) => {
    for (let j = 0; j < cells; j++) {
      const t = tokens[j];
      gather.push(t ?? 0);
      if (t !== undefined) scatter[t] = s * cells + j;
    }
  });
  return { gather, cells, scatter };
}

registerDeltaKind(lora);
