import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SlotStacks } from '../../engine/slot-stacks.js';
import type { ArchitectureSpec } from '../../model/architecture.js';
import { describeArchitecture } from '../../model/families/index.js';
import { encodeSafetensors, float32ToBf16, float32ToF16 } from '../../model/safetensors.js';
import { DeltaValidationError } from '../errors.js';
import { deltaKind, type DeltaLimits, type ParsedDelta } from '../kind.js';
import { parseDelta } from '../parse.js';
import { PREFIX_KV, prefixKeyValues, prefixTuning } from './prefix-tuning.js';

// A tiny llama with grouped-query attention: 4 query heads, 2 key/value heads of 16 (W = 32), 3 layers.
const LLAMA = describeArchitecture(
  { model_type: 'llama', hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, intermediate_size: 128, num_hidden_layers: 3, vocab_size: 300 },
  new Set(['lm_head.weight']),
  'config.json',
);
// GPT-2: 4 heads of 8, no separate key/value heads (W = n_embd = 32), 2 layers.
const GPT2 = describeArchitecture({ model_type: 'gpt2', n_embd: 32, n_head: 4, n_layer: 2, vocab_size: 300 }, new Set(['transformer.wte.weight']), 'config.json');
const LIMITS: DeltaLimits = { maxRank: 8, maxVirtualTokens: 8, maxBottleneck: 64 };
const N = 5;

type Tensors = Parameters<typeof encodeSafetensors>[0];
const width = (arch: ArchitectureSpec) => arch.numLayers * 2 * arch.numKvHeads * arch.headDim;
/** Distinct values, so a transposed or shifted read would show. */
const embeddings = (n: number, arch: ArchitectureSpec) => Float32Array.from({ length: n * width(arch) }, (_, i) => Math.sin(i * 0.37) + i / 1000);

/** adapter_config.json as PEFT saves it for `arch` (after _prepare_prompt_learning_config). */
function config(arch: ArchitectureSpec, patch: Record<string, unknown> = {}): string {
  return JSON.stringify({
    auto_mapping: null,
    base_model_name_or_path: 'tiny',
    encoder_hidden_size: arch.numKvHeads * arch.headDim,
    inference_mode: true,
    init_weights: null,
    modules_to_save: null,
    num_attention_heads: arch.numKvHeads,
    num_layers: arch.numLayers,
    num_transformer_submodules: 1,
    num_virtual_tokens: N,
    peft_type: 'PREFIX_TUNING',
    peft_version: '0.21.0',
    prefix_projection: false,
    revision: null,
    task_type: 'CAUSAL_LM',
    token_dim: arch.numKvHeads * arch.headDim,
    ...patch,
  });
}

const weights = (arch: ArchitectureSpec, extra: Tensors = {}, n = N): Uint8Array =>
  encodeSafetensors({ prompt_embeddings: { dtype: 'F32', shape: [n, width(arch)], data: embeddings(n, arch) }, ...extra }, { format: 'pt' });
const parse = (arch: ArchitectureSpec, configText: string, weightBytes: Uint8Array): ParsedDelta => parseDelta('acme/prefix', { config: configText, weights: weightBytes }, arch, LIMITS);

/** The problems a parse reports (fails the test when it succeeds). */
function problems(arch: ArchitectureSpec, configText: string, weightBytes: Uint8Array): string[] {
  try {
    parse(arch, configText, weightBytes);
  } catch (err) {
    assert.ok(err instanceof DeltaValidationError, String(err));
    return err.problems;
  }
  assert.fail('the adapter was accepted');
}

/** Writes a delta into slot 1 of a stack and reads its keys/values back as the scheduler does. */
function throughSlot(arch: ArchitectureSpec, delta: ParsedDelta) {
  const stacks = new SlotStacks('prefix_tuning', prefixTuning.slotTensors(arch, LIMITS), 3);
  stacks.write(1, delta);
  return { stacks, layers: prefixTuning.prefixKeyValues!((t) => stacks.range(t, 1, 2), delta.virtualTokens, arch) };
}

