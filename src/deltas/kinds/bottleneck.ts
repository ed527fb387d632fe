/**
 * Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020; He et al. 2021's parallel
 * form) in the AdapterHub `adapters` library's format: adapter_config.json with a BnConfig under
 * `config`, and the library's tensors (read by ../adapterhub/). The library calls each adapter
 * layer with the sub-block's output o (after o_proj / down_proj / c_proj), its residual r, and
 * layer_norm=None on every family served here (models/{llama,mistral,gpt2}/modeling_*.py; qwen2
 * through its plugin interface, whose hooks behave the same for the options served), so that with
 * bottleneck(x) = scaling · (W_u act(W_d LN_b?(x) + b_d) + b_u):
 *
 *   sequential (methods/modeling.py Adapter.pre_forward / forward / post_forward):
 *     x   = original_ln_before ? o + r : o
 *     res = residual_before_ln ? o : x
 *     out = adapter_residual_before_ln ? LN_a?(u + res) : LN_a?(u) + res      where u = bottleneck(x)
 *   parallel (ParallelAdapter):  x = r,  out = LN_a?(bottleneck(r)) + o
 *   result = original_ln_after ? out + r : out
 *
 * Served: mh_adapter / output_adapter, leave_out, reduction_factor (a number or a per-layer
 * mapping; width = hidden_size // factor ≤ --max-bottleneck), non_linearity (relu, gelu,
 * gelu_python, gelu_new, gelu_fast, gelu_pytorch_tanh, silu, swish, tanh, sigmoid, quick_gelu,
 * leakyrelu, linear), original_ln_before, original_ln_after (false is refused on qwen2, as the
 * library refuses it there), residual_before_ln true/false, ln_before, ln_after,
 * adapter_residual_before_ln, is_parallel, scaling (a float, 'learned' or 'channel'); seq_bn
 * (Pfeiffer), double_seq_bn (Houlsby), par_bn and scaled_par_bn are combinations of these, also
 * accepted by preset name.
 * Refused by name: use_gating (the gate averages over the whole sequence, so it is not causal),
 * phm_layer (Compacter), inv_adapter (invertible adapters), residual_before_ln 'post_add' (the
 * library fails on these models with it). Type-checked only (no effect on inference): dropout,
 * stochastic_depth, init_weights(_seed), cross_adapter, inv_adapter_reduction_factor, phm_*.
 *
 * Slot layout, with the width zero-padded to B = --max-bottleneck (exact: a padded column of W_d
 * and its bias are 0, so its activation is act(0), which the padded row of W_u, all 0, multiplies
 * by 0 whatever act(0) is):
 *   bottleneck.options            [1, 8]   activation code and the option flags (OPTION)
 *   bottleneck.<L>.<loc>.on       [1, 1]   1 where the adapter has a module at layer L, location loc
 *   bottleneck.<L>.<loc>.down     [H, B]   W_dᵀ          .down_bias [1, B]  b_d
 *   bottleneck.<L>.<loc>.up       [B, H]   W_uᵀ          .vectors  [6, H]   b_u, scaling, LN_b w/b, LN_a w/b
 * Tokens are grouped by slot as LoRA groups them (lora.ts loraGrouping), so each resident
 * adapter is read once per pass; every option is a per-slot selection (Where), and a token
 * without an adapter (or at a layer its adapter leaves out) gets exactly the base's r + o.
 */
import type { DeltaLowering, HookContext } from '../../model/delta-hooks.js';
import { inlineTensor } from '../../graph/ir.js';
import { DeltaValidationError } from '../errors.js';
import { registerDeltaKind, type DeltaKind, type FeedInput, type FeedTensor, type ParsedDelta, type SlotTensor } from '../kind.js';
import { isBottleneckConfig, readBottleneckConfig, type Activation, type BottleneckSettings } from '../adapterhub/bottleneck-config.js';
import { loadBottleneckModules, type BottleneckModule, type Location } from '../adapterhub/bottleneck-weights.js';
import { loraGrouping } from './lora.js';

