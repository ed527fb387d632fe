import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runHookGraph } from '../../../test/graph/hook-graph.js';
import type { NormParts } from '../../model/delta-hooks.js';
import { describeArchitecture } from '../../model/families/index.js';
import { mulberry32 } from '../../model/random.js';
import { encodeSafetensors, float32ToF16 } from '../../model/safetensors.js';
import { DeltaValidationError } from '../errors.js';
import type { DeltaLimits } from '../kind.js';
import { parseDelta } from '../parse.js';
import { deltaCells, lnBias, lnSet, lnTuning, lnWeight, normModules } from './ln-tuning.js';

const llamaConfig = { model_type: 'llama', hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, intermediate_size: 128, num_hidden_layers: 2, vocab_size: 300 };
const LLAMA = describeArchitecture(llamaConfig, new Set(), 'config.json');
const QWEN2 = describeArchitecture({ ...llamaConfig, model_type: 'qwen2' }, new Set(), 'config.json');
// GPT-2 with the original checkpoint's bare tensor names (`h.0.ln_1.weight`): modules are still `transformer.h.0.ln_1`.
const GPT2 = describeArchitecture({ model_type: 'gpt2', n_embd: 32, n_head: 4, n_layer: 2, vocab_size: 100 }, new Set(['h.0.ln_1.weight', 'wte.weight']), 'config.json');
const LIMITS: DeltaLimits = { maxRank: 8, maxVirtualTokens: 64, maxBottleneck: 256 };

type Tensors = Parameters<typeof encodeSafetensors>[0];
const key = (module: string, param: 'weight' | 'bias') => `base_model.model.${module}.ln_tuning_layers.${param}`;
const values = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => 1 + 0.1 * Math.sin(seed * 17 + i));

function vectors(modules: string[], params: ('weight' | 'bias')[], H: number): Tensors {
  const tensors: Tensors = {};
  modules.forEach((m, i) => params.forEach((p, j) => (tensors[key(m, p)] = { dtype: 'F32', shape: [H], data: values(H, 2 * i + j) })));
  return tensors;
}

const LLAMA_NORMS = ['model.layers.0.input_layernorm', 'model.layers.0.post_attention_layernorm', 'model.layers.1.input_layernorm', 'model.layers.1.post_attention_layernorm', 'model.norm'];
const GPT2_NORMS = ['transformer.h.0.ln_1', 'transformer.h.0.ln_2', 'transformer.h.1.ln_1', 'transformer.h.1.ln_2', 'transformer.ln_f'];
const config = (patch: Record<string, unknown> = {}) => JSON.stringify({ peft_type: 'LN_TUNING', target_modules: null, exclude_modules: null, modules_to_save: null, task_type: 'CAUSAL_LM', inference_mode: true, peft_version: '0.21.0', ...patch });
const parse = (cfg: string, tensors: Tensors, arch = LLAMA) => parseDelta('ln', { config: cfg, weights: encodeSafetensors(tensors) }, arch, LIMITS);

function problemsOf(cfg: string, tensors: Tensors, arch = LLAMA): string[] {
  try {
    parse(cfg, tensors, arch);
  } catch (err) {
    assert.ok(err instanceof DeltaValidationError, String(err));
    return err.problems;
  }
  assert.fail('the delta was accepted');
}

function assertProblems(problems: string[], patterns: RegExp[]): void {
  assert.equal(problems.length, patterns.length, JSON.stringify(problems, null, 1));
  for (const re of patterns) assert.equal(problems.filter((p) => re.test(p)).length, 1, `${re} in ${JSON.stringify(problems, null, 1)}`);
}

