import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeArchitecture } from '../model/families/index.js';
import { encodeSafetensors } from '../model/safetensors.js';
import { DeltaValidationError } from './errors.js';
import { firstNonFinite, parsePeftLora, type PeftLoraConfig } from './peft-lora.js';
import { MAX_CONFIG_PATTERN_STATES } from './peft/targets.js';

// A tiny llama: hidden 64, 4 heads of 16, 2 kv heads (k/v out 32), intermediate 128, 2 layers.
const ARCH = describeArchitecture(
  {
    model_type: 'llama',
    hidden_size: 64,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 16,
    intermediate_size: 128,
    num_hidden_layers: 2,
    vocab_size: 300,
    tie_word_embeddings: false,
  },
  new Set(['lm_head.weight']),
  'config.json',
);
const MAX_RANK = 16;
const SHAPES: Record<string, [inF: number, outF: number]> = {
  q_proj: [64, 64],
  k_proj: [64, 32],
  v_proj: [64, 32],
  o_proj: [64, 64],
  gate_proj: [64, 128],
  up_proj: [64, 128],
  down_proj: [128, 64],
};
const MLP = new Set(['gate_proj', 'up_proj', 'down_proj']);
const modulePath = (layer: number, short: string) => `model.layers.${layer}.${MLP.has(short) ? 'mlp' : 'self_attn'}.${short}`;
const keyA = (mod: string) => `base_model.model.${mod}.lora_A.weight`;
const keyB = (mod: string) => `base_model.model.${mod}.lora_B.weight`;

type Tensors = Parameters<typeof encodeSafetensors>[0];

/** Deterministic, distinct values so a reordering or transposition would show. */
function values(n: number, seed: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 131 + i * 0.37) * 0.1);
}

/** A well-formed adapter: lora_A [r, in], lora_B [out, r] for each (layer, module). */
function adapterTensors(targets: string[], rank: number | ((mod: string) => number), layers = [0, 1]): Tensors {
  const tensors: Tensors = {};
  let seed = 1;
  for (const layer of layers) {
    for (const short of targets) {
      const mod = modulePath(layer, short);
      const r = typeof rank === 'number' ? rank : rank(mod);
      const [inF, outF] = SHAPES[short]!;
      tensors[keyA(mod)] = { dtype: 'F32', shape: [r, inF], data: values(r * inF, seed++) };
      tensors[keyB(mod)] = { dtype: 'F32', shape: [outF, r], data: values(outF * r, seed++) };
    }
  }
  return tensors;
}

function adapterConfig(overrides: Partial<PeftLoraConfig> & Record<string, unknown> = {}): string {
  return JSON.stringify({
    peft_type: 'LORA',
    r: 4,
    lora_alpha: 8,
    use_rslora: false,
    use_dora: false,
    target_modules: ['q_proj', 'v_proj'],
    rank_pattern: {},
    alpha_pattern: {},
    fan_in_fan_out: false,
    bias: 'none',
    modules_to_save: null,
    task_type: 'CAUSAL_LM',
    ...overrides,
  });
}

const encode = (tensors: Tensors) => encodeSafetensors(tensors, { format: 'pt' });

/** parsePeftLora must throw a DeltaValidationError; returns its problems. */
function problemsOf(config: string, weights: Uint8Array, maxRank = MAX_RANK): string[] {
  let caught: unknown;
  assert.throws(
    () => parsePeftLora('bad-delta', config, weights, ARCH, maxRank),
    (err) => {
      caught = err;
      return err instanceof DeltaValidationError;
    },
  );
  const err = caught as DeltaValidationError;
  assert.equal(err.code, 'invalid_delta');
  assert.equal(err.deltaName, 'bad-delta');
  assert.ok(err.problems.length > 0);
  for (const p of err.problems) assert.ok(err.message.includes(p), `the message lists "${p}"`);
  assert.match(err.message, /delta 'bad-delta' is invalid/);
  return err.problems;
}

