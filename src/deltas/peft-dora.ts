/**
 * DoRA (PEFT LoRA with `use_dora: true`): the part that needs the backbone. PEFT's forward
 * (tuners/lora/dora.py, DoraLinearLayer.forward, called from variants.py DoraLinearVariant.forward
 * with base_result = the base layer's output in eval mode):
 *
 *   g         = m / ‖W + s·B·A‖        per output row, the norm over the input dimension (get_weight_norm),
 *                                      detached; W transposed to [out, in] first for Conv1D (fan_in_fan_out)
 *   result    = base(x) + (g − 1) ⊙ (base(x) − bias) + g ⊙ s·B·A·x
 *             = bias + g ⊙ (W·x + s·B·A·x)
 *
 * g depends only on the delta and the frozen weight, so it is computed once here, when the delta
 * is parsed, and the lora kind applies it per row beside the LoRA product (kinds/lora.ts).
 * The cost is W·Aᵀ for every targeted module, out · in · r multiply-adds, and reading each
 * targeted frozen weight once (bench/dora-load.ts: about 2-3 s for a rank-16 all-linear DoRA on
 * the SmolLM2-135M-shaped bench model on a 2-core VM, on the loader thread).
 */
import type { ProjectionSpec } from '../model/architecture.js';
import { DeltaValidationError } from './errors.js';
import type { BaseWeightReader } from './kind.js';
import type { LoraModule } from './peft-lora.js';

/**
 * Each DoRA module's gain g = m / ‖W + s·B·A‖ per output feature, in float64. Throws
 * DeltaValidationError when a gain (or what the slot holds from it: g − 1 and g·s·B, in float32)
 * would not be finite, e.g. a row whose combined weight is all zeros.
 *
 * @example doraGains('acme/dora@1', modules, allProjections(arch).flat(), read).get('model.layers.0.self_attn.q_proj')!.length // 576
 */
export function doraGains(name: string, modules: ReadonlyMap<string, LoraModule>, projections: readonly ProjectionSpec[], baseWeight: BaseWeightReader): Map<string, Float64Array> {
  const gains = new Map<string, Float64Array>();
  const problems: string[] = [];
  for (const p of projections) {
    const m = modules.get(p.modulePath);
    if (!m?.magnitude) continue;
    const w = baseWeight(p.weight);
    if (w.length !== p.inFeatures * p.outFeatures) throw new Error(`${p.weight}: ${w.length} values, expected ${p.outFeatures} x ${p.inFeatures}`);
    const norms = combinedRowNorms(p, w, m);
    const g = Float64Array.from(norms, (norm, o) => m.magnitude![o]! / norm);
    const bad = firstBadGain(g, m);
    if (bad >= 0) problems.push(`base_model.model.${p.modulePath}.lora_magnitude_vector: at output ${bad}, m / ‖W + s·B·A‖ = ${m.magnitude[bad]} / ${norms[bad]} is not a finite float32 gain`);
    gains.set(p.modulePath, g);
  }
  if (problems.length) throw new DeltaValidationError(name, problems);
  return gains;
}

/**
 * ‖W[o] + s·B[o]·A‖ for every output row o (PEFT's `torch.linalg.norm(transpose(W,
 * fan_in_fan_out) + scaling * lora_B @ lora_A, dim=1)`), expanded so that the one product it
 * needs, W·Aᵀ [out, r], is a set of dot products (about twice as fast in JS as forming each row):
 *   ‖W[o] + s·B[o]·A‖² = ‖W[o]‖² + 2s·B[o]·(W[o]·Aᵀ) + s²·B[o]·(A·Aᵀ)·B[o]ᵀ
 * Sums in float64: the expansion's cancellation (were s·B·A to nearly cancel W) costs far less
 * than the float32 rounding of PEFT's own norm.
 */
