/**
 * DoRA training (method.type 'dora'): the first AdamW step against the independent float64
 * reference (test/oracle/training-step.ts with PEFT's DoraLinearLayer from test/oracle/kinds/dora.ts,
 * the weight norm held fixed as PEFT detaches it) on Llama, Qwen2 and GPT-2; PEFT's initialisation
 * (m = ‖W‖ per row, B = 0); 20 steps lower the loss; and the written adapter is PEFT's DoRA layout,
 * which the serving lora kind parses and which a job continues from.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import '../../src/deltas/kinds/index.js';
import { doraParamMagnitude } from '../../src/deltas/kinds/dora-training.js';
import type { LoraLayout } from '../../src/deltas/kinds/lora-training.js';
import { trainableKind, type TrainingBackbone } from '../../src/deltas/training.js';
import { freshTrainerState, Trainer } from '../../src/engine/trainer.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { seededNormal } from '../../src/model/random.js';
import { parseSafetensors } from '../../src/model/safetensors.js';
import { readCheckpointRows, readCheckpointWeight } from '../../src/model/weight-data.js';
import { microBatches } from '../../src/training/batches.js';
import { tempDir } from '../helpers.js';
import { loadWeightsF32, writeTinyCheckpoint, type TinyFamily } from '../oracle/checkpoints.js';
import { doraOracleDelta, doraOracleNorms, type OracleDoraParams } from '../oracle/kinds/dora.js';
import { checkFirstStep } from '../oracle/training-step.js';

const LIMITS = { maxRank: 8, maxVirtualTokens: 8, maxBottleneck: 8 };
const dora = trainableKind('dora');

/** Two rows of different lengths, the first with a masked prompt. */
const EXAMPLES = [
  { inputIds: [5, 17, 250, 9, 42, 100, 7, 61, 3, 88], labels: [-100, -100, -100, -100, 42, 100, 7, 61, 3, 88] },
  { inputIds: [100, 6, 77, 120, 33, 210, 211], labels: [34, 6, 77, 120, 33, 210, 211] },
];

function backboneOf(modelDir: string): TrainingBackbone {
  const ckpt = openCheckpoint(modelDir);
  return { weight: (name) => readCheckpointWeight(ckpt, name), weightRows: (name, rows) => readCheckpointRows(ckpt, name, rows) };
}

function resolve(modelDir: string, options: unknown): LoraLayout {
  return dora.resolve(openCheckpoint(modelDir).arch, dora.options.parse(options), LIMITS);
}

/** The oracle's view of the parameters: module path → A, B, scaling and magnitude. */
function oracleModules(l: LoraLayout, params: ReadonlyMap<string, ArrayLike<number>>): Map<string, OracleDoraParams> {
  const scale = l.useRslora ? l.alpha / Math.sqrt(l.r) : l.alpha / l.r;
  return new Map(l.modules.map((m) => [m, { A: params.get(`${m}.lora_A.weight`)!, B: params.get(`${m}.lora_B.weight`)!, r: l.r, scale, magnitude: params.get(doraParamMagnitude(m))! }]));
}

/**
 * A trained-looking DoRA: random nonzero A and B (a fresh B = 0 leaves every A gradient at 0), and
 * m = ‖W + s·B·A‖ · (1 + 0.3·N(0, 1)) so that the gains m / ‖·‖ are away from 1.
 */
function randomParams(modelDir: string, family: TinyFamily, l: LoraLayout, seed: number): Map<string, Float32Array> {
  const { arch } = openCheckpoint(modelDir);
  const normal = seededNormal(seed);
  const params = new Map(dora.params(arch, l).map((p) => [p.name, Float32Array.from({ length: p.shape.reduce((a, b) => a * b, 1) }, () => 0.1 * normal())]));
  const norms = doraOracleNorms(oracleModules(l, params), loadWeightsF32(modelDir), family);
  for (const m of l.modules) params.set(doraParamMagnitude(m), Float32Array.from(norms.get(m)!, (n) => n * (1 + 0.3 * normal())));
  return params;
}

/** PEFT's DoRA on the oracle, with weight_norm fixed at the starting parameters' (PEFT's detach). */
function oracleDeltasFor(modelDir: string, family: TinyFamily, start: ReadonlyMap<string, ArrayLike<number>>) {
  const weights = loadWeightsF32(modelDir);
  let norms: Map<string, Float64Array> | undefined;
  return (options: unknown, params: ReadonlyMap<string, Float64Array>) => {
    const l = options as LoraLayout;
    norms ??= doraOracleNorms(oracleModules(l, start), weights, family);
    return [doraOracleDelta(oracleModules(l, params), weights, family, norms)];
  };
}

