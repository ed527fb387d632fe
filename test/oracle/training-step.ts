/**
 * The per-kind check of a training step against an independent float64 reference: the engine
 * trainer's first AdamW step for a trainable kind (real step graph, real ORT session) against
 *   - the loss of the test oracle's forward (test/oracle/transformer.ts) with the kind as the
 *     reference implementation applies it (the caller's OracleDelta[], built from the parameters),
 *     the Hugging Face causal-LM loss (labels shifted by one, -100 ignored, mean over the batch);
 *   - its gradients by float64 central differences of that loss;
 *   - one float64 AdamW step written from PyTorch's definition (torch.optim.AdamW, single tensor,
 *     not from src/graph/optim).
 * Every tensor of the kind is checked, at `samples` elements each (all of them when smaller).
 * Gradient clipping needs every gradient, so the check runs without it (covered by
 * test/engine/training.test.ts against PyTorch).
 */
import assert from 'node:assert/strict';
import '../../src/deltas/kinds/index.js';
import type { DeltaLimits } from '../../src/deltas/kind.js';
import { trainableKind } from '../../src/deltas/training.js';
import { freshTrainerState, Trainer, type AdamWHyperparameters } from '../../src/engine/trainer.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { mulberry32 } from '../../src/model/random.js';
import { microBatches } from '../../src/training/batches.js';
import type { TrainingExample } from '../../src/training/dataset.js';
import { tempDir } from '../helpers.js';
import { loadWeightsF32, readConfig } from './checkpoints.js';
import { oracleLogits64, type ForwardWeights, type OracleDelta, type OracleWeights, type Vec } from './transformer.js';

export interface FirstStepCheck {
  /** The trainable kind (`method.type`) and its options as a request gives them (`method.<kind>`). */
  kind: string;
  options: unknown;
  /** A tiny checkpoint directory (test/oracle/checkpoints.ts writeTinyCheckpoint). */
  modelDir: string;
  /** The starting parameters by the kind's names; default: the kind's initialisation from `seed`. */
  params?: ReadonlyMap<string, Float32Array>;
  seed?: number;
  /** The batch, as the dataset gives it: labels -100 where no loss is taken. */
  examples: TrainingExample[];
  /** Rows per micro-batch (default: the whole batch in one). */
  rows?: number;
  /** The kind as the reference computes it, from its resolved options and float64 parameters. */
  oracleDeltas(options: unknown, params: ReadonlyMap<string, Float64Array>): OracleDelta[];
  /** The weights the oracle's forward reads, given the parameters (full fine-tuning: the parameters themselves); default the checkpoint's. */
  oracleWeights?(base: OracleWeights, params: ReadonlyMap<string, Float64Array>): ForwardWeights;
  /** The elements of tensor `name` to check; default (or undefined) `samples` of them at random. */
  sample?(name: string, size: number): number[] | undefined;
  /** AdamW's hyperparameters (default lr 1e-2, betas 0.9/0.999, eps 1e-8, weight decay 0.01). */
  hyper?: Partial<Omit<AdamWHyperparameters, 'maxGradNorm'>>;
  /** Elements checked per tensor (default 4). */
  samples?: number;
  limits?: DeltaLimits;
}

export interface FirstStepReport {
  engineLoss: number;
  oracleLoss: number;
  /** Elements whose step was compared, and those whose gradient was too close to 0 for AdamW's sign to be defined. */
  compared: number;
  signless: number;
  /** Largest |engine − oracle| / max(|p0|, |Δ|) of the compared elements. */
  worstStep: number;
}

const DEFAULT_HYPER = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
const LIMITS: DeltaLimits = { maxRank: 64, maxVirtualTokens: 64, maxBottleneck: 64 };

/**
 * Runs the engine's first step and the float64 reference, and asserts: the loss within 1e-5
 * relative, each tensor's sampled gradients within 1e-4 relative (float32 accumulation in the
 * engine), and each sampled parameter after the step within 1e-5 relative to max(|p0|, |Δ|).
 *
 * @example
 * await checkFirstStep({ kind: 'lora', options: { r: 4 }, modelDir, params, examples, oracleDeltas: (o, p) => [loraOracleDelta(...)] });
 */
export async function checkFirstStep(check: FirstStepCheck): Promise<FirstStepReport> {
  const hyper: AdamWHyperparameters = { ...DEFAULT_HYPER, ...check.hyper, maxGradNorm: Infinity };
  const engine = await engineStep(check, hyper);
  const oracle = oracleLoss(check, engine.options);
  const start = new Map([...engine.start].map(([name, p]) => [name, Float64Array.from(p)]));
  const oracleLossValue = oracle(start);
  assert.ok(Math.abs(engine.loss - oracleLossValue) <= 1e-5 * Math.abs(oracleLossValue), `loss: engine ${engine.loss}, oracle ${oracleLossValue}`);
  const report: FirstStepReport = { engineLoss: engine.loss, oracleLoss: oracleLossValue, compared: 0, signless: 0, worstStep: 0 };
  const random = mulberry32(check.seed ?? 11);
  for (const [name, p0] of start) {
    const picked = check.sample?.(name, p0.length) ?? sampleIndices(p0.length, check.samples ?? 4, random);
    const grads = picked.map((i) => centralDifference(oracle, start, name, i));
    compareGradients(name, picked.map((i) => engine.gradients.get(name)![i]!), grads);
    const floor = 1e-4 * Math.max(...grads.map(Math.abs)) + 1e-9;
    picked.forEach((i, k) => {
      const want = adamwFirstStep(p0[i]!, grads[k]!, hyper);
      const got = engine.after.get(name)![i]!;
      // A gradient at the level of float32 noise gives AdamW's first step an arbitrary sign.
      if (Math.abs(grads[k]!) <= floor) return void report.signless++;
      const error = Math.abs(got - want) / Math.max(Math.abs(p0[i]!), Math.abs(want - p0[i]!));
      report.compared++;
      report.worstStep = Math.max(report.worstStep, error);
      assert.ok(error <= 1e-5, `${name}[${i}]: engine ${got}, oracle ${want} (from ${p0[i]}, gradient ${grads[k]}): relative error ${error}`);
    });
  }
  return report;
}