export function combinedRowNorms(p: ProjectionSpec, w: Float32Array, m: LoraModule): Float64Array {
  const { inFeatures: n, outFeatures: out } = p;
  const { a, b, rank, scale } = m;
  const rows = p.layout === 'out_in' ? w : transpose(w, n, out); // [out, in]
  const gram = timesTransposed(a, a, rank, n, rank); // A·Aᵀ [r, r]
  const wa = timesTransposed(rows, a, out, n, rank); // W·Aᵀ [out, r]
  const norms = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let cross = 0;
    let quad = 0;
    for (let r = 0; r < rank; r++) {
      const br = b[o * rank + r]!;
      cross += br * wa[o * rank + r]!;
      let g = 0;
      for (let q = 0; q < rank; q++) g += gram[r * rank + q]! * b[o * rank + q]!;
      quad += br * g;
    }
    const ww = dot(rows, o * n, rows, o * n, n);
    // Rounding can take an exact zero a hair below it; a norm of 0 is refused by the caller.
    norms[o] = Math.sqrt(Math.max(0, ww + 2 * scale * cross + scale * scale * quad));
  }
  return norms;
}

/**
 * X·Yᵀ [rows, k] for X [rows, n] and Y [k, n], in float64. Two rows of X by four of Y per pass
 * (each value loaded once for up to eight products), the remainders one dot product at a time.
 */
function timesTransposed(x: Float32Array, y: Float32Array, rows: number, n: number, k: number): Float64Array {
  const out = new Float64Array(rows * k);
  const rowEnd = rows - (rows % 2);
  const kEnd = k - (k % 4);
  for (let i = 0; i < rowEnd; i += 2) for (let j = 0; j < kEnd; j += 4) block2x4(x, y, i, j, n, k, out);
  for (let i = 0; i < rows; i++) for (let j = i < rowEnd ? kEnd : 0; j < k; j++) out[i * k + j] = dot(x, i * n, y, j * n, n);
  return out;
}

/** out[i..i+1, j..j+3] = X[i..i+1]·Y[j..j+3]ᵀ. */
function block2x4(x: Float32Array, y: Float32Array, i: number, j: number, n: number, k: number, out: Float64Array): void {
  const x0 = i * n, x1 = x0 + n, y0 = j * n, y1 = y0 + n, y2 = y1 + n, y3 = y2 + n; // prettier-ignore
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0; // prettier-ignore
  for (let t = 0; t < n; t++) {
    const u = x[x0 + t]!, v = x[x1 + t]!; // prettier-ignore
    const p0 = y[y0 + t]!, p1 = y[y1 + t]!, p2 = y[y2 + t]!, p3 = y[y3 + t]!; // prettier-ignore
    c00 += u * p0; c01 += u * p1; c02 += u * p2; c03 += u * p3; // prettier-ignore
    c10 += v * p0; c11 += v * p1; c12 += v * p2; c13 += v * p3; // prettier-ignore
  }
  const at = i * k + j;
  out.set([c00, c01, c02, c03], at);
  out.set([c10, c11, c12, c13], at + k);
}

function dot(x: Float32Array, x0: number, y: Float32Array, y0: number, n: number): number {
  let d = 0;
  for (let t = 0; t < n; t++) d += x[x0 + t]! * y[y0 + t]!;
  return d;
}

/** [rows, cols] → [cols, rows] (GPT-2's Conv1D [in, out] to nn.Linear's [out, in]). */
function transpose(w: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(w.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = w[i * cols + j]!;
  return t;
}

/** The first output whose gain, g − 1 or g·s·B row would not be a finite float32; -1 when none. */
function firstBadGain(g: Float64Array, m: LoraModule): number {
  for (let o = 0; o < g.length; o++) {
    let maxB = 0;
    for (let r = 0; r < m.rank; r++) maxB = Math.max(maxB, Math.abs(m.b[o * m.rank + r]!));
    const gain = g[o]!;
    if (!Number.isFinite(Math.fround(gain)) || !Number.isFinite(Math.fround(gain - 1)) || !Number.isFinite(Math.fround(Math.abs(gain) * m.scale * maxB))) return o;
  }
  return -1;
}