/** Exactly one problem matches each pattern, and there are no others. */
function assertProblems(problems: string[], patterns: RegExp[][]): void {
  assert.equal(problems.length, patterns.length, `problems: ${JSON.stringify(problems)}`);
  for (const group of patterns) {
    const hits = problems.filter((p) => group.every((re) => re.test(p)));
    assert.equal(hits.length, 1, `one problem matches ${group.join(' and ')}; problems: ${JSON.stringify(problems)}`);
  }
}

const lit = (s: string) => new RegExp(s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));

describe('parsePeftLora: valid adapters', () => {
  it('yields one module per targeted projection with A/B as stored and scale alpha/r', () => {
    const tensors = adapterTensors(['q_proj', 'v_proj'], 4);
    const delta = parsePeftLora('good', adapterConfig(), encode(tensors), ARCH, MAX_RANK);
    assert.equal(delta.kind, 'lora');
    assert.equal(delta.name, 'good');
    assert.equal(delta.modules.size, 4);
    assert.equal(delta.maxRank, 4);
    assert.deepEqual(delta.warnings, []);
    assert.deepEqual([...delta.modules.keys()].sort(), [
      'model.layers.0.self_attn.q_proj',
      'model.layers.0.self_attn.v_proj',
      'model.layers.1.self_attn.q_proj',
      'model.layers.1.self_attn.v_proj',
    ]);
    for (const [mod, m] of delta.modules) {
      assert.equal(m.rank, 4);
      assert.equal(m.scale, 8 / 4);
      assert.deepEqual(m.a, tensors[keyA(mod)]!.data);
      assert.deepEqual(m.b, tensors[keyB(mod)]!.data);
    }
  });

  it('every projection of every layer (14 modules), F16 and BF16 tensors accepted', () => {
    const tensors = adapterTensors(Object.keys(SHAPES), 8);
    const mod = modulePath(0, 'down_proj');
    const f32 = tensors[keyA(mod)]!.data as Float32Array;
    // 0.5 steps are exact in both half formats.
    const exact = Float32Array.from(f32, (_, i) => (i % 7) * 0.5 - 1.5);
    const bits16 = new Uint16Array(exact.length);
    // BF16 = the top 16 bits of the f32.
    const u32 = new Uint32Array(exact.buffer);
    for (let i = 0; i < exact.length; i++) bits16[i] = u32[i]! >>> 16;
    tensors[keyA(mod)] = { dtype: 'BF16', shape: [8, 128], data: bits16 };
    const delta = parsePeftLora('all', adapterConfig({ r: 8, lora_alpha: 16, target_modules: Object.keys(SHAPES) }), encode(tensors), ARCH, MAX_RANK);
    assert.equal(delta.modules.size, 14);
    assert.deepEqual(delta.modules.get(mod)!.a, exact);
    for (const m of delta.modules.values()) assert.equal(m.scale, 2);
  });

  it('use_rslora scales by alpha/sqrt(r)', () => {
    const delta = parsePeftLora('rs', adapterConfig({ r: 4, lora_alpha: 8, use_rslora: true }), encode(adapterTensors(['q_proj', 'v_proj'], 4)), ARCH, MAX_RANK);
    for (const m of delta.modules.values()) assert.equal(m.scale, 8 / Math.sqrt(4));
  });

  it('lora_alpha defaults to 8 (PEFT default)', () => {
    const config = JSON.parse(adapterConfig({ r: 2 }));
    delete config.lora_alpha;
    const delta = parsePeftLora('d', JSON.stringify(config), encode(adapterTensors(['q_proj'], 2)), ARCH, MAX_RANK);
    for (const m of delta.modules.values()) assert.equal(m.scale, 4);
  });

  it('rank_pattern and alpha_pattern set per-module rank and scale', () => {
    // q_proj everywhere has rank 8; layer 1's v_proj alone has alpha 32; the rest use r=4, alpha=8.
    const rankOf = (mod: string) => (mod.endsWith('q_proj') ? 8 : 4);
    const config = adapterConfig({ r: 4, lora_alpha: 8, rank_pattern: { q_proj: 8 }, alpha_pattern: { 'layers.1.self_attn.v_proj': 32 } });
    const delta = parsePeftLora('patterns', config, encode(adapterTensors(['q_proj', 'v_proj'], rankOf)), ARCH, MAX_RANK);
    assert.equal(delta.maxRank, 8);
    const got = Object.fromEntries([...delta.modules].map(([mod, m]) => [mod, [m.rank, m.scale]]));
    assert.deepEqual(got, {
      'model.layers.0.self_attn.q_proj': [8, 8 / 8],
      'model.layers.0.self_attn.v_proj': [4, 8 / 4],
      'model.layers.1.self_attn.q_proj': [8, 8 / 8],
      'model.layers.1.self_attn.v_proj': [4, 32 / 4],
    });
  });

  it('rank_pattern and alpha_pattern combine with use_rslora', () => {
    const config = adapterConfig({ r: 4, lora_alpha: 8, use_rslora: true, rank_pattern: { q_proj: 16 }, alpha_pattern: { q_proj: 12 } });
    const delta = parsePeftLora('rs-patterns', config, encode(adapterTensors(['q_proj', 'v_proj'], (m) => (m.endsWith('q_proj') ? 16 : 4))), ARCH, MAX_RANK);
    assert.equal(delta.modules.get('model.layers.0.self_attn.q_proj')!.scale, 12 / Math.sqrt(16));
    assert.equal(delta.modules.get('model.layers.0.self_attn.v_proj')!.scale, 8 / Math.sqrt(4));
  });

  it('a rank that disagrees with rank_pattern/r is reported', () => {
    const problems = problemsOf(adapterConfig({ r: 4, rank_pattern: { q_proj: 8 } }), encode(adapterTensors(['q_proj'], 4, [0])));
    assertProblems(problems, [[lit(keyA('model.layers.0.self_attn.q_proj')), /rank 4 differs from the configured r=8/]]);
  });
});