/** Activation codes in bottleneck.options[0]. */
export const ACTIVATION_CODES: readonly Activation[] = ['relu', 'gelu', 'gelu_tanh', 'silu', 'tanh', 'sigmoid', 'quick_gelu', 'leaky_relu', 'identity'];
/** Positions in bottleneck.options of the per-adapter flags (1 or 0). */
export const OPTION = { activation: 0, originalLnBefore: 1, originalLnAfter: 2, residualBeforeLn: 3, lnBefore: 4, lnAfter: 5, adapterResidualBeforeLn: 6, parallel: 7 } as const;
export const OPTIONS = 'bottleneck.options';
const OPTION_COUNT = 8;
/** Rows of a module's `vectors` tensor. */
const VECTOR = { upBias: 0, scale: 1, lnBeforeWeight: 2, lnBeforeBias: 3, lnAfterWeight: 4, lnAfterBias: 5 } as const;
export const moduleTensor = (layer: number, location: Location, part: 'on' | 'down' | 'down_bias' | 'up' | 'vectors') => `bottleneck.${layer}.${location}.${part}`;
const GATHER = 'bottleneck_gather';
const SCATTER = 'bottleneck_scatter';
const USED = 'bottleneck_used';
const LOCATIONS: readonly Location[] = ['attention', 'mlp'];

export const bottleneck: DeltaKind = {
  name: 'bottleneck',
  family: 'addition',
  format: "AdapterHub bottleneck adapter (adapter_config.json with a BnConfig 'config')",
  detect: isBottleneckConfig,

  parse({ name, config, weights, arch, limits }): ParsedDelta {
    const problems: string[] = [];
    const settings = readBottleneckConfig(config, arch, problems);
    if (problems.length) throw new DeltaValidationError(name, problems);
    const warnings = [...settings.warnings];
    const modules = loadBottleneckModules(settings, weights, arch, limits.maxBottleneck, problems, warnings);
    if (!problems.length && modules.length === 0) problems.push('adapter_config.json: the config places no adapter in any layer (mh_adapter and output_adapter false, or leave_out lists every layer)');
    if (problems.length) throw new DeltaValidationError(name, problems);
    const tensors = toSlotLayout(modules, settings, arch.hiddenSize, limits.maxBottleneck);
    return { kind: 'bottleneck', name, tensors, virtualTokens: 0, summary: summaryOf(modules, settings), warnings };
  },

  slotTensors(arch, limits): SlotTensor[] {
    const H = arch.hiddenSize;
    const B = limits.maxBottleneck;
    const perModule = (layer: number, location: Location): SlotTensor[] => [
      { name: moduleTensor(layer, location, 'on'), length: 1, neutral: 0, dims: [1, 1] },
      { name: moduleTensor(layer, location, 'down'), length: H * B, neutral: 0, dims: [H, B] },
      { name: moduleTensor(layer, location, 'down_bias'), length: B, neutral: 0, dims: [1, B] },
      { name: moduleTensor(layer, location, 'up'), length: B * H, neutral: 0, dims: [B, H] },
      { name: moduleTensor(layer, location, 'vectors'), length: 6 * H, neutral: 0, dims: [6, H] },
    ];
    const modules = arch.blocks.flatMap((_, layer) => LOCATIONS.flatMap((location) => perModule(layer, location)));
    return [{ name: OPTIONS, length: OPTION_COUNT, neutral: 0, dims: [1, OPTION_COUNT] }, ...modules];
  },

  lowering: (arch, limits) => bottleneckLowering(limits.maxBottleneck),

  feeds({ tokenSlots, slotCount }: FeedInput): FeedTensor[] {
    const { gather, cells, scatter } = loraGrouping(tokenSlots, 0, slotCount);
    return [
      { name: GATHER, dtype: 'int64', data: gather, dims: [slotCount, cells] },
      { name: SCATTER, dtype: 'int64', data: scatter, dims: [tokenSlots.length] },
      { name: USED, dtype: 'bool', data: Array.from(tokenSlots, (s) => (s >= 0 ? 1 : 0)), dims: [tokenSlots.length, 1] },
    ];
  },
};

