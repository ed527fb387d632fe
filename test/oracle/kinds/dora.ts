/**
 * DoRA (PEFT LoRA with use_dora: true) as the oracle applies it, written from PEFT's source, not
 * from deltaserve's lowering:
 *
 * - tuners/lora/variants.py DoraLinearVariant.forward: in eval mode (no dropout) it calls the
 *   DoRA layer with `base_result = result`, the base layer's output, and adds what it returns.
 * - tuners/lora/dora.py DoraLinearLayer.forward:
 *     lora_weight    = lora_B(lora_A(eye)).T                          = B @ A          [out, in]
 *     weight_norm    = ‖transpose(W, fan_in_fan_out) + scaling · lora_weight‖ (dim=1), detached
 *     mag_norm_scale = magnitude / weight_norm
 *     lora_result    = lora_B(lora_A(x))
 *     base_result    = base_result − base_layer.bias   (when the layer has a bias)
 *     result_dora    = (mag_norm_scale − 1) · base_result + mag_norm_scale · lora_result · scaling
 * - tuners/lora/layer.py dispatch_default: a transformers Conv1D target (GPT-2) forces
 *   fan_in_fan_out = True, so its [in, out] weight is transposed before the norm.
 * - tuners/lora/model.py _get_adapter_state_dict: the magnitude is saved as
 *   `<module>.lora_magnitude_vector`; _remap_adapter_state_dict_for_load also accepts `.weight`.
 *
 * Everything in float64. Also a writer of tiny DoRA adapters in PEFT's on-disk format.
 */
import fs from 'node:fs';
import path from 'node:path';
import { encodeSafetensors } from '../../../src/model/safetensors.js';
import { seededNormal } from '../../../src/model/random.js';
import { loadSafetensorsF32, loadWeightsF32, writeTinyLora, type TinyFamily, type TinyLoraOptions } from '../checkpoints.js';
import { oracleLoraFromPeft, type OracleDelta, type OracleLoraModule, type OracleTensor, type OracleWeights, type Vec } from '../transformer.js';

const PREFIX = 'base_model.model.';
const MAGNITUDE = /^base_model\.model\.(.+)\.lora_magnitude_vector(?:\.weight)?$/;

/** One DoRA module: its LoRA factors and scaling, magnitude, and the frozen weight it rescales. */
interface DoraModule {
  lora: DoraFactors;
  magnitude: ArrayLike<number>;
  /** The base weight as nn.Linear holds it, [out, in] (transposed for Conv1D). */
  weight: Float64Array;
  bias?: Float32Array;
  /** magnitude / weight_norm, computed on first use (PEFT caches nothing by default, but the value is the same every call). */
  scale?: Float64Array;
}

/** A module's LoRA factors (row-major A [r, in], B [out, r]) and scaling, float32 from files or float64 from training. */
type DoraFactors = Pick<OracleLoraModule, 'r' | 'scale'> & { A: ArrayLike<number>; B: ArrayLike<number> };

/** The frozen weight tensor of a module path, under the names checkpoints use (GPT-2 with or without `transformer.`). */
function baseTensor(weights: OracleWeights, module: string, suffix: 'weight' | 'bias'): OracleTensor | undefined {
  return weights.get(`${module}.${suffix}`) ?? weights.get(`${module.replace(/^transformer\./, '')}.${suffix}`);
}

/** transpose(W, fan_in_fan_out) from peft/utils/other.py, into float64 [out, in]. */
function linearWeight(t: OracleTensor, fanInFanOut: boolean): Float64Array {
  const [d0, d1] = t.shape as [number, number];
  if (!fanInFanOut) return Float64Array.from(t.data);
  const out = new Float64Array(t.data.length);
  for (let i = 0; i < d0; i++) for (let o = 0; o < d1; o++) out[o * d0 + i] = t.data[i * d1 + o]!;
  return out;
}

