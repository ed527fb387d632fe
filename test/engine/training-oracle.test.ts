/**
 * LoRA's first training step against the independent float64 reference (test/oracle/training-step.ts:
 * the oracle's forward with PEFT's LoRA, central differences, PyTorch's AdamW), on each family:
 * a second check beside the PEFT + PyTorch trajectory of training.test.ts.
 */
import { describe, it } from 'node:test';
import type { LoraLayout } from '../../src/deltas/kinds/lora-training.js';
import { trainableKind } from '../../src/deltas/training.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { seededNormal } from '../../src/model/random.js';
import { tempDir } from '../helpers.js';
import { writeTinyCheckpoint, type TinyFamily } from '../oracle/checkpoints.js';
import { loraOracleDelta } from '../oracle/kinds/lora.js';
import { checkFirstStep } from '../oracle/training-step.js';

const LIMITS = { maxRank: 8, maxVirtualTokens: 8, maxBottleneck: 8 };

/** Two rows of different lengths, the first with a masked prompt. */
const EXAMPLES = [
  { inputIds: [5, 17, 250, 9, 42, 100, 7, 61, 3, 88], labels: [-100, -100, -100, -100, 42, 100, 7, 61, 3, 88] },
  { inputIds: [400 % 300, 6, 77, 120, 33, 210, 211], labels: [34, 6, 77, 120, 33, 210, 211] },
];

/** Random nonzero A and B (a fresh LoRA's B = 0 would leave every A gradient at exactly 0). */
function randomParams(modelDir: string, options: unknown, seed: number): Map<string, Float32Array> {
  const lora = trainableKind('lora');
  const { arch } = openCheckpoint(modelDir);
  const normal = seededNormal(seed);
  const layout = lora.resolve(arch, lora.options.parse(options), LIMITS);
  return new Map(lora.params(arch, layout).map((p) => [p.name, Float32Array.from({ length: p.shape[0]! * p.shape[1]! }, () => 0.1 * normal())]));
}

/** PEFT's LoRA on the oracle: scaling lora_alpha / r, or / sqrt(r) with use_rslora. */
function oracleDeltas(options: unknown, params: ReadonlyMap<string, Float64Array>) {
  const l = options as LoraLayout;
  const scale = l.useRslora ? l.alpha / Math.sqrt(l.r) : l.alpha / l.r;
  return [loraOracleDelta(new Map(l.modules.map((m) => [m, { A: params.get(`${m}.lora_A.weight`)!, B: params.get(`${m}.lora_B.weight`)!, r: l.r, scale }])))];
}

describe('LoRA training: the first AdamW step equals the float64 oracle', () => {
  const cases: { family: TinyFamily; options: Record<string, unknown>; rows?: number }[] = [
    { family: 'llama', options: { r: 4, alpha: 8, target_modules: 'all-linear' } },
    { family: 'qwen2', options: { r: 4, alpha: 8, target_modules: ['q_proj', 'v_proj', 'down_proj'], use_rslora: true }, rows: 1 },
    { family: 'gpt2', options: { r: 2, alpha: 4, target_modules: ['c_attn', 'c_proj', 'c_fc'] } },
  ];
  for (const { family, options, rows } of cases) {
    it(`${family}: ${JSON.stringify(options)}${rows ? ', one row per micro-batch' : ''}`, async () => {
      const modelDir = tempDir();
      writeTinyCheckpoint(modelDir, family, { seed: 3 });
      const report = await checkFirstStep({ kind: 'lora', options, modelDir, params: randomParams(modelDir, options, 5), examples: EXAMPLES, rows, oracleDeltas, limits: LIMITS, samples: 3 });
      console.log(family, report);
    });
  }
});