describe('DoRA training: the first AdamW step equals the float64 oracle (weight norm detached, as PEFT)', () => {
  const cases: { family: TinyFamily; options: Record<string, unknown>; rows?: number }[] = [
    { family: 'llama', options: { r: 4, alpha: 8, target_modules: 'all-linear' } },
    { family: 'qwen2', options: { r: 4, alpha: 8, target_modules: ['q_proj', 'v_proj', 'down_proj'], use_rslora: true }, rows: 1 },
    { family: 'gpt2', options: { r: 2, alpha: 4, target_modules: ['c_attn', 'c_proj', 'c_fc'] } },
  ];
  for (const { family, options, rows } of cases) {
    it(`${family}: ${JSON.stringify(options)}${rows ? ', one row per micro-batch' : ''}`, async () => {
      const modelDir = tempDir();
      writeTinyCheckpoint(modelDir, family, { seed: 3 });
      const params = randomParams(modelDir, family, resolve(modelDir, options), 5);
      const report = await checkFirstStep({ kind: 'dora', options, modelDir, params, examples: EXAMPLES, rows, oracleDeltas: oracleDeltasFor(modelDir, family, params), limits: LIMITS, samples: 3 });
      console.log(family, report);
    });
  }

  it("llama, from PEFT's initialisation: m = ‖W‖ per row, B = 0, A kaiming-uniform; the first step matches", async () => {
    const modelDir = tempDir();
    writeTinyCheckpoint(modelDir, 'llama', { seed: 3 });
    const options = { r: 4, alpha: 8, target_modules: ['q_proj', 'down_proj'] };
    const l = resolve(modelDir, options);
    const params = dora.init(openCheckpoint(modelDir).arch, l, 9, backboneOf(modelDir));
    const weights = loadWeightsF32(modelDir);
    for (const m of l.modules) {
      const w = weights.get(`${m}.weight`)!;
      const [out, inF] = w.shape as [number, number];
      const magnitude = params.get(doraParamMagnitude(m))!;
      for (let o = 0; o < out; o++) {
        let sum = 0;
        for (let i = 0; i < inF; i++) sum += w.data[o * inF + i]! ** 2;
        assert.ok(Math.abs(magnitude[o]! - Math.sqrt(sum)) <= 1e-6 * Math.sqrt(sum), `${m} magnitude[${o}] ${magnitude[o]} vs ‖W‖ ${Math.sqrt(sum)}`);
      }
      assert.ok(params.get(`${m}.lora_B.weight`)!.every((v) => v === 0));
      const a = params.get(`${m}.lora_A.weight`)!;
      assert.ok(a.every((v) => Math.abs(v) <= 1 / Math.sqrt(inF)) && a.some((v) => v !== 0));
    }
    assert.deepEqual([...params.keys()], dora.params(openCheckpoint(modelDir).arch, l).map((p) => p.name));
    const report = await checkFirstStep({ kind: 'dora', options, modelDir, params, examples: EXAMPLES, oracleDeltas: oracleDeltasFor(modelDir, 'llama', params), limits: LIMITS, samples: 3 });
    console.log('llama from init', report);
  });
});

describe('DoRA training: steps, files, continuation', () => {
  it('20 steps from the initialisation lower the loss on a small task (gpt2 and llama)', async () => {
    for (const family of ['llama', 'gpt2'] as const) {
      const modelDir = tempDir();
      writeTinyCheckpoint(modelDir, family, { seed: 3 });
      const ckpt = openCheckpoint(modelDir);
      const options = resolve(modelDir, { r: 4, alpha: 8 });
      const trainer = await Trainer.create(ckpt, { cacheDir: tempDir(), device: 'cpu', rows: 2, seqLen: 16, kind: 'dora', options }, freshTrainerState(dora.init(ckpt.arch, options, 1, backboneOf(modelDir))));
      try {
        const { batches } = microBatches(EXAMPLES, 2, 16, 0);
        const hyper = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 };
        const losses: number[] = [];
        for (let s = 0; s < 20; s++) losses.push((await trainer.step(batches, hyper)).loss);
        assert.ok(losses[19]! < losses[0]! - 0.5, `${family}: loss ${losses[0]} → ${losses[19]}`);
        console.log(family, 'loss', losses[0], '→', losses[19]);
      } finally {
        await trainer.release();
      }
    }
  });

  it("writes PEFT's DoRA files, which the lora kind parses and a job continues from unchanged", () => {
    const modelDir = tempDir();
    writeTinyCheckpoint(modelDir, 'gpt2', { seed: 3 });
    const { arch } = openCheckpoint(modelDir);
    const l = resolve(modelDir, { r: 2, alpha: 4, target_modules: ['c_attn', 'c_fc'] });
    const params = randomParams(modelDir, 'gpt2', l, 8);
    const files = dora.write(arch, l, params, { baseModel: 'tiny-gpt2' });
    const config = JSON.parse(files.config);
    assert.equal(config.peft_type, 'LORA');
    assert.equal(config.use_dora, true);
    assert.equal(config.fan_in_fan_out, true);
    assert.deepEqual(config.target_modules, ['c_attn', 'c_fc']);
    const keys = [...parseSafetensors(files.weights, 'adapter_model.safetensors').header.tensors.keys()];
    assert.ok(keys.includes('base_model.model.transformer.h.0.attn.c_attn.lora_magnitude_vector'), keys.join(', '));
    assert.equal(keys.length, 3 * l.modules.length);
    const back = dora.fromDelta(files, arch, backboneOf(modelDir));
    assert.deepEqual(back.options, l);
    assert.deepEqual([...back.params.keys()], [...params.keys()]);
    for (const [name, value] of params) assert.deepEqual(back.params.get(name), value, name);
  });

  it('continuing from a plain LoRA starts DoRA as PEFT does on existing factors: m = ‖W + s·B·A‖', () => {
    const modelDir = tempDir();
    writeTinyCheckpoint(modelDir, 'qwen2', { seed: 3 });
    const { arch } = openCheckpoint(modelDir);
    const lora = trainableKind('lora');
    const l = resolve(modelDir, { r: 2, alpha: 4, target_modules: ['v_proj'] });
    const params = randomParams(modelDir, 'qwen2', l, 4);
    const files = lora.write(arch, l, params, { baseModel: 'tiny' });
    const back = dora.fromDelta(files, arch, backboneOf(modelDir));
    const norms = doraOracleNorms(oracleModules(l, params), loadWeightsF32(modelDir), 'qwen2');
    for (const m of l.modules) {
      const magnitude = back.params.get(doraParamMagnitude(m))!;
      norms.get(m)!.forEach((n, o) => assert.ok(Math.abs(magnitude[o]! - n) <= 1e-6 * n, `${m}[${o}]: ${magnitude[o]} vs ${n}`));
    }
  });
});
