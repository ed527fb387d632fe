/**
 * Prompt tuning and P-tuning: parsing into the slot layout, every config field and tensor check
 * (each problem named, all reported together), and the per-pass index feeds.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeArchitecture } from '../../model/families/index.js';
import { encodeSafetensors, float32ToBf16, float32ToF16 } from '../../model/safetensors.js';
import { DeltaValidationError } from '../errors.js';
import { deltaKind, type DeltaLimits, type ParsedDelta } from '../kind.js';
import { parseDelta } from '../parse.js';
import { virtualIndexFeeds } from './virtual-tokens.js';

const H = 64;
const ARCH = describeArchitecture(
  { model_type: 'llama', hidden_size: H, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, intermediate_size: 128, num_hidden_layers: 2, vocab_size: 300, tie_word_embeddings: false },
  new Set(['lm_head.weight']),
  'config.json',
);
const LIMITS: DeltaLimits = { maxRank: 8, maxVirtualTokens: 16, maxBottleneck: 64 };
const N = 5;

type Tensors = Parameters<typeof encodeSafetensors>[0];
type PeftType = 'PROMPT_TUNING' | 'P_TUNING';

const embeddings = (n = N, d = H) => Float32Array.from({ length: n * d }, (_, i) => Math.sin(i * 0.37) * 2);

/** adapter_config.json as PEFT saves it, with `patch` applied (undefined deletes a field). */
function config(type: PeftType, patch: Record<string, unknown> = {}): Record<string, unknown> {
  const common = { auto_mapping: null, base_model_name_or_path: 'tiny', inference_mode: true, modules_to_save: null, num_attention_heads: 4, num_layers: 2, num_transformer_submodules: 1, num_virtual_tokens: N, peft_type: type, peft_version: '0.21.0', revision: null, task_type: 'CAUSAL_LM', token_dim: H };
  const own = type === 'P_TUNING'
    ? { encoder_dropout: 0.1, encoder_hidden_size: 32, encoder_num_layers: 2, encoder_reparameterization_type: 'MLP' }
    : { prompt_tuning_init: 'RANDOM', prompt_tuning_init_text: null, tokenizer_kwargs: null, tokenizer_name_or_path: null };
  const out: Record<string, unknown> = { ...common, ...own, ...patch };
  for (const [k, v] of Object.entries(patch)) if (v === undefined) delete out[k];
  return out;
}

function parse(type: PeftType, patch: Record<string, unknown> = {}, tensors: Tensors = { prompt_embeddings: { dtype: 'F32', shape: [N, H], data: embeddings() } }): ParsedDelta {
  return parseDelta('acme/style@1', { config: JSON.stringify(config(type, patch)), weights: encodeSafetensors(tensors) }, ARCH, LIMITS);
}

/** The problems a parse reports (it must fail with a DeltaValidationError). */
function problems(run: () => unknown): string[] {
  try {
    run();
  } catch (err) {
    assert.ok(err instanceof DeltaValidationError, String(err));
    assert.equal(err.code, 'invalid_delta');
    return err.problems;
  }
  assert.fail('expected a DeltaValidationError');
}

