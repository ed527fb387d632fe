import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runHookGraph } from '../../../test/graph/hook-graph.js';
import type { ProjectionSpec } from '../../model/architecture.js';
import { describeArchitecture } from '../../model/families/index.js';
import { mulberry32 } from '../../model/random.js';
import { encodeSafetensors, float32ToBf16 } from '../../model/safetensors.js';
import { DeltaValidationError } from '../errors.js';
import { deltaKind, type DeltaLimits } from '../kind.js';
import { parseDelta } from '../parse.js';
import { bitfit, bitfitBias, bitfitSet, tokensWithDelta } from './bitfit.js';

// Tiny Qwen2: hidden 64, q 64 / k,v 32 (with biases), o 64 (none), gate/up 128, down 64; 2 layers.
const QWEN2 = describeArchitecture(
  { model_type: 'qwen2', hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, intermediate_size: 128, num_hidden_layers: 2, vocab_size: 300 },
  new Set(),
  'config.json',
);
const GPT2 = describeArchitecture({ model_type: 'gpt2', n_embd: 32, n_head: 4, n_layer: 1, vocab_size: 100 }, new Set(['h.0.ln_1.weight', 'wte.weight']), 'config.json');
const LIMITS: DeltaLimits = { maxRank: 8, maxVirtualTokens: 64, maxBottleneck: 256 };
const OUT: Record<string, number> = { q_proj: 64, k_proj: 32, v_proj: 32, o_proj: 64, gate_proj: 128, up_proj: 128, down_proj: 64 };
const path = (layer: number, short: string) => `model.layers.${layer}.${short.endsWith('_proj') && ['gate_proj', 'up_proj', 'down_proj'].includes(short) ? 'mlp' : 'self_attn'}.${short}`;
const key = (module: string) => `base_model.model.${module}.bias`;

type Tensors = Parameters<typeof encodeSafetensors>[0];
const values = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 31 + i * 0.7));

/** Biases for the given short names in both layers. */
function biases(shorts: string[]): Tensors {
  const tensors: Tensors = {};
  let seed = 1;
  for (const layer of [0, 1]) for (const s of shorts) tensors[key(path(layer, s))] = { dtype: 'F32', shape: [OUT[s]!], data: values(OUT[s]!, seed++) };
  return tensors;
}

const config = (patch: Record<string, unknown> = {}) => JSON.stringify({ peft_type: 'BITFIT', target_modules: null, task_type: 'CAUSAL_LM', base_model_name_or_path: null, ...patch });
const parse = (cfg: string, tensors: Tensors, arch = QWEN2) => parseDelta('bf', { config: cfg, weights: encodeSafetensors(tensors) }, arch, LIMITS);

function problemsOf(cfg: string, tensors: Tensors, arch = QWEN2): string[] {
  try {
    parse(cfg, tensors, arch);
  } catch (err) {
    assert.ok(err instanceof DeltaValidationError, String(err));
    for (const p of err.problems) assert.ok(err.message.includes(p));
    return err.problems;
  }
  assert.fail('the delta was accepted');
}

/** Each pattern matches exactly one problem and there are no others. */
function assertProblems(problems: string[], patterns: RegExp[]): void {
  assert.equal(problems.length, patterns.length, JSON.stringify(problems, null, 1));
  for (const re of patterns) assert.equal(problems.filter((p) => re.test(p)).length, 1, `${re} in ${JSON.stringify(problems, null, 1)}`);
}

