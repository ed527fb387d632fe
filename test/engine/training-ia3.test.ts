/**
 * (IA)³ training (src/deltas/kinds/ia3-training.ts) against PEFT's definition, on each family:
 * the IA3 layers and shapes PEFT would create (decided by the oracle's port of PEFT's rules),
 * ones at initialisation, the first AdamW step equal to the float64 oracle (test/oracle/training-step.ts
 * with PEFT's IA3 forward from test/oracle/kinds/ia3.ts), 20 steps lowering the loss, options
 * PEFT refuses refused, and a written adapter that the served `ia3` kind and the oracle read back.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { trainableKind, TrainingOptionsError } from '../../src/deltas/training.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { seededNormal } from '../../src/model/random.js';
import { tempDir } from '../helpers.js';
import { loadSafetensorsF32, loadWeightsF32, readConfig, writeTinyCheckpoint, type TinyFamily } from '../oracle/checkpoints.js';
import { ia3OracleFromParams, loadOracleIa3, peftIa3Layers, writeTinyIa3 } from '../oracle/kinds/ia3.js';
import { checkFirstStep } from '../oracle/training-step.js';
import { oracleForward } from '../oracle/transformer.js';
import { EXAMPLES, initialise, LIMITS, trainSteps } from './train-steps.js';

const CASES: { family: TinyFamily; options: { target_modules?: string | string[]; feedforward_modules?: string | string[] } }[] = [
  { family: 'llama', options: {} }, // PEFT's defaults: k_proj, v_proj, down_proj (feed-forward)
  { family: 'qwen2', options: { target_modules: ['q_proj', 'o_proj', 'up_proj', 'down_proj'], feedforward_modules: ['up_proj', 'down_proj'] } },
  { family: 'gpt2', options: {} }, // c_attn, mlp.c_proj (feed-forward): Conv1D layers
];

function tinyModel(family: TinyFamily): string {
  const dir = tempDir();
  writeTinyCheckpoint(dir, family, { seed: 3 });
  return dir;
}

/** 1 + 0.3·N(0, 1) per element: away from ones, so that every vector changes the model. */
function randomVectors(params: ReadonlyMap<string, Float32Array>, seed: number): Map<string, Float32Array> {
  const normal = seededNormal(seed);
  return new Map([...params].map(([name, v]) => [name, v.map(() => 1 + 0.3 * normal())]));
}