/** The engine trainer's first step: loss, gradients, and the parameters before and after. */
async function engineStep(check: FirstStepCheck, hyper: AdamWHyperparameters) {
  const ckpt = openCheckpoint(check.modelDir);
  const trainable = trainableKind(check.kind);
  const options = trainable.resolve(ckpt.arch, trainable.options.parse(check.options), check.limits ?? LIMITS);
  const start = new Map([...(check.params ?? trainable.init(ckpt.arch, options, check.seed ?? 11))].map(([k, v]) => [k, Float32Array.from(v)]));
  const seqLen = Math.ceil(Math.max(...check.examples.map((e) => e.inputIds.length)) / 8) * 8;
  const rows = check.rows ?? check.examples.length;
  const trainer = await Trainer.create(ckpt, { cacheDir: tempDir(), device: 'cpu', rows, seqLen, kind: check.kind, options }, freshTrainerState(new Map([...start].map(([k, v]) => [k, Float32Array.from(v)]))));
  try {
    const { loss, gradients } = await trainer.step(microBatches(check.examples, rows, seqLen, 0).batches, hyper);
    return { options, start, loss, gradients, after: trainer.snapshot().params };
  } finally {
    await trainer.release();
  }
}

/** The mean next-token cross-entropy of the batch under the oracle, in float64, as a function of the parameters. */
function oracleLoss(check: FirstStepCheck, options: unknown): (params: ReadonlyMap<string, Float64Array>) => number {
  const config = readConfig(check.modelDir);
  const weights = loadWeightsF32(check.modelDir);
  return (params) => {
    const deltas = check.oracleDeltas(options, params);
    let total = 0;
    let count = 0;
    for (const { inputIds, labels } of check.examples) {
      const logits = oracleLogits64(config, check.oracleWeights?.(weights, params) ?? weights, inputIds, undefined, deltas);
      for (let t = 0; t + 1 < inputIds.length; t++) {
        if (labels[t + 1] === -100) continue;
        total -= logSoftmax64(logits[t]!)[labels[t + 1]!]!;
        count++;
      }
    }
    return total / count;
  };
}

/** dL/dp[name][i] by a central difference in float64 (the oracle's loss is smooth and exact to ~1e-15). */
function centralDifference(loss: (params: ReadonlyMap<string, Float64Array>) => number, params: Map<string, Float64Array>, name: string, i: number): number {
  const values = params.get(name)!;
  const x0 = values[i]!;
  const h = 1e-4 * Math.max(1, Math.abs(x0));
  values[i] = x0 + h;
  const up = loss(params);
  values[i] = x0 - h;
  const down = loss(params);
  values[i] = x0;
  return (up - down) / (2 * h);
}

/**
 * torch.optim.AdamW's first step (state zero, step 1) for one element, in float64:
 * p ← p·(1 − lr·wd); m = (1 − β1)·g; v = (1 − β2)·g²; p ← p − (lr / (1 − β1)) · m / (sqrt(v) / sqrt(1 − β2) + eps).
 */
function adamwFirstStep(p: number, g: number, h: AdamWHyperparameters): number {
  const decayed = p * (1 - h.lr * h.weightDecay);
  const m = (1 - h.beta1) * g;
  const v = (1 - h.beta2) * g * g;
  const denom = Math.sqrt(v) / Math.sqrt(1 - h.beta2) + h.eps;
  return decayed - (h.lr / (1 - h.beta1)) * (m / denom);
}

/** ‖engine − oracle‖ ≤ 1e-4 ‖oracle‖ over a tensor's sampled elements (exact zeros must stay ~zero). */
function compareGradients(name: string, engine: number[], oracle: number[]): void {
  const norm = (xs: number[]) => Math.sqrt(xs.reduce((s, x) => s + x * x, 0));
  const error = norm(engine.map((e, k) => e - oracle[k]!));
  assert.ok(error <= 1e-4 * norm(oracle) + 1e-9, `${name}: gradients engine [${engine.join(', ')}] vs central differences [${oracle.join(', ')}]`);
}

/** `count` distinct indices of [0, n) (all of them when n ≤ count), ascending. */
function sampleIndices(n: number, count: number, random: () => number): number[] {
  if (n <= count) return Array.from({ length: n }, (_, i) => i);
  const picked = new Set<number>();
  while (picked.size < count) picked.add(Math.floor(random() * n));
  return [...picked].sort((a, b) => a - b);
}

function logSoftmax64(logits: Vec): Float64Array {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return logits.map((v) => v - lse);
}
