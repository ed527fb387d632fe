/**
 * Training bottleneck adapters (`method: { type: 'bottleneck', bottleneck: { reduction_factor,
 * non_linearity, placement, init_weights } }`) as the AdapterHub `adapters` library defines them,
 * and written in its format (served by the bottleneck kind, loaded by `model.load_adapter`).
 *
 * The adapter is the library's SeqBnConfig (Pfeiffer et al. 2020; configuration/adapter_config.py):
 * original_ln_before, original_ln_after and residual_before_ln true, no adapter layer norms,
 * scaling 1.0, sequential; the options choose
 *   reduction_factor  width = int(hidden_size // reduction_factor), at least 1 (default 16)
 *   non_linearity     the library's names (Activation_Function_Class: lower-cased, ACT2FN or
 *                     "leakyrelu"); default "relu"
 *   placement         where adapters sit in every layer: "mlp" (default: output_adapter, SeqBnConfig's
 *                     own placement), "attention" (mh_adapter) or "both" (both flags; the same
 *                     residual arrangement at both places, so "both" is not DoubleSeqBnConfig, whose
 *                     original_ln_before is false)
 *   init_weights      "bert" (BnConfig's default), "mam_adapter" or "houlsby" (Adapter.__init__)
 *
 * With layer_norm=None, as every family served here calls the adapter layers
 * (models/{llama,mistral,gpt2}; qwen2's hooked interface gives the same sum, see the oracle),
 * methods/modeling.py Adapter.pre_forward / forward / post_forward compute, for the sub-block's
 * output o and its residual r:
 *   x = o + r;   up = W_u act(W_d x + b_d) + b_u;   result = (up + o) + r
 * Initialisation (Adapter.__init__, seeded by the job's seed instead of torch's generator):
 *   bert          W_d, W_u ~ N(0, 0.02), biases 0 (init_bert_weights)
 *   mam_adapter   W_d ~ kaiming_uniform(a=sqrt(5)) = U(±1/sqrt(hidden)), b_d = 0, W_u = b_u = 0
 *   houlsby       W_d, W_u ~ trunc_normal(0, 0.01, ±0.02), biases 0
 * Parameters carry the library's state_dict keys (`model.layers.L.output_adapters.adapters.
 * bottleneck.adapter_down.0.weight`, ...), the adapter named ADAPTER_NAME.
 */
import { z } from 'zod';
import type { ArchitectureSpec } from '../../model/architecture.js';
import type { TrainingHookContext, TrainingHooks } from '../../model/delta-hooks.js';
import type { TrainableParam } from '../../model/lower-training.js';
import { mulberry32, seededNormal } from '../../model/random.js';
import { encodeSafetensors } from '../../model/safetensors.js';
import { ACTIVATIONS, pythonFloorDiv, type Activation } from '../adapterhub/bottleneck-config.js';
import { layerPath, type Location } from '../adapterhub/bottleneck-weights.js';
import { registerTrainableKind, TrainingOptionsError, type TrainableKind } from '../training.js';
import { readBottleneckAdapter } from './bottleneck-training-read.js';

/** The adapter's name in the written files (the library keys tensors and the config by it). */
export const ADAPTER_NAME = 'bottleneck';

/** `method.bottleneck`: the options with the library's names, plus its init_weights. */
export const BottleneckTrainingOptions = z
  .object({
    reduction_factor: z.number().positive().max(1e6).default(16),
    non_linearity: z.string().min(1).max(64).default('relu'),
    placement: z.enum(['mlp', 'attention', 'both']).default('mlp'),
    init_weights: z.enum(['bert', 'mam_adapter', 'houlsby']).default('bert'),
  })
  .strict();

export type BottleneckTrainingOptions = z.infer<typeof BottleneckTrainingOptions>;
export type Placement = BottleneckTrainingOptions['placement'];

/** The options resolved against a backbone: the width and every module's key prefix. */
export interface BottleneckLayout {
  reductionFactor: number;
  width: number;
  /** non_linearity as written (lower-cased, as the library reads it) and what it computes. */
  nonLinearity: string;
  activation: Activation;
  placement: Placement;
  initWeights: BottleneckTrainingOptions['init_weights'];
  /** Every adapter module, layer by layer (attention before mlp): `<layer path>.<attention|output>_adapters.adapters.<name>`. */
  modules: { layer: number; location: Location; prefix: string }[];
}

const LOCATION_MODULE: Record<Location, string> = { attention: 'attention_adapters', mlp: 'output_adapters' };

/**
 * The layout of an adapter placed at `placement` in every layer.
 *
 * @example bottleneckLayout(arch, { reductionFactor: 16, nonLinearity: 'relu', placement: 'mlp', initWeights: 'bert' }, 8).modules[0].prefix // 'model.layers.0.output_adapters.adapters.bottleneck'
 */