function bottleneckLowering(B: number): DeltaLowering {
  return {
    kind: 'bottleneck',
    /** r + o where the token's row has no adapter at this place, else the adapter layer's result (module doc). */
    blockOutput(ctx: HookContext, { layer, location }, output: string, residual: string): string {
      const { b } = ctx;
      const H = ctx.arch.hiddenSize;
      const base = b.op1('Add', [residual, output]); // [T, H], the base's residual add
      const gather = ctx.input(GATHER, 'int64', ['bottleneck_slots', 'bottleneck_cells']);
      const o = b.op1('Gather', [output, gather], { axis: 0 }); // [S, C, H]
      const r = b.op1('Gather', [residual, gather], { axis: 0 }); // [S, C, H]
      const sum = b.op1('Add', [o, r]); // [S, C, H]
      const on = b.op1('Cast', [ctx.input(moduleTensor(layer, location, 'on'), 'float32', ['bottleneck_slots', 1, 1])], { to: BOOL }); // [S, 1, 1]
      const adapted = b.op1('Where', [on, adapterLayer(ctx, layer, location, B, { o, r, sum }), sum]); // [S, C, H]
      const flat = b.op1('Reshape', [adapted, b.constant('int64', [2], [-1, H])]); // [S*C, H]
      const zero = ctx.shared('bottleneck.zero', () => b.initializer('bottleneck_zero_row', inlineTensor('float32', [1, H], new Float32Array(H))));
      const scattered = b.op1('Gather', [b.op1('Concat', [flat, zero], { axis: 0 }), ctx.input(SCATTER, 'int64', ['tokens'])], { axis: 0 }); // [T, H]
      return b.op1('Where', [ctx.input(USED, 'bool', ['tokens', 1]), scattered, base]); // selected, never masked
    },
  };
}

/** One location's adapter on grouped tokens: Adapter / ParallelAdapter pre_forward, forward, post_forward, every option a per-slot selection. */
function adapterLayer(ctx: HookContext, layer: number, location: Location, B: number, v: { o: string; r: string; sum: string }): string {
  const { b } = ctx;
  const H = ctx.arch.hiddenSize;
  const f = (option: number) => flag(ctx, option);
  const input = (part: 'down' | 'down_bias' | 'up' | 'vectors', dims: number[]) => ctx.input(moduleTensor(layer, location, part), 'float32', ['bottleneck_slots', ...dims]);
  const [upBias, scale, lnBeforeW, lnBeforeB, lnAfterW, lnAfterB] = b.op('Split', [input('vectors', [6, H]), b.constant('int64', [6], [1, 1, 1, 1, 1, 1])], { axis: 1 }, { outputs: 6 }) as string[]; // [S, 1, H] each
  const x = b.op1('Where', [f(OPTION.parallel), v.r, b.op1('Where', [f(OPTION.originalLnBefore), v.sum, v.o])]); // [S, C, H]
  const res = b.op1('Where', [f(OPTION.residualBeforeLn), v.o, x]); // [S, C, H]
  const xn = b.op1('Where', [f(OPTION.lnBefore), layerNorm(ctx, x, lnBeforeW!, lnBeforeB!), x]); // [S, C, H]
  const down = activate(ctx, b.op1('Add', [b.op1('MatMul', [xn, input('down', [H, B])]), input('down_bias', [1, B])])); // [S, C, B]
  const up = b.op1('Mul', [b.op1('Add', [b.op1('MatMul', [down, input('up', [B, H])]), upBias!]), scale!]); // [S, C, H]
  const residualFirst = f(OPTION.adapterResidualBeforeLn);
  const beforeLn = b.op1('Where', [residualFirst, b.op1('Add', [up, res]), up]); // [S, C, H]
  const normed = b.op1('Where', [f(OPTION.lnAfter), layerNorm(ctx, beforeLn, lnAfterW!, lnAfterB!), beforeLn]); // [S, C, H]
  const out = b.op1('Where', [residualFirst, normed, b.op1('Add', [normed, res])]); // [S, C, H]
  return b.op1('Where', [f(OPTION.originalLnAfter), b.op1('Add', [out, v.r]), out]); // [S, C, H]
}

