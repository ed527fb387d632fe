/**
 * Bottleneck adapter training (method.type 'bottleneck'): the first AdamW step against the
 * independent float64 reference (test/oracle/training-step.ts with the `adapters` library's
 * Adapter from test/oracle/kinds/bottleneck.ts, given the library's SeqBnConfig) on Llama, Qwen2
 * and GPT-2 and for every non-linearity; the library's initialisations; 20 steps lower the loss;
 * the written files are the library's layout, which the serving parser reads and a job continues from.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import '../../src/deltas/kinds/index.js';
import { ADAPTER_NAME, type BottleneckLayout } from '../../src/deltas/kinds/bottleneck-training.js';
import { trainableKind } from '../../src/deltas/training.js';
import { freshTrainerState, Trainer } from '../../src/engine/trainer.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { seededNormal } from '../../src/model/random.js';
import { parseSafetensors } from '../../src/model/safetensors.js';
import { microBatches } from '../../src/training/batches.js';
import { tempDir } from '../helpers.js';
import { readConfig, writeTinyCheckpoint, type TinyFamily } from '../oracle/checkpoints.js';
import { bottleneckDelta, PRESETS } from '../oracle/kinds/bottleneck.js';
import { writeTinyBottleneck } from '../oracle/kinds/bottleneck-checkpoint.js';
import type { OracleWeights } from '../oracle/transformer.js';
import { checkFirstStep } from '../oracle/training-step.js';

const LIMITS = { maxRank: 8, maxVirtualTokens: 8, maxBottleneck: 8 };
const readText = (file: string) => fs.readFileSync(file, 'utf8');
const readBytes = (file: string) => new Uint8Array(fs.readFileSync(file));
const bottleneck = trainableKind('bottleneck');

/** Two rows of different lengths, the first with a masked prompt. */
const EXAMPLES = [
  { inputIds: [5, 17, 250, 9, 42, 100, 7, 61, 3, 88], labels: [-100, -100, -100, -100, 42, 100, 7, 61, 3, 88] },
  { inputIds: [100, 6, 77, 120, 33, 210, 211], labels: [34, 6, 77, 120, 33, 210, 211] },
];

function resolve(modelDir: string, options: unknown): BottleneckLayout {
  return bottleneck.resolve(openCheckpoint(modelDir).arch, bottleneck.options.parse(options), LIMITS);
}

/** Random weights and biases (a fresh mam_adapter's zero up projection would leave the down gradients at 0). */
function randomParams(modelDir: string, options: unknown, seed: number): Map<string, Float32Array> {
  const { arch } = openCheckpoint(modelDir);
  const normal = seededNormal(seed);
  return new Map(bottleneck.params(arch, resolve(modelDir, options)).map((p) => [p.name, Float32Array.from({ length: p.shape.reduce((a, b) => a * b, 1) }, () => 0.2 * normal())]));
}

/**
 * The library's Adapter on the oracle: SeqBnConfig with the method's placement, non-linearity and
 * reduction factor, as adapter_config.json would give it, and the parameters under their state_dict keys.
 */
function oracleDeltasFor(modelDir: string) {
  const modelConfig = readConfig(modelDir);
  return (options: unknown, params: ReadonlyMap<string, Float64Array>) => {
    const l = options as BottleneckLayout;
    const config = { ...PRESETS['seq_bn'], mh_adapter: l.placement !== 'mlp', output_adapter: l.placement !== 'attention', non_linearity: l.nonLinearity, reduction_factor: l.reductionFactor };
    const shapes = new Map(bottleneck.params(openCheckpoint(modelDir).arch, l).map((p) => [p.name, p.shape]));
    // The oracle reads tensors by index only; float64 keeps the central differences exact.
    const tensors: OracleWeights = new Map([...params].map(([name, data]) => [name, { shape: shapes.get(name)!, data: data as unknown as Float32Array }]));
    return [bottleneckDelta({ config, name: ADAPTER_NAME, version: 'adapters.1.2.0' }, tensors, modelConfig)];
  };
}