describe('parsePeftLora: invalid adapters name the tensor or field', () => {
  it('rank above the max rank', () => {
    const problems = problemsOf(adapterConfig({ r: 32 }), encode(adapterTensors(['q_proj'], 32, [0])));
    assertProblems(problems, [[lit(keyA('model.layers.0.self_attn.q_proj')), /rank 32 exceeds max rank 16/]]);
  });

  it('lora_A with the wrong input width', () => {
    const tensors = adapterTensors(['q_proj'], 4, [0]);
    const mod = 'model.layers.0.self_attn.q_proj';
    tensors[keyA(mod)] = { dtype: 'F32', shape: [4, 32], data: values(128, 3) };
    const problems = problemsOf(adapterConfig(), encode(tensors));
    assertProblems(problems, [[lit(keyA(mod)), /shape \[4,32\], expected \[4, 64\]/]]);
  });

  it('lora_B with the wrong output width', () => {
    const tensors = adapterTensors(['k_proj'], 4, [1]);
    const mod = 'model.layers.1.self_attn.k_proj';
    tensors[keyB(mod)] = { dtype: 'F32', shape: [64, 4], data: values(256, 3) }; // k_proj's out is 32
    const problems = problemsOf(adapterConfig({ target_modules: ['k_proj'] }), encode(tensors));
    assertProblems(problems, [[lit(keyB(mod)), /shape \[64,4\], expected \[32, 4\]/]]);
  });

  it('lora_A without its lora_B', () => {
    const tensors = adapterTensors(['q_proj'], 4, [0]);
    const mod = 'model.layers.0.self_attn.q_proj';
    delete tensors[keyB(mod)];
    const problems = problemsOf(adapterConfig(), encode(tensors));
    assertProblems(problems, [[lit(mod), lit(keyB(mod)), /needs both/]]);
  });

  it('a NaN value', () => {
    const tensors = adapterTensors(['q_proj', 'v_proj'], 4, [0]);
    const mod = 'model.layers.0.self_attn.v_proj';
    const data = Float32Array.from(tensors[keyB(mod)]!.data as Float32Array);
    data[37] = NaN;
    tensors[keyB(mod)] = { dtype: 'F32', shape: [32, 4], data };
    const problems = problemsOf(adapterConfig(), encode(tensors));
    assertProblems(problems, [[lit(keyB(mod)), /index 37 is not finite \(NaN\)/]]);
  });

  it('an infinite value', () => {
    const tensors = adapterTensors(['q_proj'], 4, [0]);
    const mod = 'model.layers.0.self_attn.q_proj';
    const data = Float32Array.from(tensors[keyA(mod)]!.data as Float32Array);
    data[0] = -Infinity;
    tensors[keyA(mod)] = { dtype: 'F32', shape: [4, 64], data };
    const problems = problemsOf(adapterConfig(), encode(tensors));
    assertProblems(problems, [[lit(keyA(mod)), /index 0 is not finite \(-Infinity\)/]]);
  });

  it('an integer dtype', () => {
    const tensors = adapterTensors(['q_proj'], 4, [0]);
    const mod = 'model.layers.0.self_attn.q_proj';
    tensors[keyA(mod)] = { dtype: 'I32', shape: [4, 64], data: new Int32Array(256) };
    const problems = problemsOf(adapterConfig(), encode(tensors));
    assertProblems(problems, [[lit(keyA(mod)), /dtype I32 is not supported/]]);
  });

  it('wrong peft_type', () => {
    const problems = problemsOf(adapterConfig({ peft_type: 'IA3' }), encode(adapterTensors(['q_proj'], 4)));
    assertProblems(problems, [[/peft_type/, /'IA3'/]]);
  });

  it('DoRA', () => {
    const problems = problemsOf(adapterConfig({ use_dora: true }), encode(adapterTensors(['q_proj'], 4)));
    assertProblems(problems, [[/use_dora/, /DoRA/]]);
  });

  it('a non-integer r, a bias and modules_to_save', () => {
    const problems = problemsOf(adapterConfig({ r: 0, bias: 'all', modules_to_save: ['lm_head'] }), encode(adapterTensors(['q_proj'], 4)));
    assertProblems(problems, [[/\br must be at least 1, got 0/], [/bias 'all'/], [/modules_to_save/]]);
  });

  it('adapter_config.json that is not JSON', () => {
    const problems = problemsOf('{"peft_type": "LORA",', encode(adapterTensors(['q_proj'], 4)));
    assertProblems(problems, [[/adapter_config\.json is not valid JSON/]]);
  });

  it('a truncated safetensors file', () => {
    const bytes = encode(adapterTensors(['q_proj'], 4));
    const problems = problemsOf(adapterConfig(), bytes.subarray(0, bytes.length - 100));
    assertProblems(problems, [[/adapter_model\.safetensors/, /truncated/, lit(`expected ${bytes.length} bytes, got ${bytes.length - 100}`)]]);
  });

  it('a safetensors file cut inside its length prefix', () => {
    const problems = problemsOf(adapterConfig(), encode(adapterTensors(['q_proj'], 4)).subarray(0, 5));
    assertProblems(problems, [[/adapter_model\.safetensors/, /truncated/]]);
  });

  it('an adapter with no tensors', () => {
    const problems = problemsOf(adapterConfig(), encode({}));
    assertProblems(problems, [[/adapter_model\.safetensors holds no LoRA tensors/]]);
  });

  it('every problem is listed, not just the first', () => {
    // Two tensor problems in different modules: both reported.
    const tensors = adapterTensors(['q_proj', 'v_proj', 'down_proj'], 4, [0, 1]);
    const nanMod = 'model.layers.0.self_attn.q_proj';
    const nan = Float32Array.from(tensors[keyA(nanMod)]!.data as Float32Array);
    nan[5] = NaN;
    tensors[keyA(nanMod)] = { dtype: 'F32', shape: [4, 64], data: nan };
    const shapeMod = 'model.layers.1.mlp.down_proj';
    tensors[keyA(shapeMod)] = { dtype: 'F32', shape: [4, 64], data: values(256, 4) }; // down_proj's in is 128
    const problems = problemsOf(adapterConfig({ target_modules: ['q_proj', 'v_proj', 'down_proj'] }), encode(tensors));
    assertProblems(problems, [
      [lit(keyA(nanMod)), /index 5 is not finite/],
      [lit(keyA(shapeMod)), /shape \[4,64\], expected \[4, 128\]/],
    ]);
  });

  it('every config problem is listed (wrong peft_type and DoRA)', () => {
    const problems = problemsOf(adapterConfig({ peft_type: 'LOHA', use_dora: true }), encode(adapterTensors(['q_proj'], 4)));
    assertProblems(problems, [[/peft_type 'LOHA'/], [/use_dora/]]);
  });

  it('one module with both a rank above the max and a wrong shape reports both', () => {
    const tensors: Tensors = {};
    const mod = 'model.layers.0.self_attn.o_proj';
    tensors[keyA(mod)] = { dtype: 'F32', shape: [20, 48], data: values(20 * 48, 1) };
    tensors[keyB(mod)] = { dtype: 'F32', shape: [64, 20], data: values(64 * 20, 2) };
    const problems = problemsOf(adapterConfig({ r: 20, target_modules: ['o_proj'] }), encode(tensors));
    assertProblems(problems, [
      [lit(keyA(mod)), /rank 20 exceeds max rank 16/],
      [lit(keyA(mod)), /shape \[20,48\], expected \[20, 64\]/],
    ]);
  });
});

