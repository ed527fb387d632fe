/**
 * Training prompt tuning (src/deltas/kinds/prompt-tuning-training.ts): the first AdamW step against
 * the float64 oracle with PEFT's virtual tokens (test/oracle/training-step.ts) on Llama, Qwen2 and
 * GPT-2; PromptEmbedding's initialisations (N(0, 1); TEXT from the tokenizer's ids of init_text,
 * cut or repeated, and the backbone's word embeddings); options refused with the field named; and
 * the writer's output as PEFT's save_pretrained writes it, accepted by the serving kind and read
 * back by the oracle's loader and by fromDelta.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import '../../src/deltas/kinds/index.js';
import { textInitIds, type PromptTuningLayout } from '../../src/deltas/kinds/prompt-tuning-training.js';
import { parseDelta } from '../../src/deltas/parse.js';
import { trainableKind, TrainingOptionsError, type TrainingBackbone } from '../../src/deltas/training.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { TextTokenizer } from '../../src/model/tokenizer.js';
import { readCheckpointRows, readCheckpointWeight } from '../../src/model/weight-data.js';
import { FIXTURE, tempDir } from '../helpers.js';
import { loadWeightsF32, writeTinyCheckpoint, type TinyFamily } from '../oracle/checkpoints.js';
import { oraclePromptTuning, promptTuningOracleDelta } from '../oracle/kinds/prompt-tuning.js';
import { checkFirstStep } from '../oracle/training-step.js';

const LIMITS = { maxRank: 8, maxVirtualTokens: 8, maxBottleneck: 8 };
const BASE_DIR = path.join(FIXTURE, 'base');
const kind = trainableKind('prompt_tuning');

/** Two rows of different lengths, the first with a masked prompt. */
const EXAMPLES = [
  { inputIds: [5, 17, 250, 9, 42, 100, 7, 61, 3, 88], labels: [-100, -100, -100, -100, 42, 100, 7, 61, 3, 88] },
  { inputIds: [100, 6, 77, 120, 33, 210, 211], labels: [100, 6, 77, 120, 33, 210, 211] },
];

const oracleDeltas = (options: unknown, params: ReadonlyMap<string, Float64Array>) => [promptTuningOracleDelta(params.get('prompt_embeddings')!, (options as PromptTuningLayout).numVirtualTokens)];

/** The server's view of a checkpoint directory, as TrainingService builds it. */
function backboneOf(modelDir: string, withTokenizer = true): TrainingBackbone {
  const ckpt = openCheckpoint(modelDir);
  return {
    ...(withTokenizer ? { tokenizer: TextTokenizer.fromDirectory(modelDir) } : {}),
    weight: (name) => readCheckpointWeight(ckpt, name),
    weightRows: (name, rows) => readCheckpointRows(ckpt, name, rows),
  };
}

describe('prompt tuning training: the first AdamW step equals the float64 oracle', () => {
  const cases: { family: TinyFamily; n: number; rows?: number }[] = [
    { family: 'llama', n: 3 },
    { family: 'qwen2', n: 4, rows: 1 },
    { family: 'gpt2', n: 2 },
  ];
  for (const { family, n, rows } of cases) {
    it(`${family}: ${n} virtual tokens from PEFT's RANDOM init${rows ? ', one row per micro-batch' : ''}`, async () => {
      const modelDir = tempDir();
      writeTinyCheckpoint(modelDir, family, { seed: 3 });
      const report = await checkFirstStep({ kind: 'prompt_tuning', options: { num_virtual_tokens: n }, modelDir, seed: 5, examples: EXAMPLES, rows, oracleDeltas, limits: LIMITS, samples: 6 });
      console.log(family, report);
    });
  }
});

