import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeArchitecture } from '../../model/families/index.js';
import { encodeSafetensors, float32ToBf16, float32ToF16 } from '../../model/safetensors.js';
import { DeltaValidationError } from '../errors.js';
import type { DeltaLimits, ParsedDelta } from '../kind.js';
import { parseDelta } from '../parse.js';
import { ia3, ia3Layout, ia3Stack } from './ia3.js';

// A tiny llama: hidden 64, 4 heads of 16, 2 kv heads (k/v out 32), intermediate 128, 2 layers.
const LLAMA = describeArchitecture(
  { model_type: 'llama', hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, intermediate_size: 128, num_hidden_layers: 2, vocab_size: 300, tie_word_embeddings: false },
  new Set(['lm_head.weight']),
  'config.json',
);
const GPT2 = describeArchitecture({ model_type: 'gpt2', n_embd: 32, n_head: 4, n_layer: 2, vocab_size: 300, n_positions: 64 }, new Set(['transformer.wte.weight']), 'config.json');
const LIMITS: DeltaLimits = { maxRank: 8, maxVirtualTokens: 16, maxBottleneck: 64 };
const SHAPES: Record<string, [inF: number, outF: number]> = { q_proj: [64, 64], k_proj: [64, 32], v_proj: [64, 32], o_proj: [64, 64], gate_proj: [64, 128], up_proj: [64, 128], down_proj: [128, 64] };
const MLP = new Set(['gate_proj', 'up_proj', 'down_proj']);
const modulePath = (layer: number, short: string) => `model.layers.${layer}.${MLP.has(short) ? 'mlp' : 'self_attn'}.${short}`;
const key = (mod: string) => `base_model.model.${mod}.ia3_l`;

type Tensors = Parameters<typeof encodeSafetensors>[0];
const values = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => 1 + Math.sin(seed * 131 + i * 0.37) * 0.5);

/** ia3_l for (layer, module): [1, in] for the feed-forward ones, else [out, 1]. */
function vectors(targets: string[], feedforward: string[], layers = [0, 1]): Tensors {
  const tensors: Tensors = {};
  let seed = 1;
  for (const layer of layers) {
    for (const short of targets) {
      const [inF, outF] = SHAPES[short]!;
      const ff = feedforward.includes(short);
      tensors[key(modulePath(layer, short))] = { dtype: 'F32', shape: ff ? [1, inF] : [outF, 1], data: values(ff ? inF : outF, seed++) };
    }
  }
  return tensors;
}

const CONFIG = { peft_type: 'IA3', task_type: 'CAUSAL_LM', target_modules: ['q_proj', 'down_proj'], feedforward_modules: ['down_proj'], fan_in_fan_out: false, init_ia3_weights: true, modules_to_save: null, exclude_modules: null, inference_mode: true };

/**
 * The writer has no F64; F64 tensors are written as I64 of the same bytes and the header's dtype
 * renamed (same length, so every offset stays).
 */
type AnyTensors = Record<string, Tensors[string] | { dtype: 'F64'; shape: number[]; data: Float64Array }>;

function encode(tensors: AnyTensors): Uint8Array {
  const asI64 = Object.fromEntries(Object.entries(tensors).map(([name, t]) => [name, t.dtype === 'F64' ? { ...t, dtype: 'I64' as const, data: new BigInt64Array((t.data as Float64Array).buffer) } : t]));
  const bytes = encodeSafetensors(asI64 as Tensors, { format: 'pt' });
  const headerEnd = 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = new TextDecoder().decode(bytes.subarray(8, headerEnd)).replaceAll('"dtype":"I64"', '"dtype":"F64"');
  bytes.set(new TextEncoder().encode(header), 8);
  return bytes;
}

function parse(config: Record<string, unknown>, tensors: AnyTensors, arch = LLAMA): ParsedDelta {
  return parseDelta('ia3-test', { config: JSON.stringify({ ...CONFIG, ...config }), weights: encode(tensors) }, arch, LIMITS);
}

/** The parse must throw a DeltaValidationError; returns its problems. */
function problemsOf(config: Record<string, unknown>, tensors: AnyTensors, arch = LLAMA): string[] {
  let caught: unknown;
  assert.throws(() => parse(config, tensors, arch), (err) => ((caught = err), err instanceof DeltaValidationError));
  const err = caught as DeltaValidationError;
  assert.equal(err.deltaName, 'ia3-test');
  return err.problems;
}