describe('parsePeftLora: config fields are type- and range-checked', () => {
  const tensors = () => encode(adapterTensors(['q_proj', 'v_proj'], 4));
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['a string lora_alpha', { lora_alpha: 'abc' }, /lora_alpha must be a finite number, got "abc" \(a string\)/],
    ['a boolean r', { r: true }, /\br must be an integer, got true/],
    ['a fractional r', { r: 4.5 }, /\br must be an integer, got 4\.5/],
    ['use_rslora that is not a boolean', { use_rslora: 'yes' }, /use_rslora must be true or false, got "yes"/],
    ['fan_in_fan_out on a model of nn.Linear layers', { fan_in_fan_out: true }, /fan_in_fan_out is true, but llama's linear layers are nn\.Linear/],
    ['a bias mode PEFT does not have', { bias: 'some' }, /bias must be one of 'none', 'all', 'lora_only', got "some"/],
    ['lora_dropout out of range', { lora_dropout: 2 }, /lora_dropout must be at most 1, got 2/],
    ['target_modules of the wrong type', { target_modules: 7 }, /target_modules must be a string or a list of strings, got 7/],
    ['a target_modules regex with a backreference', { target_modules: '(q)_proj\\1' }, /target_modules: .*backreference/],
    ['a rank_pattern value that is not an integer', { rank_pattern: { q_proj: 'eight' } }, /rank_pattern\.q_proj must be an integer, got "eight"/],
    ['an alpha_pattern that is a list', { alpha_pattern: [1, 2] }, /alpha_pattern must be an object of patterns to numbers, got a list/],
    ['a rank_pattern key with a lookahead', { rank_pattern: { '(?=q)q_proj': 4 } }, /rank_pattern key '\(\?=q\)q_proj'.*lookahead \(\?=\.\.\.\) is not supported/],
    ['lora_alpha 1e38', { lora_alpha: 1e38 }, /lora_alpha must be at most 1000000, got 1e\+38/],
    ['an alpha_pattern value of -1e9', { alpha_pattern: { q_proj: -1e9 } }, /alpha_pattern\.q_proj must be at least -1000000/],
    ['layers_pattern without layers_to_transform', { layers_pattern: 'layers' }, /layers_pattern needs layers_to_transform/],
    ['modules_to_save', { modules_to_save: ['lm_head'] }, /modules_to_save is not supported/],
    ['a weight-changing initialisation', { init_lora_weights: 'pissa' }, /init_lora_weights "pissa" \(a string\) is not supported/],
    ['lora_bias', { lora_bias: true }, /lora_bias is not supported/],
  ];
  for (const [label, override, pattern] of cases) {
    it(`${label} is refused naming the field`, () => {
      const problems = problemsOf(adapterConfig(override), tensors());
      assert.ok(problems.some((p) => pattern.test(p) && p.startsWith('adapter_config.json: ')), `${pattern} in ${JSON.stringify(problems)}`);
    });
  }

  it('weights that overflow float32 once scale is folded into lora_B are refused', () => {
    const big = adapterTensors(['q_proj', 'v_proj'], 4);
    const mod = 'model.layers.1.self_attn.v_proj';
    big[keyB(mod)] = { dtype: 'F32', shape: [32, 4], data: new Float32Array(128).fill(3e38) };
    const problems = problemsOf(adapterConfig({ lora_alpha: 16 }), encode(big));
    assertProblems(problems, [[lit(keyB(mod)), /scaled by lora_alpha\/r = 4, its values overflow float32/]]);
  });

  it('patterns over the per-config state budget are refused once, before any is matched', () => {
    // 512 keys of ~9,900 states each once held the delta loader for minutes (fuzz/adapter-config).
    const heavy = (tag: string) => Object.fromEntries(Array.from({ length: 256 }, (_, i) => [`(.{0,70}){0,70}${tag}${i}`, 4]));
    const problems = problemsOf(adapterConfig({ rank_pattern: heavy('r'), alpha_pattern: heavy('a') }), tensors());
    assertProblems(problems, [[/rank_pattern key '\(\.\{0,70\}\)\{0,70\}r3'/, lit(`need over ${MAX_CONFIG_PATTERN_STATES} NFA states together`)]]);
    // As many keys naming modules outright stay well inside it.
    const named = (i: number) => `model.layers.${i % 80}.${i % 2 ? 'self_attn.q_proj' : 'mlp.down_proj'}${i}`;
    const literal = Object.fromEntries(Array.from({ length: 256 }, (_, i) => [named(i), 4]));
    assert.equal(parsePeftLora('named', adapterConfig({ rank_pattern: literal, alpha_pattern: literal }), tensors(), ARCH, MAX_RANK).modules.size, 4);
  });

  it('a pathological rank_pattern key is matched in linear time (it matches nothing here)', () => {
    const delta = parsePeftLora('redos', adapterConfig({ rank_pattern: { '(\\w|.)*Z': 9 } }), tensors(), ARCH, MAX_RANK);
    assert.equal(delta.modules.size, 4);
  });
});