async function firstStep(family: TinyFamily, options: Record<string, unknown>, o: { rows?: number; samples?: number; params?: 'random' | 'init' } = {}) {
  const modelDir = tempDir();
  writeTinyCheckpoint(modelDir, family, { seed: 3 });
  const params = o.params === 'init' ? undefined : randomParams(modelDir, options, 5);
  return checkFirstStep({ kind: 'bottleneck', options, modelDir, params, seed: 13, examples: EXAMPLES, rows: o.rows, oracleDeltas: oracleDeltasFor(modelDir), limits: LIMITS, samples: o.samples ?? 3 });
}

describe('bottleneck training: the first AdamW step equals the float64 oracle (the adapters library)', () => {
  const cases: { family: TinyFamily; options: Record<string, unknown>; rows?: number }[] = [
    { family: 'llama', options: { placement: 'both', non_linearity: 'relu' } },
    { family: 'qwen2', options: { placement: 'attention', non_linearity: 'gelu', reduction_factor: 8 }, rows: 1 },
    { family: 'gpt2', options: { placement: 'mlp', non_linearity: 'swish', reduction_factor: 32 } },
  ];
  for (const { family, options, rows } of cases) {
    it(`${family}: ${JSON.stringify(options)}${rows ? ', one row per micro-batch' : ''}`, async () => console.log(family, await firstStep(family, options, { rows })));
  }

  it('every other non-linearity the library names (llama, mlp)', async () => {
    for (const nonLinearity of ['tanh', 'sigmoid', 'silu', 'gelu_new', 'gelu_fast', 'quick_gelu', 'LeakyReLU', 'linear']) {
      const report = await firstStep('llama', { non_linearity: nonLinearity }, { samples: 2 });
      console.log(nonLinearity, report.worstStep);
    }
  });

  it("from the default (init_weights 'bert') initialisation", async () => console.log('bert init', await firstStep('llama', { placement: 'both' }, { params: 'init' })));
});