/** Exactly one problem matches each pattern group, and there are no others. */
function assertProblems(problems: string[], patterns: RegExp[][]): void {
  assert.equal(problems.length, patterns.length, `problems: ${JSON.stringify(problems)}`);
  for (const group of patterns) assert.equal(problems.filter((p) => group.every((re) => re.test(p))).length, 1, `one problem matches ${group.join(' and ')}; problems: ${JSON.stringify(problems)}`);
}

const lit = (s: string) => new RegExp(s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));

/** A module's vector as the slot holds it: its block's tensor at the module's input or output offset. */
function slotVector(delta: ParsedDelta, arch: typeof LLAMA, path: string, direction: 'in' | 'out', length: number): Float32Array {
  const place = ia3Layout(arch).places.get(path)!;
  const offset = direction === 'in' ? place.inOffset : place.outOffset;
  return delta.tensors.get(ia3Stack(place.layer))!.subarray(offset, offset + length);
}

describe('IA3: valid adapters', () => {
  it('lays each vector out where its direction says, ones everywhere else', () => {
    const tensors = vectors(['q_proj', 'down_proj'], ['down_proj']);
    const delta = parse({}, tensors);
    assert.equal(delta.kind, 'ia3');
    assert.deepEqual(delta.summary, { modules: 4, feedforward: 2, params: 2 * (64 + 128) });
    assert.deepEqual(delta.warnings, []);
    assert.deepEqual([...delta.tensors.keys()], [ia3Stack(0), ia3Stack(1)]);
    const width = ia3Layout(LLAMA).widths[0]!;
    assert.equal(width, Object.values(SHAPES).reduce((n, [i, o]) => n + i + o, 0));
    for (const layer of [0, 1]) {
      const q = modulePath(layer, 'q_proj');
      const down = modulePath(layer, 'down_proj');
      assert.deepEqual(slotVector(delta, LLAMA, q, 'out', 64), tensors[key(q)]!.data);
      assert.deepEqual(slotVector(delta, LLAMA, down, 'in', 128), tensors[key(down)]!.data);
      const block = delta.tensors.get(ia3Stack(layer))!;
      const set = [...block].filter((v) => v !== 1).length;
      assert.equal(set, 64 + 128, 'nothing else differs from 1');
    }
  });

  it('null target_modules and feedforward_modules take PEFT defaults (llama: k, v, down; down feed-forward)', () => {
    const delta = parse({ target_modules: null, feedforward_modules: null }, vectors(['k_proj', 'v_proj', 'down_proj'], ['down_proj']));
    assert.deepEqual(delta.summary, { modules: 6, feedforward: 2, params: 2 * (32 + 32 + 128) });
    assert.deepEqual(delta.warnings, []);
  });

  it('GPT-2 defaults: fused c_attn scales its [3·hidden] output; only mlp.c_proj scales its input', () => {
    const tensors: Tensors = {};
    for (const l of [0, 1]) {
      tensors[key(`transformer.h.${l}.attn.c_attn`)] = { dtype: 'F32', shape: [96, 1], data: values(96, l) };
      tensors[key(`transformer.h.${l}.mlp.c_proj`)] = { dtype: 'F32', shape: [1, 128], data: values(128, l + 5) };
    }
    const delta = parse({ target_modules: null, feedforward_modules: null, fan_in_fan_out: true }, tensors, GPT2);
    assert.deepEqual(delta.summary, { modules: 4, feedforward: 2, params: 2 * (96 + 128) });
    assert.deepEqual(slotVector(delta, GPT2, 'transformer.h.1.attn.c_attn', 'out', 96), tensors[key('transformer.h.1.attn.c_attn')]!.data);
    assert.deepEqual(slotVector(delta, GPT2, 'transformer.h.0.mlp.c_proj', 'in', 128), tensors[key('transformer.h.0.mlp.c_proj')]!.data);
  });

  it('a feed-forward list name matches by bare suffix as PEFT does ("proj" is every *_proj); a string full-matches', () => {
    const all = Object.keys(SHAPES);
    const bare = parse({ target_modules: '.*_proj', feedforward_modules: ['proj'] }, vectors(all, all));
    assert.equal(bare.summary['feedforward'], 14);
    const regex = parse({ target_modules: '.*_proj', feedforward_modules: '.*\\.mlp\\..*' }, vectors(all, ['gate_proj', 'up_proj', 'down_proj']));
    assert.equal(regex.summary['feedforward'], 6);
  });

  it('F16, BF16 and F64 vectors are read as float32', () => {
    const exact = Float32Array.from({ length: 64 }, (_, i) => 0.5 + (i % 5) * 0.25);
    const q = modulePath(0, 'q_proj');
    const tensors = vectors(['q_proj'], [], [0]);
    for (const [dtype, data] of [['F16', float32ToF16(exact)], ['BF16', float32ToBf16(exact)], ['F64', Float64Array.from(exact)]] as const) {
      const all = { ...tensors, [key(q)]: { dtype, shape: [64, 1], data } } as AnyTensors;
      assert.deepEqual(slotVector(parse({ target_modules: ['q_proj'], feedforward_modules: [] }, all), LLAMA, q, 'out', 64), exact, dtype);
    }
  });

  it('warns about what PEFT ignores: untargeted tensors, foreign keys, unknown fields, fan_in_fan_out, missing vectors', () => {
    const tensors = vectors(['q_proj', 'v_proj', 'down_proj'], ['down_proj']);
    tensors[key('model.layers.0.self_attn.nonsense')] = { dtype: 'F32', shape: [4, 1], data: values(4, 9) };
    tensors['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'] = { dtype: 'F32', shape: [1, 64], data: values(64, 9) };
    delete tensors[key(modulePath(1, 'q_proj'))];
    const delta = parse({ layers_to_transform: [0], r: 8, fan_in_fan_out: true }, tensors);
    assert.equal(delta.summary['modules'], 3);
    const expected = [
      [/'layers_to_transform'/, /'r'/, /not fields of PEFT's IA3Config/],
      [/fan_in_fan_out: true ignored/],
      [lit(modulePath(1, 'q_proj')), /no ia3_l tensor.*left unchanged/],
      [lit(key(modulePath(0, 'v_proj'))), /target_modules does not select/],
      [lit(key(modulePath(1, 'v_proj'))), /target_modules does not select/],
      [/self_attn\.nonsense/, /no such module/],
      [/lora_A\.weight/, /not an ia3_l vector/],
    ];
    assertProblems(delta.warnings, expected);
  });
});

describe('IA3: invalid adapters name the field or tensor', () => {
  const good = () => vectors(['q_proj', 'down_proj'], ['down_proj']);

  it('shapes: the other direction (with a hint), a wrong length, a 1-D vector', () => {
    const tensors = good();
    const [q0, q1, down0] = [modulePath(0, 'q_proj'), modulePath(1, 'q_proj'), modulePath(0, 'down_proj')];
    tensors[key(q0)] = { dtype: 'F32', shape: [1, 64], data: values(64, 1) };
    tensors[key(q1)] = { dtype: 'F32', shape: [32, 1], data: values(32, 1) };
    tensors[key(down0)] = { dtype: 'F32', shape: [128], data: values(128, 1) };
    assertProblems(problemsOf({}, tensors), [
      [lit(key(q0)), /shape \[1,64\], expected \[64,1\]/, /feedforward_modules does not include/],
      [lit(key(q1)), /shape \[32,1\], expected \[64,1\]$/],
      [lit(key(down0)), /shape \[128\], expected \[1,128\]/],
    ]);
  });

  it('non-finite values (F64 that overflows float32 too) and integer dtypes', () => {
    const tensors = good();
    const [q0, q1, down0] = [modulePath(0, 'q_proj'), modulePath(1, 'q_proj'), modulePath(0, 'down_proj')];
    tensors[key(q0)]!.data = Float32Array.from(values(64, 1), (v, i) => (i === 5 ? NaN : v));
    const f64 = { dtype: 'F64' as const, shape: [64, 1], data: Float64Array.from({ length: 64 }, (_, i) => (i === 7 ? 1e300 : 1)) };
    tensors[key(down0)] = { dtype: 'I32', shape: [1, 128], data: new Int32Array(128) };
    assertProblems(problemsOf({}, { ...tensors, [key(q1)]: f64 }), [
      [lit(key(q0)), /index 5 is not finite \(NaN\)/],
      [lit(key(q1)), /index 7 is not finite \(Infinity\)/],
      [lit(key(down0)), /dtype I32 is not supported/],
    ]);
  });

  it('every config field is type-checked', () => {
    const problems = problemsOf({ task_type: 'CHAT', inference_mode: 'yes', init_ia3_weights: 1, fan_in_fan_out: 'no', exclude_modules: 7, feedforward_modules: [3], modules_to_save: ['lm_head'] }, good());
    assertProblems(problems, [[/task_type must be one of/, /"CHAT"/], [/inference_mode must be true or false/], [/init_ia3_weights must be true or false/], [/fan_in_fan_out must be true or false/], [/exclude_modules must be a string or a list/], [/feedforward_modules \[0\] must be a non-empty string/], [/modules_to_save: .*not supported/]]);
    assertProblems(problemsOf({ target_modules: { q: 1 } }, good()), [[/target_modules must be a string or a list/]]);
  });

  it('feedforward_modules outside a listed target_modules, and a pattern it cannot compile', () => {
    assertProblems(problemsOf({ feedforward_modules: ['down_proj', 'up_proj'] }, good()), [[/feedforward_modules must be a subset of target_modules/, /'up_proj' not in/]]);
    assertProblems(problemsOf({ feedforward_modules: '(?<=x)down' }, good()), [[/feedforward_modules: /, /lookbehind/]]);
  });

  it('targets IA3 cannot scale here, or none at all', () => {
    assertProblems(problemsOf({ target_modules: ['q_proj', 'lm_head', 'embed_tokens', 'input_layernorm'], feedforward_modules: [] }, vectors(['q_proj'], [])), [
      [/'lm_head', an output head module/],
      [/'model.embed_tokens', a embedding module/],
      [/'model.layers.0.input_layernorm', a norm module/],
      [/'model.layers.1.input_layernorm', a norm module/],
    ]);
    assertProblems(problemsOf({ target_modules: ['nothing'], feedforward_modules: [] }, good()), [[/target_modules selects no module/]]);
    assertProblems(problemsOf({ exclude_modules: '.*' }, good()), [[/target_modules selects no module/]]);
  });

  it('a missing vector with init_ia3_weights false (PEFT would leave it random), and no vector at all', () => {
    const tensors = good();
    delete tensors[key(modulePath(1, 'down_proj'))];
    assertProblems(problemsOf({ init_ia3_weights: false }, tensors), [[lit(key(modulePath(1, 'down_proj'))), /missing, and init_ia3_weights is false/]]);
    assertProblems(problemsOf({}, {}), [[/holds no ia3_l tensor/]]);
  });

  it('a config of another peft_type is not IA3 (detect), and parse itself refuses it', () => {
    assert.equal(ia3.detect({ peft_type: 'LORA' }), false);
    assert.throws(() => ia3.parse({ name: 'x', config: { ...CONFIG, peft_type: 'IA3x' }, weights: { header: { tensors: new Map() } } as never, arch: LLAMA, limits: LIMITS }), /peft_type 'IA3x' is not supported here/);
  });
});

describe('IA3: slots and feeds', () => {
  it('one slot tensor per block, neutral 1, fixed by the backbone', () => {
    const specs = ia3.slotTensors(GPT2, LIMITS);
    // c_attn 32→96, attn.c_proj 32→32, c_fc 32→128, mlp.c_proj 128→32
    assert.deepEqual(specs, [0, 1].map((l) => ({ name: ia3Stack(l), length: 32 + 96 + 32 + 32 + 32 + 128 + 128 + 32, neutral: 1, dims: [512] })));
  });

  it('ia3_rows: each token its slot, tokens without IA3 the ones row after the last slot', () => {
    const [feed] = ia3.feeds({ tokenSlots: Int32Array.from([1, -1, 0, 1, -1]), slotCount: 2, virtualIndex: new Int32Array(5).fill(-1) });
    assert.deepEqual(feed, { name: 'ia3_rows', dtype: 'int64', data: [1, 2, 0, 1, 2], dims: [5] });
  });
});
