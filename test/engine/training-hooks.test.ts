/**
 * The training step's hook points, for the kinds that will train on them: a test-only trainable
 * kind ('probe') puts parameters at every place the shared block (model/transformer.ts) and the
 * training backend offer — virtual tokens prepended to each row, attention prefixes, norms,
 * projection inputs and outputs, sub-block outputs — and its first AdamW step is checked against
 * the float64 oracle applying the same changes through its own hooks (test/oracle/transformer.ts),
 * with rotary (Llama) and learned (GPT-2) positions.
 */
import { describe, it } from 'node:test';
import { z } from 'zod';
import { registerTrainableKind, type TrainableKind } from '../../src/deltas/training.js';
import type { ArchitectureSpec } from '../../src/model/architecture.js';
import type { TrainingHooks } from '../../src/model/delta-hooks.js';
import type { TrainableParam } from '../../src/model/lower-training.js';
import { seededNormal } from '../../src/model/random.js';
import { tempDir } from '../helpers.js';
import { readConfig, writeTinyCheckpoint, type TinyFamily } from '../oracle/checkpoints.js';
import { checkFirstStep } from '../oracle/training-step.js';
import type { OracleDelta, Vec } from '../oracle/transformer.js';

const ProbeOptions = z.object({ virtual: z.number().int().min(0).default(0), prefix: z.number().int().min(0).default(0) }).strict();
type ProbeOptions = z.infer<typeof ProbeOptions>;

/** Each block's o projection (whose input is scaled) and MLP output projection (whose output gets a bias). */
const scaledInput = (arch: ArchitectureSpec) => new Set(arch.blocks.map((b) => b.o.modulePath));
const biased = (arch: ArchitectureSpec) => new Set(arch.blocks.map((b) => (b.mlp.kind === 'gated-silu' ? b.mlp.down : b.mlp.proj).modulePath));

function probeParams(arch: ArchitectureSpec, o: ProbeOptions): TrainableParam[] {
  const H = arch.hiddenSize;
  const kv = arch.numKvHeads * arch.headDim;
  return [
    ...(o.virtual ? [{ name: 'probe.virtual', shape: [o.virtual, H] }] : []),
    ...arch.blocks.flatMap((_, l) => (o.prefix ? [{ name: `probe.prefix.${l}.key`, shape: [o.prefix, kv] }, { name: `probe.prefix.${l}.value`, shape: [o.prefix, kv] }] : [])),
    { name: 'probe.norm_gain', shape: [H] },
    ...arch.blocks.map((b) => ({ name: `${b.o.modulePath}.probe_in`, shape: [b.o.inFeatures] })),
    ...arch.blocks.map((b) => {
      const p = b.mlp.kind === 'gated-silu' ? b.mlp.down : b.mlp.proj;
      return { name: `${p.modulePath}.probe_bias`, shape: [p.outFeatures] };
    }),
    ...arch.blocks.flatMap((_, l) => [{ name: `probe.block.${l}.attention`, shape: [H] }, { name: `probe.block.${l}.mlp`, shape: [H] }]),
  ];
}

/** The probe's changes in the step graph, built from the parameters with differentiable ops. */
function probeHooks(arch: ArchitectureSpec, o: ProbeOptions): TrainingHooks {
  const [inputs, outputs] = [scaledInput(arch), biased(arch)];
  const H = arch.hiddenSize;
  return {
    kind: 'probe',
    embeddings(ctx, hidden) {
      if (!o.virtual) return hidden;
      const { g, rows, seqLen } = ctx;
      const own = g.apply('Reshape', [hidden, g.ints([rows, seqLen, H])]);
      const virtual = g.apply('Expand', [g.apply('Reshape', [ctx.param('probe.virtual'), g.ints([1, o.virtual, H])]), g.ints([rows, o.virtual, H])]);
      return g.apply('Reshape', [g.apply('Concat', [virtual, own], { axis: 1 }), g.ints([rows * (o.virtual + seqLen), H])]);
    },
    norm: (ctx, parts, base) => ctx.g.apply('Add', [base, ctx.g.apply('Mul', [parts.normalized(), ctx.param('probe.norm_gain')])]),
    projectionInput: (ctx, p, x) => (inputs.has(p.modulePath) ? ctx.g.apply('Mul', [x, ctx.param(`${p.modulePath}.probe_in`)]) : x),
    projectionOutput: (ctx, p, _x, y) => (outputs.has(p.modulePath) ? ctx.g.apply('Add', [y, ctx.param(`${p.modulePath}.probe_bias`)]) : y),
    blockOutput: (ctx, { layer, location }, output, residual) => ctx.g.apply('Add', [residual, ctx.g.apply('Mul', [output, ctx.param(`probe.block.${layer}.${location}`)])]),
    ...(o.prefix ? { attentionPrefix: { length: o.prefix, keyValues: (ctx, layer) => ({ key: ctx.param(`probe.prefix.${layer}.key`), value: ctx.param(`probe.prefix.${layer}.value`) }) } } : {}),
  };
}