describe('parsePeftLora: modules are targeted as PEFT targets them', () => {
  const targeted = (config: Record<string, unknown>, tensors = adapterTensors(Object.keys(SHAPES), 4)) => {
    const delta = parsePeftLora('t', adapterConfig(config), encode(tensors), ARCH, MAX_RANK);
    return { modules: [...delta.modules.keys()].sort(), warnings: delta.warnings ?? [] };
  };

  it('a regex target_modules is a full match; tensors of other modules are ignored with a warning', () => {
    const { modules, warnings } = targeted({ target_modules: '.*\\.(q|v)_proj' });
    assert.deepEqual(modules, ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.v_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.1.self_attn.v_proj']);
    assert.equal(warnings.length, 10);
    assert.ok(warnings.every((w) => /its tensors are ignored: target_modules does not select it/.test(w)));
    // q_proj alone is not a full match of any module path.
    assert.throws(() => targeted({ target_modules: 'q_proj' }), /target_modules selects no module of the backbone/);
  });

  it('a list matches exact paths and .name suffixes; exclude_modules removes matches', () => {
    assert.deepEqual(targeted({ target_modules: ['mlp.down_proj', 'model.layers.0.self_attn.k_proj'] }).modules, ['model.layers.0.mlp.down_proj', 'model.layers.0.self_attn.k_proj', 'model.layers.1.mlp.down_proj']);
    assert.deepEqual(targeted({ target_modules: ['q_proj'], exclude_modules: ['model.layers.1.self_attn.q_proj'] }).modules, ['model.layers.0.self_attn.q_proj']);
    assert.deepEqual(targeted({ target_modules: ['q_proj', 'k_proj'], exclude_modules: '.*layers\\.0.*' }).modules, ['model.layers.1.self_attn.k_proj', 'model.layers.1.self_attn.q_proj']);
  });

  it("'all-linear' is every projection, and null is PEFT's default for the model type (q_proj, v_proj)", () => {
    assert.equal(targeted({ target_modules: 'ALL-LINEAR' }).modules.length, 14);
    assert.deepEqual(targeted({ target_modules: null }).modules, ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.v_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.1.self_attn.v_proj']);
  });

  it('layers_to_transform keeps the listed layers only, with or without layers_pattern', () => {
    assert.deepEqual(targeted({ target_modules: ['o_proj'], layers_to_transform: [1] }).modules, ['model.layers.1.self_attn.o_proj']);
    assert.deepEqual(targeted({ target_modules: ['o_proj'], layers_to_transform: 0, layers_pattern: 'layers' }).modules, ['model.layers.0.self_attn.o_proj']);
    assert.throws(() => targeted({ target_modules: ['o_proj'], layers_to_transform: [0], layers_pattern: ['blocks'] }), /target_modules selects no module/);
  });

  it('a targeted module without tensors is left unchanged, with a warning', () => {
    const { modules, warnings } = targeted({ target_modules: ['q_proj', 'o_proj'] }, adapterTensors(['q_proj'], 4));
    assert.equal(modules.length, 2);
    assert.deepEqual(warnings.filter((w) => /targeted but has no lora_A\/lora_B tensors/.test(w)).length, 2);
  });

  it('tensors of modules the backbone lacks, and non-LoRA tensors, are ignored with a warning', () => {
    const tensors = adapterTensors(['q_proj'], 4, [0]);
    const bogus = 'model.layers.0.self_attn.qkv_proj';
    tensors[keyA(bogus)] = { dtype: 'F32', shape: [4, 64], data: values(256, 9) };
    tensors[keyB(bogus)] = { dtype: 'F32', shape: [64, 4], data: values(256, 10) };
    tensors['base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector'] = { dtype: 'F32', shape: [64], data: values(64, 3) };
    const { modules, warnings } = targeted({ target_modules: ['q_proj'], layers_to_transform: [0] }, tensors);
    assert.deepEqual(modules, ['model.layers.0.self_attn.q_proj']);
    assert.ok(warnings.some((w) => w.includes(bogus) && /the backbone has no such module/.test(w)), JSON.stringify(warnings));
    assert.ok(warnings.some((w) => /lora_magnitude_vector: ignored/.test(w)));
  });

  it('a pattern selecting a module that is not a linear layer is refused, as PEFT refuses it', () => {
    assert.throws(() => targeted({ target_modules: '.*self_attn' }), /target_modules selects 'model\.layers\.0\.self_attn', a container module/);
    assert.throws(() => targeted({ target_modules: ['q_proj', 'lm_head'] }), /selects 'lm_head', an output head module/);
    assert.throws(() => targeted({ target_modules: ['input_layernorm'] }), /a norm module/);
  });
});

describe('firstNonFinite', () => {
  it('finds the first NaN or infinity, and -1 for finite data (zeros, extremes and negative zero included)', () => {
    assert.equal(firstNonFinite(new Float32Array([0, -0, 3.4e38, -3.4e38, 1e-45])), -1);
    assert.equal(firstNonFinite(new Float32Array(0)), -1);
    for (const bad of [NaN, Infinity, -Infinity]) {
      const data = new Float32Array(1000).fill(0.5);
      data[700] = bad;
      data[900] = NaN;
      assert.equal(firstNonFinite(data), 700, String(bad));
    }
  });
});
