/**
 * Oracle for AdapterHub bottleneck adapters, written from the `adapters` library's source (not
 * from deltaserve's lowering), in float64:
 *   configuration/adapter_config.py   BnConfig defaults, the presets, ADAPTER_CONFIG_MAP
 *   loading.py / utils.py             load_weights_config (ACTIVATION_RENAME for files without a version)
 *   methods/bottleneck.py             BottleneckLayer.add_adapter (reduction_factor, leave_out),
 *                                     bottleneck_layer_forward (Stack → pre_block, compose_single, post_forward)
 *   methods/modeling.py               Adapter / ParallelAdapter pre_forward, forward, post_forward
 *   models/{llama,mistral,gpt2}       attention_adapters(attn_output, residual, None), output_adapters(mlp_output, residual, None)
 *   wrappers/interfaces.py "qwen2"    hooked adapters: original_ln_after forced False, the model adds the residual itself
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadSafetensorsF32 } from '../checkpoints.js';
import type { OracleDelta, OracleTensor, OracleWeights, Vec } from '../transformer.js';

type Config = Record<string, any>;

/** BnConfig's dataclass defaults. */
const BN_DEFAULTS: Config = {
  original_ln_before: false, original_ln_after: true, ln_before: false, ln_after: false, init_weights: 'bert', init_weights_seed: null, is_parallel: false,
  scaling: 1.0, use_gating: false, residual_before_ln: true, adapter_residual_before_ln: false, inv_adapter: null, inv_adapter_reduction_factor: null,
  cross_adapter: false, leave_out: [], dropout: 0.0, phm_layer: false, stochastic_depth: 0.0,
};
const SEQ_BN = { ...BN_DEFAULTS, original_ln_before: true, original_ln_after: true, residual_before_ln: true, adapter_residual_before_ln: false, ln_before: false, ln_after: false, mh_adapter: false, output_adapter: true, non_linearity: 'relu', reduction_factor: 16 };
const DOUBLE_SEQ_BN = { ...BN_DEFAULTS, original_ln_before: false, original_ln_after: true, residual_before_ln: true, adapter_residual_before_ln: false, ln_before: false, ln_after: false, mh_adapter: true, output_adapter: true, non_linearity: 'swish', reduction_factor: 16 };
const PAR_BN = { ...BN_DEFAULTS, original_ln_before: false, original_ln_after: true, ln_before: false, ln_after: false, mh_adapter: false, output_adapter: true, non_linearity: 'relu', reduction_factor: 2, init_weights: 'mam_adapter', is_parallel: true, scaling: 4.0 };
export const PRESETS: Record<string, Config> = {
  pfeiffer: SEQ_BN, houlsby: DOUBLE_SEQ_BN, parallel: PAR_BN, scaled_parallel: { ...PAR_BN, scaling: 'learned' },
  seq_bn: SEQ_BN, double_seq_bn: DOUBLE_SEQ_BN, par_bn: PAR_BN, scaled_par_bn: { ...PAR_BN, scaling: 'learned' },
};

// ---------------------------------------------------------------------------
// activations (transformers.activations ACT2FN; the library's own "leakyrelu")

function erf(x: number): number {
  const z = Math.abs(x);
  let result: number;
  if (z < 3) {
    // Maclaurin series: 2/sqrt(pi) Σ (-1)^n z^(2n+1) / (n! (2n+1)); terms fall below 1e-17 well before n = 80.
    let term = z;
    let sum = z;
    for (let n = 1; n < 100 && Math.abs(term) > 1e-18; n++) {
      term *= (-z * z) / n;
      sum += term / (2 * n + 1);
    }
    result = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    // erfc by its continued fraction (Lentz), converging fast for z >= 3.
    let f = z;
    let c = z;
    let d = 0;
    for (let n = 1; n < 200; n++) {
      const a = n / 2;
      d = 1 / (z + a * d);
      c = z + a / c;
      f *= c * d;
    }
    result = 1 - Math.exp(-z * z) / (Math.sqrt(Math.PI) * f);
  }
  return x < 0 ? -result : result;
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
const geluTanh = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

const ACT2FN: Record<string, (x: number) => number> = {
  gelu: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
  gelu_python: (x) => x * 0.5 * (1 + erf(x / Math.sqrt(2))),
  gelu_new: geluTanh,
  gelu_pytorch_tanh: geluTanh,
  gelu_fast: (x) => 0.5 * x * (1 + Math.tanh(x * 0.7978845608 * (1 + 0.044715 * x * x))),
  quick_gelu: (x) => x * sigmoid(1.702 * x),
  linear: (x) => x,
  relu: (x) => Math.max(x, 0),
  sigmoid,
  silu: (x) => x * sigmoid(x),
  swish: (x) => x * sigmoid(x),
  tanh: Math.tanh,
};

/** Activation_Function_Class: lower-cased; "leakyrelu" is F.leaky_relu (slope 0.01), anything else ACT2FN. */
function activationFunction(name: string): (x: number) => number {
  const lower = name.toLowerCase();
  if (lower === 'leakyrelu') return (x) => (x >= 0 ? x : 0.01 * x);
  const f = ACT2FN[lower];
  if (!f) throw new Error(`oracle: function ${lower} not found in ACT2FN mapping`);
  return f;
}

// ---------------------------------------------------------------------------
// one Adapter module

interface Linear {
  weight: OracleTensor;
  bias: OracleTensor;
}

function linear(x: Vec, l: Linear): Vec {
  const [out, inF] = l.weight.shape as [number, number];
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let acc = l.bias.data[o]!;
    for (let i = 0; i < inF; i++) acc += l.weight.data[o * inF + i]! * x[i]!;
    y[o] = acc;
  }
  return y;
}