describe('prompt tuning / P-tuning: parse', () => {
  for (const [type, kind] of [['PROMPT_TUNING', 'prompt_tuning'], ['P_TUNING', 'p_tuning']] as const) {
    it(`${type}: prompt_embeddings land in the first n rows of a [V, H] slot, the rest zero`, () => {
      const delta = parse(type);
      assert.equal(delta.kind, kind);
      assert.equal(delta.virtualTokens, N);
      assert.deepEqual(delta.warnings, []);
      assert.deepEqual(delta.summary, { virtualTokens: N, params: N * H, ...(type === 'P_TUNING' ? { encoder: 'MLP' } : {}) });
      const spec = deltaKind(kind).slotTensors(ARCH, LIMITS);
      assert.deepEqual(spec, [{ name: `${kind}.embeddings`, length: LIMITS.maxVirtualTokens * H, neutral: 0, dims: [LIMITS.maxVirtualTokens, H] }]);
      const slot = delta.tensors.get(`${kind}.embeddings`)!;
      assert.equal(slot.length, LIMITS.maxVirtualTokens * H);
      assert.deepEqual(slot.subarray(0, N * H), embeddings());
      assert.ok(slot.subarray(N * H).every((v) => v === 0));
      assert.equal(deltaKind(kind).family, 'addition');
    });
  }

  it('P-tuning with an LSTM encoder serves the same saved embeddings (the encoder does not run at inference)', () => {
    const mlp = parse('P_TUNING');
    const lstm = parse('P_TUNING', { encoder_reparameterization_type: 'LSTM', encoder_num_layers: 3 });
    assert.deepEqual(lstm.tensors, mlp.tensors);
    assert.equal(lstm.summary['encoder'], 'LSTM');
  });

  it('F16 and BF16 embeddings are read as float32; null token_dim and num_transformer_submodules mean hidden size and 1', () => {
    const values = Float32Array.from([0.5, -1.25, 3, 0.125]);
    const data = Float32Array.from({ length: N * H }, (_, i) => values[i % 4]!); // exact in every dtype
    for (const dtype of ['F16', 'BF16'] as const) {
      const encoded = dtype === 'F16' ? float32ToF16(data) : float32ToBf16(data);
      const delta = parse('PROMPT_TUNING', { token_dim: null, num_transformer_submodules: null }, { prompt_embeddings: { dtype, shape: [N, H], data: encoded } });
      assert.deepEqual(delta.tensors.get('prompt_tuning.embeddings')!.subarray(0, N * H), data, dtype);
    }
  });

  it('every config field is type- and range-checked, and all problems (config and tensors) are reported together, each naming its field', () => {
    const cases: [PeftType, Record<string, unknown>, RegExp][] = [
      ['PROMPT_TUNING', { num_virtual_tokens: undefined }, /num_virtual_tokens is missing/],
      ['PROMPT_TUNING', { num_virtual_tokens: 0 }, /num_virtual_tokens must be at least 1, got 0/],
      ['PROMPT_TUNING', { num_virtual_tokens: 2.5 }, /num_virtual_tokens must be an integer, got 2.5/],
      ['PROMPT_TUNING', { num_virtual_tokens: '5' }, /num_virtual_tokens must be an integer, got "5"/],
      ['PROMPT_TUNING', { num_virtual_tokens: 17 }, /num_virtual_tokens 17 exceeds max virtual tokens 16/],
      ['PROMPT_TUNING', { token_dim: 128 }, /token_dim 128 does not match the model's hidden size 64/],
      ['PROMPT_TUNING', { token_dim: -1 }, /token_dim must be at least 1/],
      ['PROMPT_TUNING', { num_transformer_submodules: 2 }, /num_transformer_submodules 2 is not supported/],
      ['PROMPT_TUNING', { task_type: null }, /task_type is missing: PEFT applies the virtual tokens only in PeftModelForCausalLM/],
      ['PROMPT_TUNING', { task_type: 'SEQ_CLS' }, /task_type 'SEQ_CLS' is not supported/],
      ['PROMPT_TUNING', { task_type: 'CHAT' }, /task_type must be one of .*'CAUSAL_LM'.*, got "CHAT"/],
      ['PROMPT_TUNING', { inference_mode: 'yes' }, /inference_mode must be true or false/],
      ['PROMPT_TUNING', { modules_to_save: ['lm_head'] }, /modules_to_save: a delta may not replace modules/],
      ['PROMPT_TUNING', { num_attention_heads: 0 }, /num_attention_heads must be at least 1/],
      ['PROMPT_TUNING', { num_layers: 'two' }, /num_layers must be an integer/],
      ['PROMPT_TUNING', { base_model_name_or_path: 7 }, /base_model_name_or_path must be a string or null, got 7/],
      ['PROMPT_TUNING', { revision: 'x'.repeat(2000) }, /revision is 2000 characters long; at most 1024/],
      ['PROMPT_TUNING', { auto_mapping: 'x' }, /auto_mapping must be an object or null/],
      ['PROMPT_TUNING', { prompt_tuning_init: 'ZEROS' }, /prompt_tuning_init must be one of 'TEXT', 'SAMPLE_VOCAB', 'RANDOM', got "ZEROS"/],
      ['PROMPT_TUNING', { prompt_tuning_init: 'TEXT', prompt_tuning_init_text: 'Classify:' }, /prompt_tuning_init 'TEXT' needs tokenizer_name_or_path/],
      ['PROMPT_TUNING', { prompt_tuning_init: 'TEXT', tokenizer_name_or_path: 'gpt2' }, /prompt_tuning_init 'TEXT' needs prompt_tuning_init_text/],
      ['PROMPT_TUNING', { tokenizer_kwargs: { use_fast: true } }, /tokenizer_kwargs is only valid with prompt_tuning_init 'TEXT', not 'RANDOM'/],
      ['PROMPT_TUNING', { prompt_tuning_init_text: 5 }, /prompt_tuning_init_text must be a string or null/],
      ['PROMPT_TUNING', { tokenizer_kwargs: [1] }, /tokenizer_kwargs must be an object or null, got a list/],
      ['P_TUNING', { encoder_reparameterization_type: 'GRU' }, /encoder_reparameterization_type must be one of 'MLP', 'LSTM', got "GRU"/],
      ['P_TUNING', { encoder_hidden_size: 0 }, /encoder_hidden_size must be at least 1/],
      ['P_TUNING', { encoder_num_layers: 1.5 }, /encoder_num_layers must be an integer/],
      ['P_TUNING', { encoder_dropout: 2 }, /encoder_dropout must be at most 1, got 2/],
    ];
    for (const [type, patch, message] of cases) {
      const found = problems(() => parse(type, patch));
      assert.equal(found.length, 1, `${JSON.stringify(patch)}: ${found.join('; ')}`);
      assert.match(found[0]!, /^adapter_config\.json: /);
      assert.match(found[0]!, message, JSON.stringify(patch));
    }
    const poisoned = embeddings(7);
    poisoned[H + 3] = NaN;
    const all = problems(() => parse('PROMPT_TUNING', { token_dim: 32, task_type: 'SEQ_CLS', prompt_tuning_init: 7, num_virtual_tokens: 99 }, { prompt_embeddings: { dtype: 'F32', shape: [7, H], data: poisoned } }));
    assert.deepEqual(all.map((p) => p.split(/ |:/)[0] === 'adapter_config.json' ? p.split(' ')[1] : p.split(':')[0]), ['task_type', 'num_virtual_tokens', 'token_dim', 'prompt_tuning_init', 'prompt_embeddings'], all.join('; '));
    assert.match(all[4]!, /value at \[1, 3\] is not finite/);
  });

  it('TEXT init with its tokenizer and text is accepted (init-only fields do not change what is served)', () => {
    const delta = parse('PROMPT_TUNING', { prompt_tuning_init: 'TEXT', prompt_tuning_init_text: 'Classify the review:', tokenizer_name_or_path: 'gpt2', tokenizer_kwargs: { use_fast: true } });
    assert.deepEqual(delta.tensors, parse('PROMPT_TUNING').tensors);
  });

  it('prompt_embeddings is checked: present, float, [num_virtual_tokens, hidden], finite', () => {
    const f32 = (shape: number[], data = new Float32Array(shape.reduce((a, b) => a * b, 1))) => ({ dtype: 'F32' as const, shape, data });
    const nan = embeddings();
    nan[2 * H + 5] = NaN;
    const inf = embeddings();
    inf[7] = -Infinity;
    const cases: [Tensors, RegExp][] = [
      [{ other: f32([N, H]) }, /has no prompt_embeddings tensor/],
      [{ prompt_embeddings: f32([N + 1, H]) }, /prompt_embeddings: shape \[6,64\], expected \[5, 64\]/],
      [{ prompt_embeddings: f32([N, H * 2]) }, /prompt_embeddings: shape \[5,128\], expected \[5, 64\]/],
      [{ prompt_embeddings: f32([N * H]) }, /prompt_embeddings: shape \[320\], expected \[5, 64\]/],
      [{ prompt_embeddings: { dtype: 'I32', shape: [N, H], data: new Int32Array(N * H) } }, /prompt_embeddings: dtype I32 is not supported \(F32, F16, BF16\)/],
      [{ prompt_embeddings: f32([N, H], nan) }, /prompt_embeddings: value at \[2, 5\] is not finite \(NaN\)/],
      [{ prompt_embeddings: f32([N, H], inf) }, /prompt_embeddings: value at \[0, 7\] is not finite \(-Infinity\)/],
    ];
    for (const [tensors, message] of cases) {
      const found = problems(() => parse('PROMPT_TUNING', {}, tensors));
      assert.equal(found.length, 1, found.join('; '));
      assert.match(found[0]!, message);
    }
  });

  it('keys PEFT would load into the frozen backbone are refused; other keys are ignored with a warning, as PEFT ignores them', () => {
    const base = { prompt_embeddings: { dtype: 'F32' as const, shape: [N, H], data: embeddings() } };
    const row = { dtype: 'F32' as const, shape: [H], data: new Float32Array(H) };
    for (const key of ['base_model.model.norm.weight', 'base_model.model.layers.1.self_attn.q_proj.weight', 'word_embeddings.weight', 'base_model.lm_head.weight']) {
      const found = problems(() => parse('P_TUNING', {}, { ...base, [key]: row }));
      assert.deepEqual(found.map((p) => p.startsWith(`${key}: names a parameter of the frozen backbone`)), [true], found.join('; '));
    }
    const delta = parse('PROMPT_TUNING', {}, { ...base, 'prompt_encoder.default.embedding.weight': f32Row(), 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight': row, extra: row });
    assert.deepEqual(delta.warnings.map((w) => w.split(':')[0]).sort(), ['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight', 'extra', 'prompt_encoder.default.embedding.weight']);
    assert.match(delta.warnings.find((w) => w.startsWith('prompt_encoder'))!, /PEFT replaces the prompt encoder's weights with prompt_embeddings/);
    assert.deepEqual(delta.tensors, parse('PROMPT_TUNING').tensors);
  });
});

describe('prompt tuning / P-tuning: feeds', () => {
  it('(slot, k) for a virtual token of a row of this kind; the appended zero slot, unselected, for every other token', () => {
    assert.deepEqual(virtualIndexFeeds([0, 0, -1, 1], [0, -1, 0, 1], 2), { index: [0, 0, 2, 0, 2, 0, 1, 1], mask: Uint8Array.from([1, 0, 0, 1]) });
    assert.deepEqual(virtualIndexFeeds([-1, -1], [0, 1], 0), { index: [0, 0, 0, 0], mask: Uint8Array.from([0, 0]) });
  });

  it("the kind's feeds name its own inputs, so prompt tuning and P-tuning rows never read each other's slots", () => {
    for (const kind of ['prompt_tuning', 'p_tuning']) {
      const feeds = deltaKind(kind).feeds({ tokenSlots: Int32Array.from([1, 1, -1]), slotCount: 2, virtualIndex: Int32Array.from([0, -1, 0]) });
      assert.deepEqual(feeds.map((f) => [f.name, f.dtype, f.dims, Array.from(f.data)]), [
        [`${kind}.virtual_index`, 'int64', [3, 2], [1, 0, 2, 0, 2, 0]],
        [`${kind}.virtual_mask`, 'bool', [3, 1], [1, 0, 0]],
      ]);
    }
  });
});

function f32Row() {
  return { dtype: 'F32' as const, shape: [N, H], data: new Float32Array(N * H) };
}
