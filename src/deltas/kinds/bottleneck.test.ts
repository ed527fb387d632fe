import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeArchitecture } from '../../model/families/index.js';
import { encodeSafetensors } from '../../model/safetensors.js';
import type { ArchitectureSpec } from '../../model/architecture.js';
import { DeltaValidationError } from '../errors.js';
import { detectKind, type DeltaLimits, type ParsedDelta } from '../kind.js';
import { parseDelta } from '../parse.js';
import { pythonFloorDiv } from '../adapterhub/bottleneck-config.js';
import { ACTIVATION_CODES, OPTION, OPTIONS, moduleTensor } from './bottleneck.js';

const llamaConfig = { model_type: 'llama', hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, intermediate_size: 128, num_hidden_layers: 2, vocab_size: 300 };
const LLAMA = describeArchitecture(llamaConfig, new Set(['lm_head.weight']), 'config.json');
const QWEN2 = describeArchitecture({ ...llamaConfig, model_type: 'qwen2' }, new Set(), 'config.json');
const GPT2 = describeArchitecture({ model_type: 'gpt2', n_embd: 64, n_head: 4, n_layer: 2, vocab_size: 300 }, new Set(['transformer.wte.weight']), 'config.json');
const LIMITS: DeltaLimits = { maxRank: 16, maxVirtualTokens: 64, maxBottleneck: 16 };
const H = 64;

type Tensors = Parameters<typeof encodeSafetensors>[0];
type Json = Record<string, unknown>;

const values = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 131 + i * 0.37) * 0.1);

/** A Pfeiffer (seq_bn) adapter as save_adapter writes it, with `config` fields over the preset and `edit` applied to its tensors. */
function adapter(config: Json = {}, edit: (t: Tensors) => void = () => {}, top: Json = {}, prefix = 'model.layers'): { config: string; weights: Uint8Array } {
  const bn: Json = { mh_adapter: false, output_adapter: true, reduction_factor: 16, non_linearity: 'relu', original_ln_before: true, original_ln_after: true, residual_before_ln: true, ...config };
  const tensors: Tensors = {};
  let seed = 1;
  for (const layer of [0, 1]) {
    for (const [flag, module] of [['mh_adapter', 'attention_adapters'], ['output_adapter', 'output_adapters']] as const) {
      if (!bn[flag]) continue;
      const at = `${prefix}.${layer}.${module}.adapters.sst2`;
      const w = H / 16;
      tensors[`${at}.adapter_down.0.weight`] = { dtype: 'F32', shape: [w, H], data: values(w * H, seed++) };
      tensors[`${at}.adapter_down.0.bias`] = { dtype: 'F32', shape: [w], data: values(w, seed++) };
      tensors[`${at}.adapter_up.weight`] = { dtype: 'F32', shape: [H, w], data: values(H * w, seed++) };
      tensors[`${at}.adapter_up.bias`] = { dtype: 'F32', shape: [H], data: values(H, seed++) };
    }
  }
  edit(tensors);
  const file = { config: bn, hidden_size: H, model_class: 'LlamaForCausalLM', model_name: null, model_type: 'llama', name: 'sst2', version: 'adapters.1.2.0', ...top };
  return { config: JSON.stringify(file), weights: encodeSafetensors(tensors) };
}

const KEY = (layer: number, param: string, module = 'output_adapters') => `model.layers.${layer}.${module}.adapters.sst2.${param}`;

function parse(files: { config: string; weights: Uint8Array }, arch: ArchitectureSpec = LLAMA): ParsedDelta {
  return parseDelta('sst2', files, arch, LIMITS);
}

/** The problems a parse reports (it must fail). */
function problems(files: { config: string; weights: Uint8Array }, arch: ArchitectureSpec = LLAMA): string[] {
  try {
    parse(files, arch);
  } catch (err) {
    if (err instanceof DeltaValidationError) return err.problems;
    throw err;
  }
  assert.fail('the adapter was accepted');
}

