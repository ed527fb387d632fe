/**
 * Training prefix tuning (src/deltas/kinds/prefix-tuning-training.ts): the first AdamW step against
 * the float64 oracle with PEFT's PrefixEncoder (embedding, or Linear → Tanh → Linear over it) and
 * get_prompt's split into per-layer keys and values (test/oracle/kinds/prefix-tuning.ts), with and
 * without prefix_projection, on Llama and Qwen2 (grouped key/value heads) and GPT-2; PEFT's
 * initialisation; options refused with the field named; and the written delta: the projected
 * prefix as save_pretrained writes it, accepted by the serving kind and read back by the oracle.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import '../../src/deltas/kinds/index.js';
import type { PrefixTuningLayout } from '../../src/deltas/kinds/prefix-tuning-training.js';
import { parseDelta } from '../../src/deltas/parse.js';
import { trainableKind, TrainingOptionsError } from '../../src/deltas/training.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tempDir } from '../helpers.js';
import { loadSafetensorsF32, readConfig, writeTinyCheckpoint, type TinyFamily } from '../oracle/checkpoints.js';
import { loadOraclePrefix, prefixEncoderOracleDelta } from '../oracle/kinds/prefix-tuning.js';
import { checkFirstStep } from '../oracle/training-step.js';
import type { OracleDelta } from '../oracle/transformer.js';

const LIMITS = { maxRank: 8, maxVirtualTokens: 8, maxBottleneck: 8 };
const kind = trainableKind('prefix_tuning');

const EXAMPLES = [
  { inputIds: [5, 17, 250, 9, 42, 100, 7, 61, 3, 88], labels: [-100, -100, -100, -100, 42, 100, 7, 61, 3, 88] },
  { inputIds: [100, 6, 77, 120, 33, 210, 211], labels: [100, 6, 77, 120, 33, 210, 211] },
];

/** The oracle's PrefixEncoder from the trainer's parameters, by PEFT's names. */
function oracleOf(model: any, options: unknown, p: ReadonlyMap<string, Float64Array>): OracleDelta { // eslint-disable-line @typescript-eslint/no-explicit-any
  const l = options as PrefixTuningLayout;
  const at = (name: string) => p.get(name)!;
  const params = l.prefixProjection
    ? { projection: { embedding: at('prompt_encoder.embedding.weight'), w1: at('prompt_encoder.transform.0.weight'), b1: at('prompt_encoder.transform.0.bias'), w2: at('prompt_encoder.transform.2.weight'), b2: at('prompt_encoder.transform.2.bias') } }
    : { prefix: at('prompt_embeddings') };
  return prefixEncoderOracleDelta(params, l.numVirtualTokens, model);
}

function tinyModel(family: TinyFamily): string {
  const dir = tempDir();
  writeTinyCheckpoint(dir, family, { seed: 3 });
  return dir;
}

describe('prefix tuning training: the first AdamW step equals the float64 oracle', () => {
  const cases: { family: TinyFamily; options: Record<string, unknown>; rows?: number }[] = [
    { family: 'llama', options: { num_virtual_tokens: 3 } },
    { family: 'llama', options: { num_virtual_tokens: 2, prefix_projection: true, encoder_hidden_size: 8 } },
    { family: 'qwen2', options: { num_virtual_tokens: 3, prefix_projection: true }, rows: 1 },
    { family: 'qwen2', options: { num_virtual_tokens: 2 } },
    { family: 'gpt2', options: { num_virtual_tokens: 2 } },
    { family: 'gpt2', options: { num_virtual_tokens: 3, prefix_projection: true, encoder_hidden_size: 6 } },
  ];
  for (const { family, options, rows } of cases) {
    it(`${family}: ${JSON.stringify(options)}${rows ? ', one row per micro-batch' : ''}`, async () => {
      const modelDir = tinyModel(family);
      const model = readConfig(modelDir);
      const report = await checkFirstStep({ kind: 'prefix_tuning', options, modelDir, seed: 5, examples: EXAMPLES, rows, oracleDeltas: (o, p) => [oracleOf(model, o, p)], limits: LIMITS, samples: 4 });
      console.log(family, JSON.stringify(options), report);
    });
  }
});