describe('IA3 training', () => {
  for (const { family, options } of CASES) {
    it(`${family} ${JSON.stringify(options)}: PEFT's layers and shapes, ones at init, and the first AdamW step equals the float64 oracle`, async () => {
      const modelDir = tinyModel(family);
      const { arch, resolved, params } = initialise('ia3', modelDir, options);
      const peft = peftIa3Layers({ target_modules: options.target_modules ?? null, feedforward_modules: options.feedforward_modules ?? null }, modelDir);
      const shapes = trainableKind('ia3').params(arch, resolved);
      const sorted = (pairs: [string, number[]][]) => pairs.sort(([a], [b]) => (a < b ? -1 : 1));
      assert.deepEqual(sorted(shapes.map((p) => [p.name, p.shape])), sorted(peft.map((l) => [`${l.path}.ia3_l`, l.shape])));
      assert.ok(peft.some((l) => l.feedforward) && peft.some((l) => !l.feedforward));
      for (const v of params.values()) assert.ok(v.every((x) => x === 1), 'init_ia3_weights: ones');
      const oracle = ia3OracleFromParams({ target_modules: options.target_modules ?? null, feedforward_modules: options.feedforward_modules ?? null }, modelDir);
      const report = await checkFirstStep({ kind: 'ia3', options, modelDir, params: randomVectors(params, 5), examples: EXAMPLES, oracleDeltas: (_o, p) => [oracle(p)], limits: LIMITS, samples: 3 });
      console.log(`ia3 ${family}`, report);
    });
  }

  it('from ones, the first step equals the oracle too (llama)', async () => {
    const modelDir = tinyModel('llama');
    const oracle = ia3OracleFromParams({}, modelDir);
    const report = await checkFirstStep({ kind: 'ia3', options: {}, modelDir, examples: EXAMPLES, oracleDeltas: (_o, p) => [oracle(p)], limits: LIMITS, samples: 3 });
    console.log('ia3 llama from ones', report);
  });

  it('continues from a PEFT-made IA3 adapter (target_modules null): its layers, its vectors', () => {
    const modelDir = tinyModel('llama');
    const dir = tempDir();
    writeTinyIa3(dir, { baseDir: modelDir, seed: 4 });
    const files = { config: fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'), weights: fs.readFileSync(path.join(dir, 'adapter_model.safetensors')) };
    const { options, params } = trainableKind('ia3').fromDelta(files, openCheckpoint(modelDir).arch);
    const peft = peftIa3Layers({ target_modules: null, feedforward_modules: null }, modelDir);
    assert.deepEqual((options as { modules: { path: string }[] }).modules.map((m) => m.path).sort(), peft.map((l) => l.path).sort());
    const stored = loadSafetensorsF32(path.join(dir, 'adapter_model.safetensors'));
    for (const [name, v] of params) assert.deepEqual(v, stored.get(`base_model.model.${name}`)!.data, name);
  });

  it('20 steps lower the loss (qwen2)', async () => {
    const losses = await trainSteps('ia3', tinyModel('qwen2'), CASES[1]!.options, 20);
    assert.ok(losses[19]! < losses[0]! - 0.05, `loss ${losses[0]} → ${losses[19]}`);
  });

  it('refuses what PEFT refuses or deltaserve cannot serve, naming the field', () => {
    const { arch } = openCheckpoint(tinyModel('llama'));
    const ia3 = trainableKind('ia3');
    const resolve = (o: unknown) => ia3.resolve(arch, ia3.options.parse(o), LIMITS);
    const field = (o: unknown) => {
      try {
        resolve(o);
      } catch (err) {
        if (err instanceof TrainingOptionsError) return [err.field, err.message];
        throw err;
      }
      return undefined;
    };
    assert.equal(field({ target_modules: ['q_proj', 'v_proj'], feedforward_modules: ['down_proj'] })?.[0], 'feedforward_modules');
    assert.equal(field({ feedforward_modules: ['up_proj'] })?.[0], 'feedforward_modules'); // not among the default targets
    assert.equal(field({ target_modules: ['nothing_here'] })?.[0], 'target_modules');
    assert.match(field({ target_modules: 'lm_head' })?.[1] ?? '', /linear layers only/);
    assert.equal(field({ target_modules: '(unclosed' })?.[0], 'target_modules');
    for (const bad of [{ init_ia3_weights: false }, { modules_to_save: ['lm_head'] }, { target_modules: [] }, { target_modules: 3 }]) assert.throws(() => ia3.options.parse(bad), JSON.stringify(bad));
    // The default feed-forward names outside a target list are dropped (PEFT would save a config it refuses to load).
    assert.deepEqual(resolve({ target_modules: ['q_proj', 'v_proj'] }).feedforwardModules, []);
  });

  it("writes PEFT's IA3 files, which the oracle reads as the trained vectors and a job continues from", () => {
    const modelDir = tinyModel('gpt2');
    const { arch, resolved, params } = initialise('ia3', modelDir, {});
    const trained = randomVectors(params, 9);
    const ia3 = trainableKind('ia3');
    const files = ia3.write(arch, resolved, trained, { baseModel: 'tiny-gpt2' });
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), files.config);
    fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), files.weights);
    const config = JSON.parse(files.config);
    assert.deepEqual(Object.keys(config), Object.keys(config).sort());
    assert.deepEqual([config.peft_type, config.target_modules, config.feedforward_modules, config.fan_in_fan_out], ['IA3', ['c_attn', 'mlp.c_proj'], ['mlp.c_proj'], true]);
    const ids = [5, 17, 250, 9, 42];
    const [cfg, base] = [readConfig(modelDir), loadWeightsF32(modelDir)];
    const vectors = new Map([...trained].map(([k, v]) => [k, Float64Array.from(v)]));
    const fromFile = oracleForward(cfg, base, ids, undefined, [loadOracleIa3(dir, modelDir)]);
    const fromParams = oracleForward(cfg, base, ids, undefined, [ia3OracleFromParams({}, modelDir)(vectors)]);
    assert.deepEqual(fromFile, fromParams);
    const again = ia3.fromDelta({ config: files.config, weights: files.weights }, arch);
    assert.deepEqual(again.options, resolved);
    assert.deepEqual([...again.params], [...trained]);
  });
});
