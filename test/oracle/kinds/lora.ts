/**
 * LoRA as PEFT's tuners/lora/layer.py `Linear.forward` computes it, for the oracle's hooks:
 * `result = base_layer(x) + lora_B(lora_A(dropout(x))) * scaling` with scaling = lora_alpha / r,
 * or lora_alpha / sqrt(r) with use_rslora (`update_layer`); lora_A.weight [r, in], lora_B.weight
 * [out, r], for GPT-2's Conv1D layers too. Written from PEFT's source, not from deltaserve's lowering.
 */
import type { OracleDelta, Vec } from '../transformer.js';

/** One module's factors (float64, row-major) and its scaling. */
export interface OracleLoraFactors {
  A: ArrayLike<number>;
  B: ArrayLike<number>;
  r: number;
  scale: number;
}

/**
 * An OracleDelta adding scale · B (A x) to the output of each module in `modules` (module path → factors).
 *
 * @example oracleForward(config, weights, ids, undefined, [loraOracleDelta(new Map([['model.layers.0.self_attn.q_proj', { A, B, r: 4, scale: 2 }]]))])
 */
export function loraOracleDelta(modules: ReadonlyMap<string, OracleLoraFactors>): OracleDelta {
  return {
    projectionOutput(module: string, x: Vec, y: Vec): Vec {
      const m = modules.get(module);
      if (!m) return y;
      const inF = x.length;
      const h = new Float64Array(m.r);
      for (let k = 0; k < m.r; k++) {
        let acc = 0;
        for (let i = 0; i < inF; i++) acc += x[i]! * m.A[k * inF + i]!;
        h[k] = acc;
      }
      const out = Float64Array.from(y);
      for (let o = 0; o < out.length; o++) {
        let acc = 0;
        for (let k = 0; k < m.r; k++) acc += h[k]! * m.B[o * m.r + k]!;
        out[o] = out[o]! + m.scale * acc;
      }
      return out;
    },
  };
}