/** DoraLinearLayer.get_weight_norm: ‖W + scaling · (B @ A)‖ over dim 1, per output row. */
export function doraWeightNorm(weight: Float64Array, lora: DoraFactors, outF: number): Float64Array {
  const inF = weight.length / outF;
  const norm = new Float64Array(outF);
  for (let o = 0; o < outF; o++) {
    let sum = 0;
    for (let i = 0; i < inF; i++) {
      let loraWeight = 0;
      for (let k = 0; k < lora.r; k++) loraWeight += lora.B[o * lora.r + k]! * lora.A[k * inF + i]!;
      const w = weight[o * inF + i]! + lora.scale * loraWeight;
      sum += w * w;
    }
    norm[o] = Math.sqrt(sum);
  }
  return norm;
}

/** result + DoraLinearLayer.forward(x, base_result=result) for one token. */
function doraForward(m: DoraModule, x: Vec, result: Vec): Vec {
  const outF = result.length;
  m.scale ??= Float64Array.from(doraWeightNorm(m.weight, m.lora, outF), (norm, o) => m.magnitude[o]! / norm);
  const { A, B, r, scale: scaling } = m.lora;
  const h = new Float64Array(r);
  for (let k = 0; k < r; k++) for (let i = 0; i < x.length; i++) h[k]! += A[k * x.length + i]! * x[i]!;
  const out = new Float64Array(outF);
  for (let o = 0; o < outF; o++) {
    let loraResult = 0;
    for (let k = 0; k < r; k++) loraResult += B[o * r + k]! * h[k]!;
    const baseResult = result[o]! - (m.bias ? m.bias[o]! : 0);
    const magNormScale = m.scale[o]!;
    out[o] = result[o]! + (magNormScale - 1) * baseResult + magNormScale * loraResult * scaling;
  }
  return out;
}

/**
 * The OracleDelta of a PEFT DoRA adapter directory on a backbone (its config.json and weights as
 * the oracle reads them). Pass it in `deltas`, not as the oracle's `lora`: DoRA replaces the
 * plain LoRA path.
 *
 * @example oracleForward(config, weights, ids, undefined, [oracleDora(adapterDir, config, weights)])
 */
export function oracleDora(adapterDir: string, modelConfig: { model_type: string }, weights: OracleWeights): OracleDelta {
  const adapterConfig = JSON.parse(fs.readFileSync(path.join(adapterDir, 'adapter_config.json'), 'utf8'));
  if (adapterConfig.use_dora !== true) throw new Error(`oracle: ${adapterDir} is not a DoRA adapter`);
  const tensors = loadSafetensorsF32(path.join(adapterDir, 'adapter_model.safetensors'));
  const loras = oracleLoraFromPeft(adapterConfig, tensors);
  const conv1d = modelConfig.model_type === 'gpt2'; // dispatch_default forces fan_in_fan_out for Conv1D
  const modules = new Map<string, DoraModule>();
  for (const [key, t] of tensors) {
    const match = MAGNITUDE.exec(key);
    if (!match) continue;
    const module = match[1]!;
    const lora = loras[module];
    const weight = baseTensor(weights, module, 'weight');
    if (!lora || !weight) throw new Error(`oracle: ${key} has no LoRA factors or no base weight`);
    modules.set(module, { lora, magnitude: t.data, weight: linearWeight(weight, conv1d), bias: baseTensor(weights, module, 'bias')?.data });
  }
  return {
    projectionOutput(module: string, x: Vec, y: Vec): Vec {
      const m = modules.get(module);
      return m ? doraForward(m, x, y) : y;
    },
  };
}

export interface TinyDoraOptions extends TinyLoraOptions {
  /** PEFT saves `lora_magnitude_vector` (default); older or hand-made files may say `lora_magnitude_vector.weight`. */
  magnitudeKey?: 'saved' | 'weight';
  /** Spread of m around ‖W + s·B·A‖ (default 0.3: gains of about 0.7-1.3, as a trained DoRA has). */
  spread?: number;
}

/**
 * Writes a PEFT DoRA adapter for the base checkpoint in `options.baseDir`: writeTinyLora's
 * factors, `use_dora: true`, and a magnitude per targeted module, m = ‖W + s·B·A‖ · (1 + spread·N(0, 1)).
 */
