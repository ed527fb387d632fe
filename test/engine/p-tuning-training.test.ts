/**
 * Training P-tuning (src/deltas/kinds/p-tuning-training.ts): the first AdamW step through PEFT's
 * MLP PromptEncoder against the float64 oracle (test/oracle/training-step.ts) on Llama, Qwen2 and
 * GPT-2; options refused with the field named; the written delta (the encoder's output, as
 * save_pretrained writes it) accepted by the serving kind, read back by the oracle and fromDelta.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import '../../src/deltas/kinds/index.js';
import type { PTuningLayout } from '../../src/deltas/kinds/p-tuning-training.js';
import { parseDelta } from '../../src/deltas/parse.js';
import { trainableKind, TrainingOptionsError } from '../../src/deltas/training.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tempDir } from '../helpers.js';
import { writeTinyCheckpoint, type TinyFamily } from '../oracle/checkpoints.js';
import { oraclePromptTuning, pTuningOracleDelta, promptTuningOracleDelta } from '../oracle/kinds/prompt-tuning.js';
import { checkFirstStep } from '../oracle/training-step.js';
import type { OracleDelta } from '../oracle/transformer.js';

const LIMITS = { maxRank: 8, maxVirtualTokens: 8, maxBottleneck: 8 };
const kind = trainableKind('p_tuning');

const EXAMPLES = [
  { inputIds: [5, 17, 250, 9, 42, 100, 7, 61, 3, 88], labels: [-100, -100, -100, -100, 42, 100, 7, 61, 3, 88] },
  { inputIds: [100, 6, 77, 120, 33, 210, 211], labels: [100, 6, 77, 120, 33, 210, 211] },
];

/** The oracle's PromptEncoder from the trainer's parameters, by PEFT's names. */
function oracleOf(options: unknown, p: ReadonlyMap<string, Float64Array>): OracleDelta {
  const l = options as PTuningLayout;
  if (!l.reparameterize) return promptTuningOracleDelta(p.get('prompt_embeddings')!, l.numVirtualTokens);
  const layers = [0, 2, 4].map((i) => [p.get(`prompt_encoder.mlp_head.${i}.weight`)!, p.get(`prompt_encoder.mlp_head.${i}.bias`)!] as [Float64Array, Float64Array]);
  return pTuningOracleDelta({ embedding: p.get('prompt_encoder.embedding.weight')!, layers }, l.numVirtualTokens);
}

function tinyModel(family: TinyFamily): string {
  const dir = tempDir();
  writeTinyCheckpoint(dir, family, { seed: 3 });
  return dir;
}

describe('P-tuning training: the first AdamW step through the MLP encoder equals the float64 oracle', () => {
  const cases: { family: TinyFamily; options: Record<string, unknown>; rows?: number }[] = [
    { family: 'llama', options: { num_virtual_tokens: 3, encoder_hidden_size: 16 } },
    { family: 'qwen2', options: { num_virtual_tokens: 2 }, rows: 1 },
    { family: 'gpt2', options: { num_virtual_tokens: 2, encoder_hidden_size: 8 } },
  ];
  for (const { family, options, rows } of cases) {
    it(`${family}: ${JSON.stringify(options)}${rows ? ', one row per micro-batch' : ''}`, async () => {
      const report = await checkFirstStep({ kind: 'p_tuning', options, modelDir: tinyModel(family), seed: 5, examples: EXAMPLES, rows, oracleDeltas: (o, p) => [oracleOf(o, p)], limits: LIMITS, samples: 6 });
      console.log(family, JSON.stringify(options), report);
      // ReLU units that are off for every virtual token have exactly zero gradients (PyTorch's too); most samples must still be compared.
      assert.ok(report.compared >= 2 * report.signless, `compared ${report.compared}, signless ${report.signless}`);
    });
  }
});

describe('P-tuning training: options and the written delta', () => {
  const { arch } = openCheckpoint(tinyModel('llama'));

  it('options that would not change the MLP encoder, or need the LSTM, are refused with the field named', () => {
    const refuse = (options: unknown, field: string) =>
      assert.throws(() => kind.resolve(arch, kind.options.parse(options), LIMITS), (e: unknown) => e instanceof TrainingOptionsError && e.field === field, JSON.stringify(options));
    refuse({ num_virtual_tokens: 4, encoder_reparameterization_type: 'LSTM' }, 'encoder_reparameterization_type');
    refuse({ num_virtual_tokens: 4, encoder_num_layers: 3 }, 'encoder_num_layers');
    refuse({ num_virtual_tokens: 4, encoder_dropout: 0.1 }, 'encoder_dropout');
    refuse({ num_virtual_tokens: 9 }, 'num_virtual_tokens');
    assert.equal(kind.options.safeParse({ num_virtual_tokens: 4, encoder_type: 'MLP' }).success, false);
  });

  it("is the encoder's output as save_pretrained writes it, PromptEncoderConfig's fields, served by p_tuning, read back by the oracle and fromDelta", () => {
    const layout = kind.resolve(arch, kind.options.parse({ num_virtual_tokens: 3, encoder_hidden_size: 12 }), LIMITS);
    const params = kind.init(arch, layout, 4);
    const files = kind.write(arch, layout, params, { baseModel: 'tiny' });
    assert.deepEqual(JSON.parse(files.config), {
      auto_mapping: null, base_model_name_or_path: 'tiny', encoder_dropout: 0, encoder_hidden_size: 12, encoder_num_layers: 2, encoder_reparameterization_type: 'MLP',
      inference_mode: true, modules_to_save: null, num_attention_heads: 4, num_layers: 2, num_transformer_submodules: 1, num_virtual_tokens: 3,
      peft_type: 'P_TUNING', revision: null, task_type: 'CAUSAL_LM', token_dim: 64,
    });
    const parsed = parseDelta('trained', files, arch, LIMITS);
    assert.deepEqual([parsed.kind, parsed.virtualTokens, parsed.warnings], ['p_tuning', 3, []]);
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), files.config);
    fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), files.weights);
    const loaded = oraclePromptTuning(dir).virtualEmbeddings!;
    const trained = oracleOf(layout, new Map([...params].map(([k, v]) => [k, Float64Array.from(v)]))).virtualEmbeddings!;
    trained.forEach((row, k) => row.forEach((v, i) => assert.ok(Math.abs(v - loaded[k]![i]!) <= 1e-6 * Math.max(1, Math.abs(v)), `virtual token ${k} [${i}]: ${v} vs saved ${loaded[k]![i]}`)));

    const continued = kind.fromDelta({ config: files.config, weights: files.weights }, arch);
    assert.deepEqual(continued.options, { ...layout, reparameterize: false });
    assert.ok(Buffer.from(kind.write(arch, continued.options, continued.params, { baseModel: 'tiny' }).weights).equals(Buffer.from(files.weights)));
  });
});