function assertRefused(files: { config: string; weights: Uint8Array }, pattern: RegExp, arch: ArchitectureSpec = LLAMA): void {
  const found = problems(files, arch);
  assert.ok(found.some((p) => pattern.test(p)), `no problem matches ${pattern}: ${JSON.stringify(found)}`);
}

describe('bottleneck adapters: detection', () => {
  it('detects AdapterHub BnConfig files and bottleneck preset names, and nothing else', () => {
    assert.equal(detectKind(JSON.parse(adapter().config))?.name, 'bottleneck');
    assert.equal(detectKind({ config: 'double_seq_bn', name: 'x' })?.name, 'bottleneck');
    assert.equal(detectKind({ config: { architecture: 'bottleneck', reduction_factor: 8 } })?.name, 'bottleneck');
    assert.equal(detectKind({ config: { mh_adapter: true } })?.name, 'bottleneck', 'an incomplete BnConfig is told what it lacks');
    assert.equal(detectKind({ config: { architecture: 'lora', r: 8 } }), undefined, "the adapters library's LoRA is not a bottleneck adapter");
    assert.equal(detectKind({ config: 'compacter' }), undefined);
    assert.equal(detectKind({ config: { architecture: 'union', configs: [] } }), undefined);
    assert.equal(detectKind({ peft_type: 'LORA', config: { reduction_factor: 2 } })?.name, 'lora');
  });
});

describe('bottleneck adapters: parsing into slot layout', () => {
  it('lays a Pfeiffer adapter out: W_d transposed and zero-padded to --max-bottleneck, options, modules switched on', () => {
    const files = adapter();
    const delta = parse(files);
    assert.equal(delta.kind, 'bottleneck');
    assert.deepEqual(delta.summary, { modules: 2, width: 4, params: 2 * (4 * H + 4 + H * 4 + H), activation: 'relu', parallel: false });
    assert.deepEqual(delta.warnings, []);
    const options = delta.tensors.get(OPTIONS)!;
    assert.equal(options[OPTION.activation], ACTIVATION_CODES.indexOf('relu'));
    assert.deepEqual([OPTION.originalLnBefore, OPTION.originalLnAfter, OPTION.residualBeforeLn, OPTION.lnBefore, OPTION.parallel].map((i) => options[i]), [1, 1, 1, 0, 0]);
    assert.equal(delta.tensors.get(moduleTensor(1, 'mlp', 'on'))![0], 1);
    assert.equal(delta.tensors.get(moduleTensor(1, 'attention', 'on')), undefined, 'no mh_adapter: the attention slot keeps its neutral (off)');
    const down = delta.tensors.get(moduleTensor(1, 'mlp', 'down'))!; // [H, B]
    const source = values(4 * H, 5); // layer 1's adapter_down.0.weight [4, H]
    for (let i = 0; i < H; i++) for (let j = 0; j < 16; j++) assert.equal(down[i * 16 + j], j < 4 ? source[j * H + i] : 0, `down[${i}, ${j}]`);
    const vectors = delta.tensors.get(moduleTensor(0, 'mlp', 'vectors'))!;
    assert.ok(vectors.subarray(H, 2 * H).every((v) => v === 1), 'scaling 1.0 fills the scale row');
  });

  it('accepts keys without the model prefix, gpt2 layer paths, preset names, and old files whose "gelu" meant gelu_new', () => {
    assert.equal(parse(adapter({}, undefined, {}, 'layers')).summary['modules'], 2);
    assert.equal(parse(adapter({}, undefined, { model_type: 'gpt2', model_class: 'GPT2LMHeadModel' }, 'transformer.h'), GPT2).summary['modules'], 2);
    const houlsby = JSON.stringify({ config: 'double_seq_bn', name: 'sst2', hidden_size: H });
    const tensors = adapter({ mh_adapter: true }).weights;
    assert.deepEqual(parse({ config: houlsby, weights: tensors }).summary, { modules: 4, width: 4, params: 4 * (8 * H + 4 + H), activation: 'swish', parallel: false });
    const legacy = JSON.parse(adapter({ non_linearity: 'gelu' }).config);
    delete legacy.version;
    assert.equal(parse({ config: JSON.stringify(legacy), weights: adapter().weights }).summary['activation'], 'gelu_new');
    assert.equal(parse(adapter({ non_linearity: 'gelu' })).summary['activation'], 'gelu');
  });

  it('ignores, with a warning, tensors the library would ignore: unknown keys, left-out layers, disabled locations', () => {
    const files = adapter({ leave_out: [1] }, (t) => {
      t['model.layers.0.attention_adapters.adapters.sst2.adapter_up.bias'] = { dtype: 'F32', shape: [H], data: values(H, 9) };
      t['lm_head.weight'] = { dtype: 'F32', shape: [2, 2], data: values(4, 9) };
    });
    const delta = parse(files);
    assert.equal(delta.summary['modules'], 1);
    for (const key of [KEY(1, 'adapter_up.weight'), KEY(0, 'adapter_up.bias', 'attention_adapters'), 'lm_head.weight']) assert.ok(delta.warnings.some((w) => w.startsWith(`${key}: ignored`)), `${key}: ${JSON.stringify(delta.warnings)}`);
  });

  it('follows reduction_factor per layer, and Python float floor division', () => {
    const files = adapter({ reduction_factor: { '1': 8, default: 16 } }, (t) => {
      t[KEY(1, 'adapter_down.0.weight')] = { dtype: 'F32', shape: [8, H], data: values(8 * H, 1) };
      t[KEY(1, 'adapter_down.0.bias')] = { dtype: 'F32', shape: [8], data: values(8, 1) };
      t[KEY(1, 'adapter_up.weight')] = { dtype: 'F32', shape: [H, 8], data: values(8 * H, 1) };
    });
    assert.equal(parse(files).summary['width'], 8);
    assert.equal(pythonFloorDiv(64, 0.1), 639, 'Python: 64 // 0.1 == 639.0');
    assert.equal(pythonFloorDiv(1, 0.1), 9);
    assert.equal(pythonFloorDiv(64, 16), 4);
    assert.equal(pythonFloorDiv(64, 1.5), 42);
  });
});