/** nn.LayerNorm(hidden) with its default eps 1e-5. */
function layerNorm(x: Vec, l: Linear): Vec {
  const n = x.length;
  const mean = x.reduce((a, b) => a + b, 0) / n;
  const variance = x.reduce((a, b) => a + (b - mean) ** 2, 0) / n;
  const inv = 1 / Math.sqrt(variance + 1e-5);
  return x.map((v, i) => (v - mean) * inv * l.weight.data[i]! + l.bias.data[i]!);
}

const add = (a: Vec, b: Vec): Vec => a.map((v, i) => v + b[i]!);

class Adapter {
  constructor(
    private readonly config: Config,
    private readonly p: { down: Linear; up: Linear; normBefore?: Linear; normAfter?: Linear; scaling?: OracleTensor },
    private readonly act: (x: number) => number,
    /** Set False for adapters hooked into the layer (BottleneckLayer.add_adapter, is_layer_hooked). */
    readonly originalLnAfter: boolean,
  ) {}

  get parallel(): boolean {
    return this.config['is_parallel'];
  }

  /** Adapter.pre_forward (layer_norm is None): hidden_states, residual. ParallelAdapter: input_tensor twice. */
  preForward(hidden: Vec, inputTensor: Vec): { hidden: Vec; residual: Vec } {
    if (this.parallel) return { hidden: inputTensor, residual: inputTensor };
    let residual: Vec | undefined;
    if (this.config['residual_before_ln'] === true) residual = hidden;
    if (this.config['original_ln_before']) hidden = add(hidden, inputTensor);
    if (!this.config['residual_before_ln']) residual = hidden;
    if (!residual) throw new Error("oracle: residual_before_ln 'post_add' leaves the residual unset without a layer norm (UnboundLocalError)");
    return { hidden, residual };
  }

  /** Adapter.forward / ParallelAdapter.forward in eval mode (dropout is the identity). */
  forward(x: Vec, residualInput: Vec): Vec {
    let down = this.p.normBefore ? layerNorm(x, this.p.normBefore) : x;
    down = linear(down, this.p.down).map(this.act);
    let output = this.scale(linear(down, this.p.up));
    if (this.parallel) return this.config['ln_after'] ? layerNorm(output, this.p.normAfter!) : output;
    if (this.config['adapter_residual_before_ln']) output = add(output, residualInput);
    if (this.config['ln_after']) output = layerNorm(output, this.p.normAfter!);
    if (!this.config['adapter_residual_before_ln']) output = add(output, residualInput);
    return output;
  }

  /** post_forward (layer_norm is None); ParallelAdapter first adds the sub-block's output back. */
  postForward(hidden: Vec, inputHidden: Vec, inputTensor: Vec): Vec {
    if (this.parallel) hidden = add(hidden, inputHidden);
    return this.originalLnAfter ? add(hidden, inputTensor) : hidden;
  }

  private scale(up: Vec): Vec {
    const s = this.config['scaling'];
    if (typeof s === 'number') return up.map((v) => v * s);
    const t = this.p.scaling!.data;
    return up.map((v, i) => v * (t.length === 1 ? t[0]! : t[i]!));
  }
}

// ---------------------------------------------------------------------------
// the adapter over a model

/** The full adapter_config.json → the resolved BnConfig dict (preset names resolved, old activation names renamed). */
export function resolveConfig(file: Config): Config {
  const raw = typeof file['config'] === 'string' ? PRESETS[file['config']] : { ...BN_DEFAULTS, ...file['config'] };
  if (!raw) throw new Error(`oracle: unknown preset ${file['config']}`);
  const config = { ...raw };
  if (!('version' in file) && config['non_linearity'] === 'gelu') config['non_linearity'] = 'gelu_new';
  else if (!('version' in file) && config['non_linearity'] === 'gelu_orig') config['non_linearity'] = 'gelu';
  return config;
}