describe('prefix tuning: parse and slot layout', () => {
  for (const arch of [LLAMA, GPT2]) {
    it(`${arch.family}: each layer's keys and values are PEFT's get_prompt split of prompt_embeddings`, () => {
      const delta = parse(arch, config(arch), weights(arch));
      assert.equal(delta.kind, 'prefix_tuning');
      assert.equal(delta.virtualTokens, N);
      assert.deepEqual(delta.summary, { virtualTokens: N, layers: arch.numLayers, params: N * width(arch), prefixProjection: false });
      assert.deepEqual(delta.warnings, []);
      const E = embeddings(N, arch);
      const W = arch.numKvHeads * arch.headDim;
      const { layers } = throughSlot(arch, delta);
      assert.equal(layers.length, arch.numLayers);
      // view [n, L·2, H, D] → permute [L·2, H, n, D] → pairs: layer l's key is slice 2l, its value 2l + 1.
      layers.forEach(({ key, value }, l) => {
        assert.equal(key.length, N * W);
        for (let p = 0; p < N; p++) {
          for (let i = 0; i < W; i++) {
            assert.equal(key[p * W + i], E[p * width(arch) + 2 * l * W + i], `layer ${l} key [${p}, ${i}]`);
            assert.equal(value[p * W + i], E[p * width(arch) + (2 * l + 1) * W + i], `layer ${l} value [${p}, ${i}]`);
          }
        }
      });
    });
  }

  it('a slot keeps nothing of a longer prefix written before (rows past n are zero)', () => {
    const stacks = new SlotStacks('prefix_tuning', prefixTuning.slotTensors(LLAMA, LIMITS), 2);
    stacks.write(0, parse(LLAMA, config(LLAMA, { num_virtual_tokens: 8 }), weights(LLAMA, {}, 8)));
    stacks.write(0, parse(LLAMA, config(LLAMA, { num_virtual_tokens: 2 }), weights(LLAMA, {}, 2)));
    const all = prefixKeyValues(stacks.range(PREFIX_KV, 0, 1), 8, LLAMA);
    const W = LLAMA.numKvHeads * LLAMA.headDim;
    for (const { key, value } of all) assert.ok(key.subarray(2 * W).every((v) => v === 0) && value.subarray(2 * W).every((v) => v === 0));
  });

  it('slot tensor: [layers, 2, max virtual tokens, kvHeads·headDim], read on the host only; no graph hooks or feeds', () => {
    assert.deepEqual(prefixTuning.slotTensors(LLAMA, LIMITS), [{ name: PREFIX_KV, length: 3 * 2 * 8 * 32, neutral: 0, dims: [3, 2, 8, 32], hostOnly: true }]);
    assert.deepEqual(prefixTuning.lowering(LLAMA, LIMITS), { kind: 'prefix_tuning' });
    assert.deepEqual(prefixTuning.feeds({ tokenSlots: new Int32Array([0, -1]), slotCount: 1, virtualIndex: new Int32Array([-1, -1]) }), []);
    assert.equal(deltaKind('prefix_tuning').family, 'addition');
    assert.throws(() => prefixKeyValues(new Float32Array(3 * 2 * 8 * 32), 9, LLAMA), /cannot hold 9 virtual tokens/);
  });

  it('F16 and BF16 prefixes are read exactly', () => {
    const E = embeddings(N, LLAMA);
    for (const [dtype, data] of [['F16', float32ToF16(E)], ['BF16', float32ToBf16(E)]] as const) {
      const bytes = encodeSafetensors({ prompt_embeddings: { dtype, shape: [N, width(LLAMA)], data } });
      const key = throughSlot(LLAMA, parse(LLAMA, config(LLAMA), bytes)).layers[0]!.key;
      const tolerance = dtype === 'F16' ? 1e-3 : 1e-2;
      assert.ok(Math.abs(key[1]! - E[1]!) < tolerance && key[1] !== 0, `${dtype}: ${key[1]} vs ${E[1]}`);
    }
  });

  it('prefix_projection adapters are served from the saved (projected) prefix; un-projected embeddings are named', () => {
    const delta = parse(LLAMA, config(LLAMA, { prefix_projection: true, encoder_hidden_size: 128 }), weights(LLAMA));
    assert.equal(delta.summary['prefixProjection'], true);
    const raw = encodeSafetensors({ prompt_embeddings: { dtype: 'F32', shape: [N, 32], data: new Float32Array(N * 32) } });
    assert.match(problems(LLAMA, config(LLAMA, { prefix_projection: true }), raw).join('\n'), /prompt_embeddings: shape \[5,32\], expected \[5, 192\].*before prefix_projection's MLP/);
  });

  it('tensors other than prompt_embeddings are ignored with a warning, as PEFT ignores them', () => {
    const extra: Tensors = { 'prompt_encoder.default.transform.0.weight': { dtype: 'F32', shape: [2], data: new Float32Array(2) } };
    const delta = parse(LLAMA, config(LLAMA), weights(LLAMA, extra));
    assert.deepEqual(delta.warnings, ['prompt_encoder.default.transform.0.weight: ignored (a prefix-tuning adapter is read from prompt_embeddings alone; PEFT ignores unexpected keys)']);
  });
});

describe('prefix tuning: bad adapters are refused, naming the field or tensor', () => {
  const refused: [string, Record<string, unknown>, RegExp][] = [
    ['no num_virtual_tokens', { num_virtual_tokens: undefined }, /num_virtual_tokens is required/],
    ['zero virtual tokens', { num_virtual_tokens: 0 }, /num_virtual_tokens must be at least 1, got 0/],
    ['fractional virtual tokens', { num_virtual_tokens: 2.5 }, /num_virtual_tokens must be an integer, got 2\.5/],
    ['virtual tokens as a string', { num_virtual_tokens: '5' }, /num_virtual_tokens must be an integer, got "5" \(a string\)/],
    ['more virtual tokens than the server allows', { num_virtual_tokens: 9 }, /num_virtual_tokens 9 exceeds the server's max virtual tokens 8/],
    ['another model width', { token_dim: 64 }, /token_dim 64 does not match the backbone's key\/value width 32 \(num_key_value_heads 2 × head_dim 16\)/],
    ['query heads instead of key/value heads', { num_attention_heads: 4 }, /num_attention_heads 4 does not match the backbone's 2 key\/value heads/],
    ['another depth', { num_layers: 2 }, /num_layers 2 does not match the backbone's 3 layers/],
    ['an encoder-decoder prefix', { num_transformer_submodules: 2 }, /num_transformer_submodules 2 is for encoder-decoder models/],
    ['a sequence-to-sequence task', { task_type: 'SEQ_2_SEQ_LM' }, /task_type 'SEQ_2_SEQ_LM' is not served/],
    ['an unknown task', { task_type: 'TRANSLATE' }, /task_type must be one of .*got "TRANSLATE"/],
    ['prefix_projection not a boolean', { prefix_projection: 'yes' }, /prefix_projection must be true or false/],
    ['inference_mode not a boolean', { inference_mode: 1 }, /inference_mode must be true or false, got 1/],
    ['a bad encoder_hidden_size', { encoder_hidden_size: -4 }, /encoder_hidden_size must be at least 1, got -4/],
    ['an unknown init_weights', { init_weights: 'gaussian' }, /init_weights must be one of 'zero'/],
    ['modules_to_save', { modules_to_save: ['lm_head'] }, /modules_to_save is not supported/],
    ['a non-string base model', { base_model_name_or_path: 5 }, /base_model_name_or_path must be a string or null, got 5/],
    ['auto_mapping not an object', { auto_mapping: 'x' }, /auto_mapping must be an object or null/],
  ];
  for (const [label, patch, message] of refused) {
    it(label, () => {
      const found = problems(LLAMA, config(LLAMA, patch), weights(LLAMA));
      assert.ok(found.every((p) => p.startsWith('adapter_config.json: ')), found.join('\n'));
      assert.match(found.join('\n'), message);
    });
  }

  it('every config problem is reported at once', () => {
    const found = problems(LLAMA, config(LLAMA, { num_layers: 7, token_dim: 8, task_type: 'SEQ_CLS', prefix_projection: 3 }), weights(LLAMA));
    assert.equal(found.length, 4, found.join('\n'));
  });

  it('GPT-2 names its heads n_head', () => {
    assert.match(problems(GPT2, config(GPT2, { token_dim: 64 }), weights(GPT2)).join('\n'), /key\/value width 32 \(n_head 4 × head_dim 8\)/);
  });

  const tensorCases: [string, Uint8Array, RegExp][] = [
    ['no prompt_embeddings', encodeSafetensors({ prefix: { dtype: 'F32', shape: [N, width(LLAMA)], data: embeddings(N, LLAMA) } }), /has no prompt_embeddings tensor/],
    ['rows other than num_virtual_tokens', weights(LLAMA, {}, 4), /prompt_embeddings: shape \[4,192\], expected \[5, 192\] \(num_virtual_tokens 5; 3 layers × key and value × width 32\)/],
    ['a one-dimensional prefix', encodeSafetensors({ prompt_embeddings: { dtype: 'F32', shape: [N * width(LLAMA)], data: embeddings(N, LLAMA) } }), /prompt_embeddings: shape \[960\], expected \[5, 192\]/],
    ['an integer prefix', encodeSafetensors({ prompt_embeddings: { dtype: 'I32', shape: [N, width(LLAMA)], data: new Int32Array(N * width(LLAMA)) } }), /prompt_embeddings: dtype I32 is not supported/],
    ['a NaN', encodeSafetensors({ prompt_embeddings: { dtype: 'F32', shape: [N, width(LLAMA)], data: embeddings(N, LLAMA).map((v, i) => (i === 400 ? NaN : v)) } }), /prompt_embeddings: value at index 400 \(virtual token 2\) is not finite \(NaN\)/],
    ['an infinity', encodeSafetensors({ prompt_embeddings: { dtype: 'F32', shape: [N, width(LLAMA)], data: embeddings(N, LLAMA).map((v, i) => (i === 7 ? -Infinity : v)) } }), /index 7 \(virtual token 0\) is not finite \(-Infinity\)/],
  ];
  for (const [label, bytes, message] of tensorCases) {
    it(label, () => assert.match(problems(LLAMA, config(LLAMA), bytes).join('\n'), message));
  }

  it('a wrong dtype and shape are reported together', () => {
    const bytes = encodeSafetensors({ prompt_embeddings: { dtype: 'I32', shape: [2, 3], data: new Int32Array(6) } });
    assert.equal(problems(LLAMA, config(LLAMA), bytes).length, 2);
  });
});