describe('bottleneck adapters: every bad field or tensor is a problem naming it', () => {
  const cases: [string, Json, RegExp][] = [
    ['mh_adapter missing', { mh_adapter: undefined }, /config\.mh_adapter is required/],
    ['reduction_factor missing', { reduction_factor: undefined }, /config\.reduction_factor is required/],
    ['mh_adapter not a boolean', { mh_adapter: 'yes' }, /config\.mh_adapter must be true or false/],
    ['reduction_factor 0', { reduction_factor: 0 }, /config\.reduction_factor must be a number greater than 0/],
    ['reduction_factor a string', { reduction_factor: 'x' }, /config\.reduction_factor must be a number greater than 0/],
    ['reduction_factor bad key', { reduction_factor: { first: 2, default: 16 } }, /reduction_factor key "first"/],
    ['reduction_factor without the layer', { reduction_factor: { '0': 16 } }, /no entry for layer 1 and no "default"/],
    ['non_linearity unknown', { non_linearity: 'mish' }, /config\.non_linearity "mish" \(a string\) is not supported/],
    ['non_linearity a number', { non_linearity: 3 }, /config\.non_linearity must be a string/],
    ['scaling unknown', { scaling: 'vector' }, /config\.scaling must be a finite number/],
    ['scaling huge', { scaling: 1e7 }, /config\.scaling must be at most 1000000/],
    ['residual_before_ln post_add', { residual_before_ln: 'post_add' }, /residual_before_ln 'post_add' is not supported/],
    ['residual_before_ln 3', { residual_before_ln: 3 }, /residual_before_ln must be true, false or 'post_add'/],
    ['use_gating', { use_gating: true }, /use_gating true is not supported/],
    ['phm_layer', { phm_layer: true }, /phm_layer true is not supported/],
    ['inv_adapter', { inv_adapter: 'nice' }, /inv_adapter "nice" \(a string\) is not supported/],
    ['dropout', { dropout: 2 }, /config\.dropout must be at most 1/],
    ['stochastic_depth', { stochastic_depth: -1 }, /config\.stochastic_depth must be at least 0/],
    ['init_weights', { init_weights: 'xavier' }, /config\.init_weights must be one of/],
    ['leave_out', { leave_out: '0' }, /config\.leave_out must be a list of layer indices/],
    ['ln_before a string', { ln_before: 'true' }, /config\.ln_before must be true or false/],
    ['phm_dim', { phm_dim: 0 }, /config\.phm_dim must be at least 1/],
    ['architecture', { architecture: 'bottleneck', is_parallel: 1 }, /config\.is_parallel must be true or false/],
    ['no placement', { mh_adapter: false, output_adapter: false }, /places no adapter in any layer/],
  ];
  for (const [label, config, pattern] of cases) it(label, () => assertRefused(adapter(config), pattern));

  it('top-level fields: hidden_size, name, version', () => {
    assertRefused(adapter({}, undefined, { hidden_size: 128 }), /hidden_size 128 differs from the backbone's 64/);
    assertRefused(adapter({}, undefined, { name: 7 }), /adapter_config\.json: name must be a string/);
    assertRefused(adapter({}, undefined, { version: [] }), /adapter_config\.json: version must be a string/);
  });

  it('original_ln_after false: served on llama and gpt2, refused on qwen2 (the library refuses it there)', () => {
    assert.equal(parse(adapter({ original_ln_after: false })).summary['modules'], 2);
    assertRefused(adapter({ original_ln_after: false }, undefined, { model_type: 'qwen2' }), /original_ln_after false is not supported on qwen2/, QWEN2);
  });

  it('tensors: shape, width over the limit, missing, not finite, dtype, names', () => {
    assertRefused(adapter({}, (t) => (t[KEY(0, 'adapter_up.weight')] = { dtype: 'F32', shape: [H, 5], data: values(H * 5, 1) })), /output_adapters\.adapters\.sst2\.adapter_up\.weight: shape \[64,5\], expected \[64,4\] \(hidden_size 64 \/\/ reduction_factor 16 = 4\)/);
    assertRefused(adapter({ reduction_factor: 2 }), /adapter_down\.0\.weight: bottleneck width 32 \(hidden_size 64 \/\/ reduction_factor 2\) exceeds max bottleneck 16/);
    assertRefused(adapter({}, (t) => delete t[KEY(1, 'adapter_down.0.bias')]), /layer 1 output_adapters: adapter_down\.0\.bias is missing/);
    assertRefused(adapter({}, (t) => (t[KEY(0, 'adapter_up.bias')]!.data as Float32Array)[3] = NaN), /adapter_up\.bias: value at index 3 is not finite/);
    assertRefused(adapter({}, (t) => (t[KEY(0, 'adapter_up.bias')] = { dtype: 'I32', shape: [H], data: new Int32Array(H) })), /adapter_up\.bias: dtype I32 is not supported/);
    assertRefused(adapter({}, (t) => (t[KEY(0, 'adapter_up.bias').replace('sst2', 'other')] = t[KEY(0, 'adapter_up.bias')]!)), /adapters of several names \('other', 'sst2'\)/);
    assertRefused(adapter({}, undefined, { name: 'imdb' }), /holds adapter 'sst2', but adapter_config\.json names it 'imdb'/);
    assertRefused(adapter({}, (t) => (t[KEY(0, 'adapter_up.bias').replace('model.', '')] = t[KEY(0, 'adapter_up.bias')]!)), /adapter_up\.bias of the same layer is given twice/);
    assertRefused(adapter({ ln_after: true }), /layer 0 output_adapters: adapter_norm_after\.weight is missing/);
    assertRefused(adapter({ scaling: 'channel' }), /layer 0 output_adapters: scaling is missing/);
  });

  it('a PyTorch pickle upload is named as one', () => {
    const zip = new Uint8Array([0x50, 0x4b, 0x03, 0x04, 0, 0, 0, 0, 8, 0, 0, 0]);
    assertRefused({ config: adapter().config, weights: zip }, /PyTorch pickle .* only safetensors/);
  });
});