const probe: TrainableKind<ProbeOptions, ProbeOptions> = {
  name: 'probe',
  deltaKind: 'probe',
  graphVersion: 1,
  options: ProbeOptions,
  resolve: (_arch, o) => o,
  params: probeParams,
  /** Scales near 1, shifts near 0, virtual tokens and prefixes of the backbone's magnitude. */
  init(arch, o, seed) {
    const normal = seededNormal(seed);
    return new Map(probeParams(arch, o).map(({ name, shape }) => {
      const around = /probe_in|probe\.block/.test(name) ? 1 : 0;
      return [name, Float32Array.from({ length: shape.reduce((n, d) => n * d, 1) }, () => around + 0.1 * normal())];
    }));
  },
  fromDelta: () => {
    throw new Error('the probe kind has no stored deltas');
  },
  hooks: probeHooks,
  write: () => {
    throw new Error('the probe kind has no file format');
  },
};
registerTrainableKind(probe);

/** The same changes as the oracle's hooks, in float64. */
function probeOracle(family: TinyFamily, config: any, o: ProbeOptions, p: ReadonlyMap<string, Float64Array>): OracleDelta { // eslint-disable-line @typescript-eslint/no-explicit-any
  const layers = family === 'gpt2' ? config.n_layer : config.num_hidden_layers;
  const rows = (name: string, n: number) => Array.from({ length: n }, (_, i) => { const t = p.get(name)!; const w = t.length / n; return t.slice(i * w, (i + 1) * w); });
  const prefixOf = (l: number) => ({ key: rows(`probe.prefix.${l}.key`, o.prefix), value: rows(`probe.prefix.${l}.value`, o.prefix) });
  const eps = family === 'gpt2' ? config.layer_norm_epsilon : config.rms_norm_eps;
  const gain = p.get('probe.norm_gain')!;
  return {
    ...(o.virtual ? { virtualEmbeddings: rows('probe.virtual', o.virtual) } : {}),
    ...(o.prefix ? { prefix: Array.from({ length: layers }, (_, l) => prefixOf(l)) } : {}),
    norm: (_module: string, x: Vec, base: Vec) => {
      const normed = family === 'gpt2' ? layerNormalized(x, eps) : rmsNormalized(x, eps);
      return base.map((b, i) => b + normed[i]! * gain[i]!);
    },
    projectionInput: (module: string, x: Vec) => (p.has(`${module}.probe_in`) ? x.map((v, i) => v * p.get(`${module}.probe_in`)![i]!) : x),
    projectionOutput: (module: string, _x: Vec, y: Vec) => (p.has(`${module}.probe_bias`) ? y.map((v, i) => v + p.get(`${module}.probe_bias`)![i]!) : y),
    blockOutput: (layer: number, location: string, output: Vec, residual: Vec) => residual.map((r, i) => r + output[i]! * p.get(`probe.block.${layer}.${location}`)![i]!),
  };
}

const rmsNormalized = (x: Vec, eps: number) => {
  const ms = x.reduce((s, v) => s + v * v, 0) / x.length;
  return x.map((v) => v / Math.sqrt(ms + eps));
};
const layerNormalized = (x: Vec, eps: number) => {
  const mean = x.reduce((s, v) => s + v, 0) / x.length;
  const variance = x.reduce((s, v) => s + (v - mean) ** 2, 0) / x.length;
  return x.map((v) => (v - mean) / Math.sqrt(variance + eps));
};

const EXAMPLES = [
  { inputIds: [5, 17, 250, 9, 42, 100, 7, 61], labels: [-100, -100, 250, 9, 42, 100, 7, 61] },
  { inputIds: [12, 6, 77, 120, 33], labels: [12, 6, 77, 120, 33] },
];

describe('training hook points: every place a kind can act, against the oracle', () => {
  const cases: [TinyFamily, ProbeOptions][] = [
    ['llama', { virtual: 3, prefix: 0 }],
    ['llama', { virtual: 0, prefix: 2 }],
    ['gpt2', { virtual: 2, prefix: 0 }],
    ['gpt2', { virtual: 0, prefix: 3 }],
  ];
  for (const [family, options] of cases) {
    it(`${family}: norms, projection inputs and outputs, block outputs${options.virtual ? `, ${options.virtual} virtual tokens` : ''}${options.prefix ? `, a ${options.prefix}-position attention prefix` : ''}`, async () => {
      const modelDir = tempDir();
      writeTinyCheckpoint(modelDir, family, { seed: 3 });
      const config = readConfig(modelDir);
      await checkFirstStep({ kind: 'probe', options, modelDir, seed: 4, examples: EXAMPLES, samples: 2, oracleDeltas: (o, p) => [probeOracle(family, config, o as ProbeOptions, p)] });
    });
  }
});