describe('LN tuning: valid adapters', () => {
  it("PEFT's default targets for llama (every norm, the final one included), laid out as stored with a flag each", () => {
    const tensors = vectors(LLAMA_NORMS, ['weight'], 64);
    const delta = parse(config(), tensors);
    assert.equal(delta.kind, 'ln_tuning');
    assert.deepEqual(delta.summary, { modules: 5, params: 5 * 64 });
    assert.deepEqual(delta.warnings, []);
    for (const m of LLAMA_NORMS) {
      assert.deepEqual(delta.tensors.get(lnWeight(m)), tensors[key(m, 'weight')]!.data);
      assert.deepEqual(delta.tensors.get(lnSet(m)), Float32Array.of(1));
    }
  });

  it("qwen2's default is post_attention_layernorm only: the other norms' tensors are ignored with a warning", () => {
    const delta = parse(config(), vectors(LLAMA_NORMS, ['weight'], 64), QWEN2);
    assert.deepEqual(delta.summary, { modules: 2, params: 128 });
    assert.equal(delta.warnings.filter((w) => /target_modules does not select it/.test(w)).length, 3);
  });

  it('GPT-2 LayerNorms carry weight and bias (F16 read exactly), addressed under transformer. even with bare checkpoint names', () => {
    const tensors = vectors(GPT2_NORMS, ['weight', 'bias'], 32);
    const half = Float32Array.from({ length: 32 }, (_, i) => i * 0.125);
    tensors[key('transformer.ln_f', 'bias')] = { dtype: 'F16', shape: [32], data: float32ToF16(half) };
    const delta = parse(config({ target_modules: ['ln_1', 'ln_2', 'ln_f'] }), tensors, GPT2);
    assert.deepEqual(delta.summary, { modules: 5, params: 5 * 64 });
    assert.deepEqual(delta.tensors.get(lnBias('transformer.ln_f')), half);
    assert.equal(normModules(GPT2).get('h.1.ln_2.weight')!.path, 'transformer.h.1.ln_2');
  });

  it('an RMSNorm bias, a targeted norm without tensors, layers_to_transform (not an LNTuningConfig field) and unknown keys are warnings', () => {
    const tensors = { ...vectors(['model.layers.1.input_layernorm'], ['weight', 'bias'], 64), stray: { dtype: 'F32' as const, shape: [1], data: new Float32Array(1) } };
    const delta = parse(config({ target_modules: ['input_layernorm'], layers_to_transform: [0] }), tensors);
    assert.deepEqual([...delta.tensors.keys()], [lnWeight('model.layers.1.input_layernorm'), lnSet('model.layers.1.input_layernorm')], 'layer 1 is tuned: layers_to_transform is ignored, as PEFT ignores it');
    for (const re of [/input_layernorm\.ln_tuning_layers\.bias: ignored \(.*RMSNorm/, /layers\.0\.input_layernorm: targeted but has no ln_tuning_layers tensors/, /layers_to_transform is ignored \(LNTuningConfig has no such field/, /stray: ignored/]) {
      assert.ok(delta.warnings.some((w) => re.test(w)), `${re} in ${JSON.stringify(delta.warnings)}`);
    }
  });

  it('slot tensors per norm (bias only for LayerNorms) and per-token cells for the feeds', () => {
    assert.equal(lnTuning.slotTensors(LLAMA, LIMITS).length, 5 * 2);
    assert.equal(lnTuning.slotTensors(GPT2, LIMITS).length, 5 * 3);
    assert.deepEqual(deltaCells([-1, 2, 2, -1, 0]), { slots: [2, 2, 0], cells: [3, 0, 1, 3, 2] });
    assert.deepEqual(deltaCells([-1, -1]), { slots: [], cells: [0, 0] });
  });
});

describe('LN tuning: bad adapters name every problem', () => {
  it('config fields are type-checked together; modules_to_save is refused', () => {
    const problems = problemsOf(config({ target_modules: [''], exclude_modules: 3, modules_to_save: ['lm_head'], task_type: 7, peft_version: false }), vectors(LLAMA_NORMS, ['weight'], 64));
    assertProblems(problems, [/target_modules \[0\] must be a non-empty string/, /exclude_modules must be a string or a list/, /modules_to_save:/, /task_type must be one of/, /peft_version must be a string/]);
  });

  it('targets must be norms of the backbone', () => {
    assertProblems(problemsOf(config({ target_modules: 'model\\.nothing' }), {}), [/selects no module/]);
    const problems = problemsOf(config({ target_modules: ['q_proj', 'norm', 'lm_head'] }), vectors(['model.norm'], ['weight'], 64));
    assertProblems(problems, [/'model\.layers\.0\.self_attn\.q_proj', a linear module; LN tuning serves norm layers only/, /'model\.layers\.1\.self_attn\.q_proj', a linear module/, /'lm_head', the output head/]);
  });

  it('a LayerNorm needs weight and bias; shapes, dtypes and values are checked naming the tensor', () => {
    const tensors = vectors(GPT2_NORMS, ['weight', 'bias'], 32);
    delete tensors[key('transformer.h.0.ln_1', 'bias')];
    delete tensors[key('transformer.h.0.ln_2', 'weight')];
    tensors[key('transformer.h.1.ln_1', 'weight')] = { dtype: 'F32', shape: [64], data: new Float32Array(64) };
    tensors[key('transformer.h.1.ln_2', 'bias')] = { dtype: 'I64', shape: [32], data: new BigInt64Array(32) };
    (tensors[key('transformer.ln_f', 'weight')]!.data as Float32Array)[9] = NaN;
    assertProblems(problemsOf(config(), tensors, GPT2), [
      /transformer\.h\.0\.ln_1: base_model\.model\.transformer\.h\.0\.ln_1\.ln_tuning_layers\.bias is missing/,
      /transformer\.h\.0\.ln_2: .*ln_2\.ln_tuning_layers\.weight is missing/,
      /h\.1\.ln_1\.ln_tuning_layers\.weight: shape \[64\], expected \[32\]/,
      /h\.1\.ln_2\.ln_tuning_layers\.bias: dtype I64 is not supported/,
      /ln_f\.ln_tuning_layers\.weight: value at index 9 is not finite \(NaN\)/,
    ]);
  });

  it('an adapter with no tensors for any target is refused', () => {
    assertProblems(problemsOf(config({ target_modules: ['norm'] }), vectors(['model.layers.0.input_layernorm'], ['weight'], 64)), [/holds no ln_tuning_layers tensors/]);
  });
});

describe('LN tuning: the norm hook against its spec', () => {
  const random = mulberry32(12);
  const fill = (n: number, scale: number, offset = 0) => Float32Array.from({ length: n }, () => offset + scale * (2 * random() - 1));
  const H = 32, EPS = 1e-5;
  const tokenSlots = [-1, 0, 2, 1, -1, 0, 2];
  const x = fill(tokenSlots.length * H, 2);
  const base = { weight: fill(H, 0.3, 1), bias: fill(H, 0.3) };
  // Slots 0 and 2 set the norm; slot 1 holds a delta that leaves it unset.
  const slots = [{ weight: fill(H, 0.3, 1), bias: fill(H, 0.3) }, { weight: new Float32Array(H), bias: new Float32Array(H) }, { weight: fill(H, 0.3, 1), bias: fill(H, 0.3) }];
  const flags = [1, 0, 1];

  /** PyTorch's LayerNorm in float64 with the parameters of token t's row. */
  const spec = (t: number) => {
    const row = x.subarray(t * H, (t + 1) * H);
    const mean = row.reduce((a, v) => a + v, 0) / H;
    const inv = 1 / Math.sqrt(row.reduce((a, v) => a + (v - mean) ** 2, 0) / H + EPS);
    const p = slots[tokenSlots[t]!]!;
    return Array.from(row, (v, i) => (v - mean) * inv * p.weight[i]! + p.bias[i]!);
  };

  /** The hook on one of GPT-2's block norms (all T rows) and on its final norm (rows = `logitRows`' tokens). */
  async function run(logitRows: number[]) {
    const ln = 'transformer.h.0.ln_1', final = 'transformer.ln_f';
    const stack = (name: 'weight' | 'bias') => Float32Array.from(slots.flatMap((s) => [...s[name]]));
    const feeds = [
      ...lnTuning.feeds({ tokenSlots: Int32Array.from(tokenSlots), slotCount: 3, virtualIndex: new Int32Array(tokenSlots.length).fill(-1) }),
      { name: 'x', data: x, dims: [tokenSlots.length, H] },
      { name: 'logits_index', dtype: 'int64' as const, data: logitRows, dims: [logitRows.length] },
      ...[ln, final].flatMap((m) => [
        { name: lnWeight(m), data: stack('weight'), dims: [3, H] },
        { name: lnBias(m), data: stack('bias'), dims: [3, H] },
        { name: lnSet(m), data: Float32Array.from(flags), dims: [3, 1] },
      ]),
    ];
    const arch = describeArchitecture({ model_type: 'gpt2', n_embd: H, n_head: 4, n_layer: 1, vocab_size: 10, layer_norm_epsilon: EPS }, new Set(), 'config.json');
    const hook = lnTuning.lowering(arch, LIMITS);
    return runHookGraph(arch, {
      weights: Object.fromEntries(['h.0.ln_1', 'ln_f'].flatMap((n) => [[`transformer.${n}.weight`, { data: base.weight, dims: [H] }], [`transformer.${n}.bias`, { data: base.bias, dims: [H] }]])),
      feeds,
      build: (ctx) => {
        const { b } = ctx;
        const layerNorm = (v: string, w: string, bias: string) => b.op1('LayerNormalization', [v, w, bias], { axis: -1, epsilon: { float: EPS } });
        const ones = b.constant('float32', [H], Array<number>(H).fill(1)), zeros = b.constant('float32', [H], Array<number>(H).fill(0));
        const norm = (spec: NormParts['spec'], v: string, tokens?: string) => {
          const baseOut = layerNorm(v, ctx.weight(spec.weight), ctx.weight(spec.bias!));
          return { base: baseOut, tuned: hook.norm!(ctx, { spec, tokens, normalized: () => layerNorm(v, ones, zeros) }, baseOut) };
        };
        const input = ctx.input('x', 'float32', ['tokens', H]);
        const index = ctx.input('logits_index', 'int64', ['n']);
        const block = norm(arch.blocks[0]!.inputNorm, input);
        const last = norm(arch.finalNorm, b.op1('Gather', [input, index], { axis: 0 }), index);
        return { blockBase: block.base, block: block.tuned, finalBase: last.base, final: last.tuned };
      },
    });
  }

  /** Rows whose token's row sets the norm are within 1e-6 of the spec; every other row is the base's, bit for bit. */
  function check(out: Float32Array, base: Float32Array, tokens: number[], what: string) {
    tokens.forEach((t, r) => {
      const row = out.subarray(r * H, (r + 1) * H);
      if (flags[tokenSlots[t]!] === 1) spec(t).forEach((v, i) => assert.ok(Math.abs(row[i]! - v) <= 1e-6, `${what} row ${r} (token ${t}) [${i}]: ${row[i]} vs ${v}`));
      else assert.deepEqual(row, base.subarray(r * H, (r + 1) * H), `${what} row ${r} (token ${t}) keeps the base norm`);
    });
  }

  it('a block norm: the delta rows get normalized · w + b of their slot within 1e-6, the others the base bit for bit', async () => {
    const out = await run([6]);
    check(out['block']!, out['blockBase']!, tokenSlots.map((_, t) => t), 'block norm');
  });

  it("the final norm, whose rows are logits_index's tokens, selects by those tokens' rows", async () => {
    const logitRows = [6, 0, 3, 1, 2];
    const out = await run(logitRows);
    check(out['final']!, out['finalBase']!, logitRows, 'final norm');
  });
});