describe('BitFit: valid adapters', () => {
  it('is detected by peft_type BITFIT and lays each tuned bias out as stored, with a flag where the base has a bias', () => {
    const tensors = biases(['q_proj', 'k_proj', 'down_proj']);
    const delta = parse(config(), tensors);
    assert.equal(delta.kind, 'bitfit');
    assert.equal(deltaKind('bitfit').family, 'specification');
    assert.deepEqual(delta.summary, { modules: 6, params: 2 * (64 + 32 + 64) });
    assert.equal(delta.virtualTokens, 0);
    for (const layer of [0, 1]) {
      for (const s of ['q_proj', 'k_proj', 'down_proj']) assert.deepEqual(delta.tensors.get(bitfitBias(path(layer, s))), tensors[key(path(layer, s))]!.data);
      assert.deepEqual(delta.tensors.get(bitfitSet(path(layer, 'q_proj'))), Float32Array.of(1), 'q_proj has a base bias: its flag is set');
      assert.equal(delta.tensors.get(bitfitSet(path(layer, 'v_proj'))), undefined, 'v_proj is left to the base (neutral flag 0)');
    }
    assert.equal(delta.tensors.has(bitfitSet(path(0, 'down_proj'))), false, 'down_proj has no base bias, so no flag');
    assert.deepEqual(delta.warnings.filter((w) => /targeted but has no \.bias/.test(w)).length, 8, 'the other targeted layers keep the base bias, with a warning each');
  });

  it('slot tensors: a bias per projection, a flag only for projections the base gives a bias', () => {
    const names = bitfit.slotTensors(QWEN2, LIMITS).map((s) => s.name);
    assert.equal(names.filter((n) => n.startsWith('bitfit.')).length, 14);
    assert.deepEqual(names.filter((n) => n.startsWith('bitfit_set.')).sort(), ['k_proj', 'q_proj', 'v_proj'].flatMap((s) => [0, 1].map((l) => bitfitSet(path(l, s)))).sort());
    assert.equal(bitfit.slotTensors(GPT2, LIMITS).filter((s) => s.name.startsWith('bitfit_set.')).length, 4, "every GPT-2 Conv1D has a bias");
  });

  it('F16 and BF16 biases are read exactly; GPT-2 modules are addressed under transformer.', () => {
    const data = Float32Array.from({ length: 96 }, (_, i) => (i % 9) * 0.25 - 1);
    const delta = parse(config({ target_modules: ['c_attn'] }), { 'base_model.model.transformer.h.0.attn.c_attn.bias': { dtype: 'BF16', shape: [96], data: float32ToBf16(data) } }, GPT2);
    assert.deepEqual(delta.tensors.get(bitfitBias('transformer.h.0.attn.c_attn')), data);
    assert.deepEqual(delta.summary, { modules: 1, params: 96 });
  });

  it('untargeted and unknown tensors and fields are ignored with a warning each; layers_to_transform narrows the targets', () => {
    const tensors = { ...biases(['q_proj']), 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight': { dtype: 'F32' as const, shape: [2], data: new Float32Array(2) } };
    const delta = parse(config({ target_modules: ['q_proj'], layers_to_transform: [1], lora_alpha: 16 }), tensors);
    assert.deepEqual([...delta.tensors.keys()].sort(), [bitfitBias(path(1, 'q_proj')), bitfitSet(path(1, 'q_proj'))]);
    assert.ok(delta.warnings.some((w) => /model\.layers\.0\.self_attn\.q_proj: its bias is ignored: target_modules does not select it/.test(w)));
    assert.ok(delta.warnings.some((w) => /lora_A\.weight: ignored/.test(w)));
    assert.ok(delta.warnings.some((w) => /lora_alpha is ignored/.test(w)));
  });

  it('feeds list the tokens whose row has a BitFit delta and their slots', () => {
    assert.deepEqual(tokensWithDelta([-1, 2, 2, -1, 0]), { tokens: [1, 2, 4], slots: [2, 2, 0] });
    const feeds = bitfit.feeds({ tokenSlots: Int32Array.of(-1, -1), slotCount: 0, virtualIndex: Int32Array.of(-1, -1) });
    assert.deepEqual(feeds.map((f) => [f.name, f.dims]), [['bitfit_tokens', [0, 1]], ['bitfit_slots', [0]]]);
  });
});

describe('BitFit: bad adapters name every problem', () => {
  it('config fields are type- and range-checked together', () => {
    const problems = problemsOf(config({ target_modules: 5, exclude_modules: '(unclosed', task_type: 'SUMMARIZE', base_model_name_or_path: 7, inference_mode: 'yes', auto_mapping: [1], modules_to_save: ['lm_head'], layers_to_transform: [-1], revision: 'x'.repeat(300) }), biases(['q_proj']));
    assertProblems(problems, [/target_modules must be a string or a list/, /exclude_modules:/, /task_type must be one of/, /base_model_name_or_path must be a string/, /inference_mode must be true or false/, /auto_mapping must be an object/, /modules_to_save:/, /layers_to_transform must be/, /revision is 300 characters/]);
  });

  it('targets must exist and be linear layers of the blocks', () => {
    assertProblems(problemsOf(config({ target_modules: ['nonexistent'] }), biases(['q_proj'])), [/target_modules selects no module/]);
    const problems = problemsOf(config({ target_modules: ['q_proj', 'input_layernorm', 'lm_head', 'self_attn'] }), biases(['q_proj']));
    assertProblems(problems, [/'model\.layers\.0\.input_layernorm', a norm module/, /'model\.layers\.1\.input_layernorm', a norm module/, /'lm_head', the output head/, /'model\.layers\.0\.self_attn', a container module/, /'model\.layers\.1\.self_attn', a container module/]);
  });

  it('shapes, dtypes and values are checked per tensor, and naming the tensor', () => {
    const tensors = biases(['q_proj', 'k_proj']);
    tensors[key(path(0, 'q_proj'))] = { dtype: 'F32', shape: [32], data: new Float32Array(32) };
    tensors[key(path(1, 'q_proj'))] = { dtype: 'F32', shape: [1, 64], data: new Float32Array(64) };
    tensors[key(path(0, 'k_proj'))] = { dtype: 'I32', shape: [32], data: new Int32Array(32) };
    (tensors[key(path(1, 'k_proj'))]!.data as Float32Array)[5] = Infinity;
    assertProblems(problemsOf(config(), tensors), [
      /layers\.0\.self_attn\.q_proj\.bias: shape \[32\], expected \[64\]/,
      /layers\.1\.self_attn\.q_proj\.bias: shape \[1,64\], expected \[64\]/,
      /layers\.0\.self_attn\.k_proj\.bias: dtype I32 is not supported/,
      /layers\.1\.self_attn\.k_proj\.bias: value at index 5 is not finite \(Infinity\)/,
    ]);
  });

  it('an adapter with no bias for any target is refused; so is another peft_type handed to the kind', () => {
    assertProblems(problemsOf(config({ target_modules: ['o_proj'] }), biases(['q_proj'])), [/holds no bias for the modules/]);
    assert.throws(() => bitfit.parse({ name: 'x', config: JSON.parse(config({ peft_type: 'LORA' })), weights: undefined as never, arch: QWEN2, limits: LIMITS }), /peft_type "LORA" \(a string\) is not supported here \(expected 'BITFIT'\)/);
  });
});

describe('BitFit: the projection hook against its spec', () => {
  const random = mulberry32(11);
  const fill = (n: number, scale: number) => Float32Array.from({ length: n }, () => scale * (2 * random() - 1));
  const IN = 5, OUT = 6;
  // Slot 0 and 2 set the layer; slot 1 holds a delta that leaves it unset (flag 0, bias 0).
  const tokenSlots = [-1, 0, 2, 1, -1, 0, 2];
  const x = fill(tokenSlots.length * IN, 1);
  const w = fill(OUT * IN, 0.5);
  const baseBias = fill(OUT, 1);
  const tuned = [fill(OUT, 1), new Float32Array(OUT), fill(OUT, 1)];

  /** y = x Wᵀ + b_row in float64: b_row the slot's tuned bias where it sets the layer, else the base's. */
  const spec = (t: number, hasBase: boolean) => Array.from({ length: OUT }, (_, o) => {
    let acc = 0;
    for (let i = 0; i < IN; i++) acc += x[t * IN + i]! * w[o * IN + i]!;
    const s = tokenSlots[t]!;
    return acc + (s === 0 || s === 2 ? tuned[s]![o]! : hasBase ? baseBias[o]! : 0);
  });

  async function run(hasBase: boolean, slots: number[], slotCount: number) {
    const p: ProjectionSpec = { name: 'm', modulePath: 'm', inFeatures: IN, outFeatures: OUT, weight: 'm.weight', bias: hasBase ? 'm.bias' : undefined, layout: 'out_in' };
    const stack = (i: number) => (i < slotCount ? tuned[i]! : new Float32Array(0));
    const feeds = [
      ...bitfit.feeds({ tokenSlots: Int32Array.from(slots), slotCount, virtualIndex: new Int32Array(slots.length).fill(-1) }),
      { name: 'x', data: x, dims: [slots.length, IN] },
      { name: bitfitBias('m'), data: Float32Array.from([0, 1, 2].flatMap((i) => [...stack(i)])), dims: [slotCount, OUT] },
      ...(hasBase ? [{ name: bitfitSet('m'), data: Float32Array.from([1, 0, 1].slice(0, slotCount)), dims: [slotCount, 1] }] : []),
    ];
    const hook = bitfit.lowering(QWEN2, LIMITS);
    return runHookGraph(QWEN2, {
      weights: { 'm.weight': { data: w, dims: [OUT, IN] }, 'm.bias': { data: baseBias, dims: [OUT] } },
      feeds,
      build: (ctx) => {
        const input = ctx.input('x', 'float32', ['tokens', IN]);
        const y = ctx.b.op1('Gemm', [input, ctx.weight('m.weight'), ...(hasBase ? [ctx.weight('m.bias')] : [])], { transB: 1 });
        return { y, tuned: hook.projectionOutput!(ctx, p, input, y) };
      },
    });
  }

  for (const hasBase of [true, false]) {
    it(`${hasBase ? 'a layer with a base bias' : 'a layer without one'}: rows with the delta within 1e-6 of x Wᵀ + b_δ, every other row bit for bit the base Gemm's`, async () => {
      const { y, tuned: out } = await run(hasBase, tokenSlots, 3);
      tokenSlots.forEach((s, t) => {
        const row = out!.subarray(t * OUT, (t + 1) * OUT);
        if (s === 0 || s === 2) spec(t, hasBase).forEach((v, o) => assert.ok(Math.abs(row[o]! - v) <= 1e-6, `token ${t} out ${o}: ${row[o]} vs ${v}`));
        else if (hasBase || s < 0) assert.deepEqual(row, y!.subarray(t * OUT, (t + 1) * OUT), `token ${t} keeps the base row`);
      });
    });
  }

  it('a pass without BitFit rows (empty slot range) returns the base output unchanged', async () => {
    const none = tokenSlots.map(() => -1);
    const { y, tuned: out } = await run(true, none, 0);
    assert.deepEqual(out, y);
  });
});
