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
 * ‖W[o] + s·Σ_r B[o, r]·A[r]‖ for every output row o, in float64 (PEFT's
 * `torch.linalg.norm(transpose(W, fan_in_fan_out) + scaling * lora_B @ lora_A, dim=1)`).
 */
export function combinedRowNorms(p: ProjectionSpec, w: Float32Array, m: LoraModule): Float64Array {
  const { inFeatures: n, outFeatures: out } = p;
  const rows = p.layout === 'out_in' ? w : transpose(w, n, out); // [out, in]
  const norms = new Float64Array(out);
  const row = new Float64Array(n);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < n; i++) row[i] = rows[o * n + i]!;
    for (let r = 0; r < m.rank; r++) {
      const c = m.scale * m.b[o * m.rank + r]!;
      const a = r * n;
      for (let i = 0; i < n; i++) row[i]! += c * m.a[a + i]!;
    }
    let sum = 0;
    for (let i = 0; i < n; i++) sum += row[i]! * row[i]!;
    norms[o] = Math.sqrt(sum);
  }
  return norms;
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