export function bottleneckLayout(arch: ArchitectureSpec, o: Omit<BottleneckLayout, 'width' | 'activation' | 'modules'>, maxWidth: number): BottleneckLayout {
  const activation = ACTIVATIONS[o.nonLinearity];
  if (!activation) throw new TrainingOptionsError('non_linearity', `'${o.nonLinearity}' is not one of the adapters library's non-linearities (${Object.keys(ACTIVATIONS).join(', ')})`);
  const width = Math.max(1, pythonFloorDiv(arch.hiddenSize, o.reductionFactor));
  if (width > maxWidth) throw new TrainingOptionsError('reduction_factor', `${o.reductionFactor} makes the bottleneck hidden_size ${arch.hiddenSize} // ${o.reductionFactor} = ${width} wide, more than the server's max bottleneck ${maxWidth}`);
  const locations: Location[] = o.placement === 'both' ? ['attention', 'mlp'] : [o.placement];
  const modules = arch.blocks.flatMap((_, layer) => locations.map((location) => ({ layer, location, prefix: `${layerPath(arch, layer)}.${LOCATION_MODULE[location]}.adapters.${ADAPTER_NAME}` })));
  return { ...o, width, activation, modules };
}

/** The four tensors of one Adapter module (nn.Linear layouts). */
const downWeight = (prefix: string) => `${prefix}.adapter_down.0.weight`;
const downBias = (prefix: string) => `${prefix}.adapter_down.0.bias`;
const upWeight = (prefix: string) => `${prefix}.adapter_up.weight`;
const upBias = (prefix: string) => `${prefix}.adapter_up.bias`;

export const bottleneckTraining: TrainableKind<BottleneckTrainingOptions, BottleneckLayout> = {
  name: 'bottleneck',
  deltaKind: 'bottleneck',
  graphVersion: 1,
  options: BottleneckTrainingOptions,

  resolve: (arch, o, limits) =>
    bottleneckLayout(arch, { reductionFactor: o.reduction_factor, nonLinearity: o.non_linearity.toLowerCase(), placement: o.placement, initWeights: o.init_weights }, limits.maxBottleneck),

  params(arch, l): TrainableParam[] {
    const H = arch.hiddenSize;
    return l.modules.flatMap(({ prefix }) => [
      { name: downWeight(prefix), shape: [l.width, H] },
      { name: downBias(prefix), shape: [l.width] },
      { name: upWeight(prefix), shape: [H, l.width] },
      { name: upBias(prefix), shape: [H] },
    ]);
  },

  init(arch, l, seed) {
    const draw = initializer(l.initWeights, arch.hiddenSize, seed);
    return new Map(bottleneckTraining.params(arch, l).map(({ name, shape }) => [name, Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => draw(name))]));
  },

  fromDelta(files, arch) {
    const { layout, tensors } = readBottleneckAdapter(files, arch);
    const params = new Map<string, Float32Array>();
    for (const { name } of bottleneckTraining.params(arch, layout)) params.set(name, tensors.get(name)!);
    return { options: layout, params };
  },

  hooks: (arch, l) => bottleneckTrainingHooks(l),

  write(arch, l, params, meta) {
    const tensors: Parameters<typeof encodeSafetensors>[0] = {};
    for (const { name, shape } of bottleneckTraining.params(arch, l)) tensors[name] = { dtype: 'F32', shape, data: params.get(name)! };
    return { config: configText(arch, l, meta.baseModel), weights: encodeSafetensors(tensors, { format: 'pt' }) };
  },
};

/** Each value's draw for the chosen init_weights (biases are 0 in every scheme; mam_adapter's up projection too). */
function initializer(scheme: BottleneckLayout['initWeights'], hidden: number, seed: number): (name: string) => number {
  const normal = seededNormal(seed);
  const uniform = mulberry32(seed);
  const truncated = () => {
    // trunc_normal_(mean 0, std 0.01, a = -0.02, b = 0.02): a normal draw, redrawn outside [a, b].
    for (;;) {
      const v = 0.01 * normal();
      if (Math.abs(v) <= 0.02) return v;
    }
  };
  return (name) => {
    if (name.endsWith('.bias')) return 0;
    const down = name.endsWith('.adapter_down.0.weight');
    if (scheme === 'bert') return 0.02 * normal();
    if (scheme === 'houlsby') return truncated();
    return down ? (2 * uniform() - 1) / Math.sqrt(hidden) : 0;
  };
}