/** CPython float floor division, then int(): `int(hidden_size // reduction_factor)`. */
function floorDiv(a: number, b: number): number {
  const mod = a % b;
  let div = (a - mod) / b;
  if (mod !== 0 && b < 0 !== mod < 0) div -= 1;
  const floor = Math.floor(div);
  return div - floor > 0.5 ? floor + 1 : floor;
}

/**
 * The adapter in `adapterDir` (adapter_config.json + adapter.safetensors or
 * adapter_model.safetensors) as the adapters library applies it to a model of `modelConfig`.
 */
export function oracleBottleneck(adapterDir: string, modelConfig: Config): OracleDelta {
  const file = JSON.parse(fs.readFileSync(path.join(adapterDir, 'adapter_config.json'), 'utf8')) as Config;
  const weightsFile = ['adapter.safetensors', 'adapter_model.safetensors'].map((f) => path.join(adapterDir, f)).find((f) => fs.existsSync(f))!;
  return bottleneckDelta(file, loadSafetensorsF32(weightsFile), modelConfig);
}

/** The adapter as an OracleDelta: each place's Adapter, or the plain residual add where it has none. */
export function bottleneckDelta(file: Config, tensors: OracleWeights, modelConfig: Config): OracleDelta {
  // qwen2 has no native support: its plugin interface hooks adapters onto o_proj / down_proj.
  const hooked = modelConfig.model_type === 'qwen2';
  const adapters = buildAdapters(resolveConfig(file), file['name'], tensors, modelConfig, hooked);
  return {
    blockOutput(layer, location, output, residual) {
      const adapter = adapters.get(`${layer}.${location}`);
      let hidden: Vec;
      if (!adapter) hidden = hooked ? output : add(output, residual); // no adapter: the plain residual add
      else {
        // bottleneck_layer_forward with Stack(name): pre_block → compose_single → post_forward.
        const pre = adapter.preForward(output, residual);
        hidden = adapter.postForward(adapter.forward(pre.hidden, pre.residual), output, residual);
      }
      // Hooked (qwen2): the hook returns the adapter's output and the decoder layer adds the residual.
      return hooked ? add(residual, hidden) : hidden;
    },
  };
}

/** BottleneckLayer.add_adapter at every layer and location, loading the adapter's parameters. */
function buildAdapters(config: Config, name: string, tensors: OracleWeights, modelConfig: Config, hooked: boolean): Map<string, Adapter> {
  const hidden: number = modelConfig.hidden_size ?? modelConfig.n_embd;
  const layers: number = modelConfig.num_hidden_layers ?? modelConfig.n_layer;
  const layerPrefix = modelConfig.model_type === 'gpt2' ? ['transformer.h', 'h'] : ['model.layers', 'layers'];
  const adapters = new Map<string, Adapter>();
  for (let layer = 0; layer < layers; layer++) {
    if ((config['leave_out'] as number[]).includes(layer)) continue;
    for (const [locationKey, module, location] of [['mh_adapter', 'attention_adapters', 'attention'], ['output_adapter', 'output_adapters', 'mlp']] as const) {
      if (!config[locationKey]) continue;
      let factor = config['reduction_factor'];
      if (typeof factor === 'object') factor = factor[String(layer)] ?? factor['default'];
      const get = (param: string) => {
        const t = layerPrefix.map((prefix) => tensors.get(`${prefix}.${layer}.${module}.adapters.${name}.${param}`)).find(Boolean);
        if (!t) throw new Error(`oracle: missing ${param} of layer ${layer} ${module}`);
        return t;
      };
      const params = adapterParams(config, get, Math.max(1, floorDiv(hidden, factor)));
      adapters.set(`${layer}.${location}`, new Adapter(config, params, activationFunction(config['non_linearity']), hooked ? false : config['original_ln_after']));
    }
  }
  return adapters;
}

/** The parameters Adapter.__init__ creates, by their state_dict names (with ln_before, adapter_down is [LayerNorm, Linear, act]). */
function adapterParams(config: Config, get: (param: string) => OracleTensor, width: number): ConstructorParameters<typeof Adapter>[1] {
  const lin = (p: string): Linear => ({ weight: get(`${p}.weight`), bias: get(`${p}.bias`) });
  const down = lin(config['ln_before'] ? 'adapter_down.1' : 'adapter_down.0');
  if (down.weight.shape[0] !== width) throw new Error(`oracle: adapter width ${down.weight.shape[0]} != ${width}`);
  return {
    down,
    up: lin('adapter_up'),
    normBefore: config['ln_before'] ? lin('adapter_down.0') : undefined,
    normAfter: config['ln_after'] ? lin('adapter_norm_after') : undefined,
    scaling: typeof config['scaling'] === 'string' ? get('scaling') : undefined,
  };
}