describe('prefix tuning training: initialisation and options as PEFT', () => {
  const { arch } = openCheckpoint(tinyModel('llama'));
  const T = arch.numKvHeads * arch.headDim;

  it("torch's defaults: Embedding N(0, 1), Linear U(±1/sqrt(in)); init_weights 'zero' zeroes the last layer (or the embedding)", () => {
    const projected = kind.init(arch, kind.resolve(arch, kind.options.parse({ num_virtual_tokens: 8, prefix_projection: true, encoder_hidden_size: 16 }), LIMITS), 3);
    assert.deepEqual([...projected.keys()], ['prompt_encoder.embedding.weight', 'prompt_encoder.transform.0.weight', 'prompt_encoder.transform.0.bias', 'prompt_encoder.transform.2.weight', 'prompt_encoder.transform.2.bias']);
    const embedding = projected.get('prompt_encoder.embedding.weight')!;
    assert.equal(embedding.length, 8 * T);
    const variance = embedding.reduce((s: number, v: number) => s + v * v, 0) / embedding.length;
    assert.ok(Math.abs(variance - 1) < 0.2, `embedding variance ${variance}`);
    const within = (name: string, bound: number) => {
      const values = projected.get(name)!;
      assert.ok(values.every((v: number) => Math.abs(v) <= bound) && values.some((v: number) => Math.abs(v) > 0.8 * bound), `${name} spans ±${bound}`);
    };
    within('prompt_encoder.transform.0.weight', 1 / Math.sqrt(T));
    within('prompt_encoder.transform.0.bias', 1 / Math.sqrt(T));
    within('prompt_encoder.transform.2.weight', 1 / Math.sqrt(16));
    within('prompt_encoder.transform.2.bias', 1 / Math.sqrt(16));

    const zero = kind.init(arch, kind.resolve(arch, kind.options.parse({ num_virtual_tokens: 2, prefix_projection: true, init_weights: 'zero' }), LIMITS), 3);
    assert.ok(zero.get('prompt_encoder.transform.2.weight')!.every((v: number) => v === 0) && zero.get('prompt_encoder.transform.2.bias')!.every((v: number) => v === 0));
    assert.ok(zero.get('prompt_encoder.transform.0.weight')!.some((v: number) => v !== 0));
    const flat = kind.init(arch, kind.resolve(arch, kind.options.parse({ num_virtual_tokens: 2, init_weights: 'zero' }), LIMITS), 3);
    assert.deepEqual([...flat.keys()], ['prompt_embeddings']);
    assert.equal(flat.get('prompt_embeddings')!.length, 2 * arch.numLayers * 2 * T);
    assert.ok(flat.get('prompt_embeddings')!.every((v: number) => v === 0));
  });

  it('options refused with the field named', () => {
    const refuse = (options: unknown, field: string) =>
      assert.throws(() => kind.resolve(arch, kind.options.parse(options), LIMITS), (e: unknown) => e instanceof TrainingOptionsError && e.field === field, JSON.stringify(options));
    refuse({ num_virtual_tokens: 4, encoder_hidden_size: 32 }, 'encoder_hidden_size');
    refuse({ num_virtual_tokens: 9 }, 'num_virtual_tokens');
    assert.equal(kind.options.safeParse({ num_virtual_tokens: 4, init_weights: 'ones' }).success, false);
    assert.equal(kind.options.safeParse({ num_virtual_tokens: 4, projection: true }).success, false);
    assert.equal(kind.options.safeParse({}).success, false, 'num_virtual_tokens has no default in PEFT');
  });
});

describe('prefix tuning training: the written delta', () => {
  for (const family of ['llama', 'gpt2'] as const) {
    it(`${family}: the projected prefix as save_pretrained writes it, PrefixTuningConfig's fields, served by prefix_tuning, read back by the oracle and fromDelta`, () => {
      const modelDir = tinyModel(family);
      const { arch } = openCheckpoint(modelDir);
      const model = readConfig(modelDir);
      const layout = kind.resolve(arch, kind.options.parse({ num_virtual_tokens: 3, prefix_projection: true, encoder_hidden_size: 12 }), LIMITS);
      const params = kind.init(arch, layout, 4);
      const files = kind.write(arch, layout, params, { baseModel: 'tiny' });
      const T = family === 'gpt2' ? 64 : 2 * 16;
      assert.deepEqual(JSON.parse(files.config), {
        auto_mapping: null, base_model_name_or_path: 'tiny', encoder_hidden_size: 12, inference_mode: true, init_weights: null, modules_to_save: null,
        num_attention_heads: family === 'gpt2' ? 4 : 2, num_layers: 2, num_transformer_submodules: 1, num_virtual_tokens: 3, peft_type: 'PREFIX_TUNING',
        prefix_projection: true, revision: null, task_type: 'CAUSAL_LM', token_dim: T,
      });
      const parsed = parseDelta('trained', files, arch, LIMITS);
      assert.deepEqual([parsed.kind, parsed.virtualTokens, parsed.warnings], ['prefix_tuning', 3, []]);

      const dir = tempDir();
      fs.writeFileSync(path.join(dir, 'adapter_config.json'), files.config);
      fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), files.weights);
      const saved = loadSafetensorsF32(path.join(dir, 'adapter_model.safetensors')).get('prompt_embeddings')!;
      assert.deepEqual(saved.shape, [3, 2 * 2 * T]);
      // What the training-mode encoder computes (float64) is what the inference-mode model loads.
      const f64 = new Map([...params].map(([k, v]) => [k, Float64Array.from(v)]));
      const trained = oracleOf(model, layout, f64).prefix!;
      const loaded = loadOraclePrefix(dir, model).prefix!;
      trained.forEach((layer, l) => (['key', 'value'] as const).forEach((part) => layer[part].forEach((row, p) => row.forEach((v, i) => assert.ok(Math.abs(v - loaded[l]![part][p]![i]!) <= 1e-6 * Math.max(1, Math.abs(v)), `layer ${l} ${part} [${p}, ${i}]`)))));

      const continued = kind.fromDelta({ config: files.config, weights: files.weights }, arch);
      assert.deepEqual(continued.options, { ...layout, prefixProjection: false });
      assert.deepEqual(continued.params.get('prompt_embeddings'), saved.data);
      const again = kind.write(arch, continued.options, continued.params, { baseModel: 'tiny' });
      assert.ok(Buffer.from(again.weights).equals(Buffer.from(files.weights)), 'a continued prefix writes the same prompt_embeddings');
    });
  }
});