describe('bottleneck training: initialisation, steps, files', () => {
  const modelDir = tempDir();
  writeTinyCheckpoint(modelDir, 'llama', { seed: 3 });
  const { arch } = openCheckpoint(modelDir);

  it("initialises as Adapter.__init__ for each init_weights: bert N(0, 0.02), mam_adapter kaiming-uniform down and zero up, houlsby trunc_normal(0.01, ±0.02); biases 0", () => {
    const stats = (values: Float32Array[]) => {
      const all = values.flatMap((v) => [...v]);
      return { max: Math.max(...all.map(Math.abs)), std: Math.sqrt(all.reduce((s, v) => s + v * v, 0) / all.length) };
    };
    for (const scheme of ['bert', 'mam_adapter', 'houlsby'] as const) {
      const l = resolve(modelDir, { placement: 'both', init_weights: scheme });
      const params = bottleneck.init(arch, l, 4);
      const pick = (suffix: string) => [...params].filter(([name]) => name.endsWith(suffix)).map(([, v]) => v);
      assert.ok([...pick('.bias')].every((v) => v.every((x) => x === 0)), `${scheme}: biases 0`);
      const down = stats(pick('.adapter_down.0.weight'));
      const up = stats(pick('.adapter_up.weight'));
      if (scheme === 'bert') assert.ok(Math.abs(down.std - 0.02) < 0.003 && Math.abs(up.std - 0.02) < 0.003, JSON.stringify({ down, up }));
      if (scheme === 'mam_adapter') assert.ok(down.max <= 1 / Math.sqrt(arch.hiddenSize) && down.std > 0.05 && up.max === 0, JSON.stringify({ down, up }));
      if (scheme === 'houlsby') assert.ok(down.max <= 0.02 && up.max <= 0.02 && down.std > 0.006 && down.std < 0.01, JSON.stringify({ down, up }));
      assert.deepEqual(bottleneck.init(arch, l, 4), params, 'seeded');
    }
  });

  it('20 steps from the initialisation lower the loss (llama and gpt2)', async () => {
    for (const family of ['llama', 'gpt2'] as const) {
      const dir = tempDir();
      writeTinyCheckpoint(dir, family, { seed: 3 });
      const ckpt = openCheckpoint(dir);
      const options = bottleneck.resolve(ckpt.arch, bottleneck.options.parse({ placement: 'both', reduction_factor: 8 }), LIMITS);
      const trainer = await Trainer.create(ckpt, { cacheDir: tempDir(), device: 'cpu', rows: 2, seqLen: 16, kind: 'bottleneck', options }, freshTrainerState(bottleneck.init(ckpt.arch, options, 1)));
      try {
        const { batches } = microBatches(EXAMPLES, 2, 16, 0);
        const losses: number[] = [];
        for (let s = 0; s < 20; s++) losses.push((await trainer.step(batches, { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 })).loss);
        assert.ok(losses[19]! < losses[0]! - 0.5, `${family}: loss ${losses[0]} → ${losses[19]}`);
        console.log(family, 'loss', losses[0], '→', losses[19]);
      } finally {
        await trainer.release();
      }
    }
  });

  it("writes the library's files (adapter_config.json with its config block, state_dict keys), which continue unchanged", () => {
    const l = resolve(modelDir, { placement: 'attention', non_linearity: 'Swish', reduction_factor: 16 });
    const params = randomParams(modelDir, { placement: 'attention', non_linearity: 'Swish' }, 8);
    const files = bottleneck.write(arch, l, params, { baseModel: 'tiny-llama' });
    const config = JSON.parse(files.config);
    const want = { mh_adapter: true, output_adapter: false, non_linearity: 'swish', original_ln_before: true, original_ln_after: true, residual_before_ln: true, reduction_factor: 16, is_parallel: false, init_weights: 'bert' };
    for (const [field, value] of Object.entries(want)) assert.equal(config.config[field], value, field);
    assert.match(files.config, /"scaling": 1\.0,/, 'scaling is a Python float');
    assert.equal(config.name, ADAPTER_NAME);
    assert.equal(config.hidden_size, arch.hiddenSize);
    assert.deepEqual(Object.keys(config), [...Object.keys(config)].sort());
    const keys = [...parseSafetensors(files.weights, 'adapter.safetensors').header.tensors.keys()].sort();
    assert.deepEqual(keys.slice(0, 2), [`model.layers.0.attention_adapters.adapters.${ADAPTER_NAME}.adapter_down.0.bias`, `model.layers.0.attention_adapters.adapters.${ADAPTER_NAME}.adapter_down.0.weight`]);
    const back = bottleneck.fromDelta(files, arch);
    assert.deepEqual(back.options, l);
    assert.deepEqual(back.params, params);
  });

  it('continuing refuses, by field, an adapter whose arrangement training does not compute', () => {
    const dir = tempDir();
    writeTinyBottleneck(dir, { baseDir: modelDir, preset: 'par_bn', config: { reduction_factor: 16 } });
    const files = { config: readText(`${dir}/adapter_config.json`), weights: readBytes(`${dir}/adapter.safetensors`) };
    assert.throws(() => bottleneck.fromDelta(files, arch), /config\.original_ln_before is false.*config\.is_parallel is true.*config\.scaling is 4/);
    const seq = tempDir();
    writeTinyBottleneck(seq, { baseDir: modelDir, preset: 'seq_bn', name: 'sst2' });
    const continued = bottleneck.fromDelta({ config: readText(`${seq}/adapter_config.json`), weights: readBytes(`${seq}/adapter.safetensors`) }, arch);
    assert.equal(continued.options.placement, 'mlp');
    assert.equal(continued.params.size, 4 * arch.numLayers);
  });
});