/** The adapter's sum in place of the sub-block's residual add, where a module sits; the base's add elsewhere. */
function bottleneckTrainingHooks(l: BottleneckLayout): TrainingHooks {
  const at = new Map(l.modules.map((m) => [`${m.layer}.${m.location}`, m.prefix]));
  return {
    kind: 'bottleneck',
    blockOutput(ctx, { layer, location }, output, residual) {
      const { g } = ctx;
      const prefix = at.get(`${layer}.${location}`);
      if (!prefix) return g.apply('Add', [residual, output]);
      const x = g.apply('Add', [output, residual]); // [N, H]: original_ln_before adds the residual first
      const down = activate(ctx, l.activation, g.apply('Gemm', [x, ctx.param(downWeight(prefix)), ctx.param(downBias(prefix))], { transB: 1 })); // [N, w]
      const up = g.apply('Gemm', [down, ctx.param(upWeight(prefix)), ctx.param(upBias(prefix))], { transB: 1 }); // [N, H] (scaling 1.0)
      return g.apply('Add', [g.apply('Add', [up, output]), residual]); // [N, H]: residual_before_ln, then original_ln_after
    },
  };
}

/** The non-linearity as transformers' ACT2FN (or the library's leakyrelu) computes it, from ops with gradient rules. */
function activate(ctx: TrainingHookContext, activation: Activation, z: string): string {
  const { g } = ctx;
  const times = (value: string, k: number) => g.apply('Mul', [value, g.scalar(k, value)]);
  switch (activation) {
    case 'relu':
      return g.apply('Relu', [z]);
    case 'gelu': // nn.functional.gelu: x · 0.5 · (1 + erf(x · M_SQRT1_2))
      return g.apply('Mul', [times(z, 0.5), g.apply('Add', [g.scalar(1, z), g.apply('Erf', [times(z, Math.SQRT1_2)])])]);
    case 'gelu_tanh': {
      const inner = times(g.apply('Add', [z, times(g.apply('Mul', [g.apply('Mul', [z, z]), z]), 0.044715)]), Math.sqrt(2 / Math.PI));
      return g.apply('Mul', [times(z, 0.5), g.apply('Add', [g.scalar(1, z), g.apply('Tanh', [inner])])]);
    }
    case 'silu':
      return g.apply('Mul', [z, g.apply('Sigmoid', [z])]);
    case 'quick_gelu':
      return g.apply('Mul', [z, g.apply('Sigmoid', [times(z, 1.702)])]);
    case 'tanh':
      return g.apply('Tanh', [z]);
    case 'sigmoid':
      return g.apply('Sigmoid', [z]);
    case 'leaky_relu': // F.leaky_relu(x, 0.01) = relu(x) − 0.01 · relu(−x), exactly (x · 0.01 rounds the same either sign)
      return g.apply('Sub', [g.apply('Relu', [z]), times(g.apply('Relu', [g.apply('Neg', [z])]), 0.01)]);
    case 'identity':
      return z;
  }
}

/** transformers' class names, for the file's model_class (the library writes the model's class). */
const MODEL_CLASS: Record<string, string> = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM', gpt2: 'GPT2LMHeadModel' };

/**
 * adapter_config.json as `model.save_adapter` writes it (configuration/model_adapters_config.py
 * build_full_config; json.dump(sort_keys=True, indent=2)): the full BnConfig (asdict of
 * SeqBnConfig with the options) under `config`, then the model's type, hidden size, class and name.
 */
function configText(arch: ArchitectureSpec, l: BottleneckLayout, baseModel: string): string {
  const config = {
    adapter_residual_before_ln: false, cross_adapter: false, dropout: 0.0, factorized_phm_W: true, factorized_phm_rule: false, hypercomplex_nonlinearity: 'glorot-uniform',
    init_weights: l.initWeights, init_weights_seed: null, inv_adapter: null, inv_adapter_reduction_factor: null, is_parallel: false, learn_phm: true, leave_out: [],
    ln_after: false, ln_before: false, mh_adapter: l.placement !== 'mlp', non_linearity: l.nonLinearity, original_ln_after: true, original_ln_before: true,
    output_adapter: l.placement !== 'attention', phm_bias: true, phm_c_init: 'normal', phm_dim: 4, phm_init_range: 0.0001, phm_layer: false, phm_rank: 1,
    reduction_factor: l.reductionFactor, residual_before_ln: true, scaling: 1.0, shared_W_phm: false, shared_phm_rule: true, stochastic_depth: 0.0, use_gating: false,
  };
  const file = { config, hidden_size: arch.hiddenSize, model_class: MODEL_CLASS[arch.family] ?? null, model_name: baseModel, model_type: arch.family, name: ADAPTER_NAME, version: 'adapters.1.2.0' };
  // Python writes these floats as 1.0 / 0.0; the library checks isinstance(scaling, float), so an integer 1 would be refused.
  return JSON.stringify(file, null, 2).replace(/^(\s*"(?:scaling|dropout|stochastic_depth)": -?\d+)(,?)$/gm, '$1.0$2');
}

registerTrainableKind(bottleneckTraining);