describe('prompt tuning training: initialisation as PEFT', () => {
  const { arch } = openCheckpoint(BASE_DIR);

  it("RANDOM is nn.Embedding's N(0, 1), the same for the same seed", () => {
    const layout = kind.resolve(arch, kind.options.parse({ num_virtual_tokens: 8 }), LIMITS);
    const values = kind.init(arch, layout, 9).get('prompt_embeddings')!;
    assert.equal(values.length, 8 * arch.hiddenSize);
    const mean = values.reduce((s: number, v: number) => s + v, 0) / values.length;
    const variance = values.reduce((s: number, v: number) => s + (v - mean) ** 2, 0) / values.length;
    assert.ok(Math.abs(mean) < 0.1 && Math.abs(variance - 1) < 0.15, `mean ${mean}, variance ${variance}`);
    assert.deepEqual(kind.init(arch, layout, 9).get('prompt_embeddings'), values);
    assert.notDeepEqual(kind.init(arch, layout, 10).get('prompt_embeddings'), values);
  });

  it('TEXT: the tokenizer ids of init_text (special tokens included), cut or repeated to n, embedded by the backbone', () => {
    const backbone = backboneOf(BASE_DIR);
    const tokenizer = TextTokenizer.fromDirectory(BASE_DIR);
    const embed = loadWeightsF32(BASE_DIR).get('model.embed_tokens.weight')!;
    const H = arch.hiddenSize;
    for (const [text, n] of [['Classify the sentiment', 8], ['A much longer instruction text than the prompt has room for at all', 3]] as const) {
      const layout = kind.resolve(arch, kind.options.parse({ num_virtual_tokens: n, init: 'text', init_text: text }), LIMITS, backbone);
      const got = kind.init(arch, layout, 1, backbone).get('prompt_embeddings')!;
      // PromptEmbedding: tokenizer(init_text)["input_ids"]; [:n] if longer, else * ceil(n / len) then [:n].
      const ids = tokenizer.encode(text);
      const want = ids.length >= n ? ids.slice(0, n) : Array(Math.ceil(n / ids.length)).fill(ids).flat().slice(0, n);
      assert.equal(layout.init, 'TEXT');
      want.forEach((id: number, k: number) => assert.deepEqual(got.subarray(k * H, (k + 1) * H), embed.data.subarray(id * H, (id + 1) * H), `virtual token ${k} = embedding of id ${id}`));
    }
    assert.deepEqual(textInitIds([5, 6, 7], 7), [5, 6, 7, 5, 6, 7, 5]);
    assert.deepEqual(textInitIds([5, 6, 7], 2), [5, 6]);
  });

  it('options refused with the field named: init_text missing or inapplicable, no tokenizer, too many tokens, unknown options', () => {
    const refuse = (options: unknown, field: string, backbone?: TrainingBackbone) =>
      assert.throws(() => kind.resolve(arch, kind.options.parse(options), LIMITS, backbone), (e: unknown) => e instanceof TrainingOptionsError && e.field === field, JSON.stringify(options));
    refuse({ num_virtual_tokens: 4, init: 'text' }, 'init_text', backboneOf(BASE_DIR));
    refuse({ num_virtual_tokens: 4, init: 'text', init_text: 'hello' }, 'init', backboneOf(BASE_DIR, false));
    refuse({ num_virtual_tokens: 4, init_text: 'hello' }, 'init_text');
    refuse({ num_virtual_tokens: 9 }, 'num_virtual_tokens');
    assert.equal(kind.options.safeParse({ num_virtual_tokens: 4, prompt_tuning_init: 'TEXT' }).success, false);
    assert.equal(kind.options.safeParse({}).success, false, 'num_virtual_tokens has no default in PEFT');
  });
});

describe('prompt tuning training: the written delta', () => {
  const { arch } = openCheckpoint(BASE_DIR);
  const backbone = backboneOf(BASE_DIR);

  it("is what save_pretrained writes: PromptTuningConfig's fields and prompt_embeddings, served by prompt_tuning, read back by the oracle and fromDelta", () => {
    const layout = kind.resolve(arch, kind.options.parse({ num_virtual_tokens: 5, init: 'text', init_text: 'Answer briefly' }), LIMITS, backbone);
    const params = kind.init(arch, layout, 2, backbone);
    const files = kind.write(arch, layout, params, { baseModel: 'tiny-llama' });
    assert.deepEqual(JSON.parse(files.config), {
      auto_mapping: null, base_model_name_or_path: 'tiny-llama', inference_mode: true, modules_to_save: null,
      num_attention_heads: 4, num_layers: 2, num_transformer_submodules: 1, num_virtual_tokens: 5, peft_type: 'PROMPT_TUNING',
      prompt_tuning_init: 'TEXT', prompt_tuning_init_text: 'Answer briefly', revision: null, task_type: 'CAUSAL_LM', token_dim: 64,
      tokenizer_kwargs: null, tokenizer_name_or_path: 'tiny-llama',
    });
    const parsed = parseDelta('trained', files, arch, LIMITS);
    assert.equal(parsed.kind, 'prompt_tuning');
    assert.equal(parsed.virtualTokens, 5);
    assert.deepEqual(parsed.warnings, []);

    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), files.config);
    fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), files.weights);
    const oracle = oraclePromptTuning(dir).virtualEmbeddings!;
    assert.deepEqual(oracle.map((row) => Float32Array.from(row)), Array.from({ length: 5 }, (_, k) => params.get('prompt_embeddings')!.subarray(k * 64, (k + 1) * 64)));

    const continued = kind.fromDelta({ config: files.config, weights: files.weights }, arch, backbone);
    assert.deepEqual(continued.options, { ...layout, tokenizerName: 'tiny-llama' });
    assert.equal(JSON.parse(kind.write(arch, continued.options, continued.params, { baseModel: 'default/trained@1' }).config).tokenizer_name_or_path, 'tiny-llama');
    assert.deepEqual(continued.params, params);
    assert.equal(kind.virtualTokens!(layout), 5);
  });
});