const BOOL = 9;

/** bottleneck.options column `index` as [S, 1, 1]: the activation code (float), or a flag (bool); once per graph. */
function flag(ctx: HookContext, index: number): string {
  return ctx.shared(`bottleneck.option.${index}`, () => {
    const { b } = ctx;
    const options = ctx.input(OPTIONS, 'float32', ['bottleneck_slots', 1, OPTION_COUNT]);
    const column = b.op1('Slice', [options, b.constant('int64', [1], [index]), b.constant('int64', [1], [index + 1]), b.constant('int64', [1], [2])]); // [S, 1, 1]
    return index === OPTION.activation ? column : b.op1('Cast', [column], { to: BOOL });
  });
}

/** The slot's nonlinearity on z [S, C, B]: every supported one, selected by the slot's code (identity last). */
function activate(ctx: HookContext, z: string): string {
  const { b } = ctx;
  const sigmoidTimes = (scaled: string) => b.op1('Mul', [z, b.op1('Sigmoid', [scaled])]);
  const compute: Record<Activation, () => string> = {
    relu: () => b.op1('Relu', [z]),
    gelu: () => b.op1('Gelu', [z], {}, { domain: 'com.microsoft' }),
    gelu_tanh: () => b.op1('FastGelu', [z], {}, { domain: 'com.microsoft' }),
    silu: () => sigmoidTimes(z),
    tanh: () => b.op1('Tanh', [z]),
    sigmoid: () => b.op1('Sigmoid', [z]),
    quick_gelu: () => sigmoidTimes(b.op1('Mul', [z, b.constant('float32', [], [1.702])])),
    leaky_relu: () => b.op1('LeakyRelu', [z], { alpha: { float: 0.01 } }),
    identity: () => z,
  };
  let out = compute.identity();
  for (let code = ACTIVATION_CODES.length - 2; code >= 0; code--) {
    const is = ctx.shared(`bottleneck.activation.${code}`, () => b.op1('Equal', [flag(ctx, OPTION.activation), b.constant('float32', [], [code])])); // [S, 1, 1]
    out = b.op1('Where', [is, compute[ACTIVATION_CODES[code]!](), out]);
  }
  return out;
}

/** The adapter's own nn.LayerNorm (eps 1e-5) with per-slot weight and bias [S, 1, H]. */
function layerNorm(ctx: HookContext, x: string, weight: string, bias: string): string {
  const { b } = ctx;
  const H = ctx.arch.hiddenSize;
  const ones = b.constant('float32', [H], Array<number>(H).fill(1));
  const zeros = b.constant('float32', [H], Array<number>(H).fill(0));
  const normalized = b.op1('LayerNormalization', [x, ones, zeros], { axis: -1, epsilon: { float: 1e-5 } }); // [S, C, H]
  return b.op1('Add', [b.op1('Mul', [normalized, weight]), bias]);
}

function summaryOf(modules: BottleneckModule[], settings: BottleneckSettings): ParsedDelta['summary'] {
  let params = 0;
  for (const m of modules) {
    params += m.down.length + m.downBias.length + m.up.length + m.upBias.length + (typeof m.scale === 'number' ? 0 : m.scale.length);
    params += 2 * m.upBias.length * (Number(m.lnBefore !== undefined) + Number(m.lnAfter !== undefined));
  }
  return { modules: modules.length, width: Math.max(...modules.map((m) => m.width)), params, activation: settings.activationName, parallel: settings.parallel };
}