export function writeTinyDora(dir: string, family: TinyFamily, options: TinyDoraOptions): void {
  writeTinyLora(dir, family, options);
  const configFile = path.join(dir, 'adapter_config.json');
  const weightsFile = path.join(dir, 'adapter_model.safetensors');
  const config = { ...JSON.parse(fs.readFileSync(configFile, 'utf8')), use_dora: true };
  const tensors = loadSafetensorsF32(weightsFile);
  const weights = loadWeightsF32(options.baseDir);
  const rand = seededNormal((options.seed ?? 1) + 1000);
  const record: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const [name, t] of tensors) record[name] = { dtype: 'F32', shape: t.shape, data: t.data };
  for (const [module, lora] of Object.entries(oracleLoraFromPeft(config, tensors))) {
    const base = baseTensor(weights, module, 'weight')!;
    const outF = lora.B.length / lora.r;
    const norm = doraWeightNorm(linearWeight(base, family === 'gpt2'), lora, outF);
    const magnitude = Float32Array.from(norm, (n) => n * (1 + (options.spread ?? 0.3) * rand()));
    record[`${PREFIX}${module}.lora_magnitude_vector${options.magnitudeKey === 'weight' ? '.weight' : ''}`] = { dtype: 'F32', shape: [outF], data: magnitude };
  }
  fs.writeFileSync(weightsFile, encodeSafetensors(record, { format: 'pt' }));
  fs.writeFileSync(configFile, JSON.stringify(config, null, 2));
}

/** One module's DoRA parameters as training holds them (PEFT's names: lora_A, lora_B, lora_magnitude_vector). */
export interface OracleDoraParams extends DoraFactors {
  magnitude: ArrayLike<number>;
}

/**
 * DoRA's weight_norm ‖transpose(W, fan_in_fan_out) + scaling · B·A‖ of each module, for the
 * parameters given: the value PEFT detaches in DoraLinearLayer.forward.
 *
 * @example const norms = doraOracleNorms(modules, weights, 'llama');
 */
export function doraOracleNorms(modules: ReadonlyMap<string, OracleDoraParams>, weights: OracleWeights, family: TinyFamily): Map<string, Float64Array> {
  const norms = new Map<string, Float64Array>();
  for (const [module, m] of modules) {
    const weight = linearWeight(baseTensor(weights, module, 'weight')!, family === 'gpt2');
    norms.set(module, doraWeightNorm(weight, m, m.magnitude.length));
  }
  return norms;
}

/**
 * The OracleDelta of DoRA parameters (module path → factors and magnitude), as DoraLinearLayer.forward
 * applies them. `norms` holds weight_norm fixed: PEFT detaches it, so its gradient is the
 * derivative with the norm held at its current value, which is what central differences of this
 * delta's loss give when `norms` are those of the unperturbed parameters (doraOracleNorms).
 * Without `norms` each call uses the norms of the parameters given (the plain forward).
 *
 * @example oracleForward(config, weights, ids, undefined, [doraOracleDelta(modules, weights, 'llama', doraOracleNorms(start, weights, 'llama'))])
 */
export function doraOracleDelta(modules: ReadonlyMap<string, OracleDoraParams>, weights: OracleWeights, family: TinyFamily, norms = doraOracleNorms(modules, weights, family)): OracleDelta {
  const layers = new Map<string, DoraModule>();
  for (const [module, m] of modules) {
    const norm = norms.get(module)!;
    const layer: DoraModule = { lora: m, magnitude: m.magnitude, weight: new Float64Array(0), bias: baseTensor(weights, module, 'bias')?.data };
    layer.scale = Float64Array.from(norm, (n, o) => m.magnitude[o]! / n);
    layers.set(module, layer);
  }
  return {
    projectionOutput(module: string, x: Vec, y: Vec): Vec {
      const m = layers.get(module);
      return m ? doraForward(m, x, y) : y;
    },
  };
}