/**
 * The adapter in slot layout for width B; pure, so the loader thread runs it. Modules share one
 * buffer (one allocation, one transfer between threads).
 *
 * @example toSlotLayout(modules, settings, 64, 16).get('bottleneck.0.mlp.down')!.length // 64 * 16
 */
export function toSlotLayout(modules: readonly BottleneckModule[], settings: BottleneckSettings, H: number, B: number): Map<string, Float32Array> {
  const buffer = new Float32Array(OPTION_COUNT + modules.length * (1 + 2 * H * B + B + 6 * H));
  let offset = 0;
  const take = (length: number) => buffer.subarray(offset, (offset += length));
  const out = new Map<string, Float32Array>([[OPTIONS, take(OPTION_COUNT)]]);
  out.get(OPTIONS)!.set(optionVector(settings));
  for (const m of modules) {
    const part = (name: 'on' | 'down' | 'down_bias' | 'up' | 'vectors', length: number) => {
      const view = take(length);
      out.set(moduleTensor(m.layer, m.location, name), view);
      return view;
    };
    part('on', 1).fill(1);
    layOutModule(m, H, B, { down: part('down', H * B), downBias: part('down_bias', B), up: part('up', B * H), vectors: part('vectors', 6 * H) });
  }
  return out;
}

/** The flags of bottleneck.options; a parallel adapter's residual is o and its output takes no residual before LN_a. */
function optionVector(s: BottleneckSettings): number[] {
  const v = Array<number>(OPTION_COUNT).fill(0);
  v[OPTION.activation] = ACTIVATION_CODES.indexOf(s.activation);
  v[OPTION.originalLnBefore] = Number(s.originalLnBefore);
  v[OPTION.originalLnAfter] = Number(s.originalLnAfter);
  v[OPTION.residualBeforeLn] = Number(s.residualBeforeLn || s.parallel);
  v[OPTION.lnBefore] = Number(s.lnBefore);
  v[OPTION.lnAfter] = Number(s.lnAfter);
  v[OPTION.adapterResidualBeforeLn] = Number(s.adapterResidualBeforeLn && !s.parallel);
  v[OPTION.parallel] = Number(s.parallel);
  return v;
}

/** nn.Linear layouts → slot layout, into zeroed arrays: W_d [w, H] → [H, B], W_u [H, w] → [B, H]. */
function layOutModule(m: BottleneckModule, H: number, B: number, to: { down: Float32Array; downBias: Float32Array; up: Float32Array; vectors: Float32Array }): void {
  const w = m.width;
  for (let j = 0; j < w; j++) for (let i = 0; i < H; i++) to.down[i * B + j] = m.down[j * H + i]!;
  to.downBias.set(m.downBias);
  for (let o = 0; o < H; o++) for (let j = 0; j < w; j++) to.up[j * H + o] = m.up[o * w + j]!;
  const row = (r: number) => to.vectors.subarray(r * H, (r + 1) * H);
  row(VECTOR.upBias).set(m.upBias);
  if (typeof m.scale === 'number' || m.scale.length === 1) row(VECTOR.scale).fill(typeof m.scale === 'number' ? m.scale : m.scale[0]!);
  else row(VECTOR.scale).set(m.scale);
  if (m.lnBefore) row(VECTOR.lnBeforeWeight).set(m.lnBefore.weight), row(VECTOR.lnBeforeBias).set(m.lnBefore.bias);
  if (m.lnAfter) row(VECTOR.lnAfterWeight).set(m.lnAfter.weight), row(VECTOR.lnAfterBias).set(m.lnAfter.bias);
}

registerDeltaKind(bottleneck);
