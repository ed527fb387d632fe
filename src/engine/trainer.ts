import ort from 'onnxruntime-node';
import '../deltas/kinds/index.js';
import { trainableKind, type TrainingTarget } from '../deltas/training.js';
import { elementCount } from '../graph/ops/shapes.js';
import type { Checkpoint } from '../model/checkpoint.js';
import { TRAINING_IO, type TrainableParam } from '../model/lower-training.js';
import { checkFeeds, float32 } from './feeds.js';
import { prepareTrainingGraph } from './graph-cache.js';
import type { Device } from './model-runtime.js';
import { createSession } from './session.js';

/** A micro-batch as the step graph takes it: [rows, seqLen] row-major, already shifted. */
export interface MicroBatch {
  inputIds: BigInt64Array;
  targetIds: Int32Array;
  /** 1 where a target exists, else 0. */
  targetMask: Float32Array;
}

export interface AdamWHyperparameters {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Global-norm clip; Infinity disables clipping. */
  maxGradNorm: number;
}

/** Parameters and AdamW moments by parameter name (the kind's, see TrainableKind.params), plus the number of steps taken. */
export interface TrainerState {
  step: number;
  params: Map<string, Float32Array>;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

export interface StepResult {
  /** The batch's mean loss over its target tokens. */
  loss: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** The step's (unclipped) gradients. */
  gradients: Map<string, Float32Array>;
}

interface PendingStep {
  batches: MicroBatch[];
  scalars: Record<string, number>;
  count: number;
  grads: Map<string, Float32Array>;
  loss: number;
  next: number;
}

/** The trainer's device, its step graph's shape, and what it trains (a trainable kind and its resolved options). */
export interface TrainerOptions extends TrainingTarget {
  cacheDir: string;
  device: Device;
  threads?: number;
  rows: number;
  seqLen: number;
  /** ORT graph optimisation for the step graph (default 'all'). */
  optimization?: 'all' | 'extended' | 'basic';
}

/**
 * Runs a delta kind's training-step graph: owns the parameters (any shapes, by the kind's names)
 * and AdamW moments, accumulates gradients over micro-batches (so a long step can be split
 * between inference steps), and applies the update after the last one. Kind-neutral: the
 * parameters and the graph come from the trainable kind (deltas/training.ts).
 *
 * @example
 * const trainer = await Trainer.create(ckpt, { cacheDir, device: 'cpu', rows: 2, seqLen: 16, kind: 'lora', options: layout }, freshTrainerState(params));
 * const { loss } = await trainer.step([batch], { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: Infinity });
 */
export class Trainer {
  private pending: PendingStep | undefined;

  private constructor(
    private readonly session: ort.InferenceSession,
    readonly options: TrainerOptions,
    readonly params: TrainableParam[],
    private state: TrainerState,
  ) {}

  static async create(ckpt: Checkpoint, options: TrainerOptions, initial: TrainerState): Promise<Trainer> {
    const { kind, options: resolved } = options;
    const params = trainableKind(kind).params(ckpt.arch, resolved);
    checkState(params, initial);
    const modelPath = prepareTrainingGraph(ckpt, options.cacheDir, { rows: options.rows, seqLen: options.seqLen }, { kind, options: resolved });
    // 'basic' optimisation: on the CPU provider the step graph builds faster and runs ~10% faster
    // than with 'all' (same losses), whose layout transforms do not pay off here.
    const session = await createSession(modelPath, { optimization: 'basic', ...options, spinning: false });
    return new Trainer(session, options, params, initial);
  }

  get stepsTaken(): number {
    return this.state.step;
  }

  /** A copy-free view of the current state (the trainer replaces, never mutates, its arrays). */
  snapshot(): TrainerState {
    return this.state;
  }

  /** True while a step started with `startStep` still has micro-batches to run. */
  get stepping(): boolean {
    return this.pending !== undefined;
  }

  /**
   * Begins one optimiser step over `batches` (micro-batches of the graph's shape); `advance()`
   * then runs them one at a time, so the engine can serve between them.
   */
  startStep(batches: MicroBatch[], hyper: AdamWHyperparameters): void {
    if (this.pending) throw new Error('a training step is already in progress');
    if (batches.length === 0) throw new Error('a training step needs at least one micro-batch');
    const count = batches.reduce((n, b) => n + sum(b.targetMask), 0);
    if (count === 0) throw new Error('a training step needs at least one target token');
    const grads = new Map<string, Float32Array>(this.params.map((p) => [p.name, new Float32Array(elementCount(p.shape))]));
    this.pending = { batches, scalars: adamwScalars(hyper, this.state.step + 1), count, grads, loss: 0, next: 0 };
  }

  /** Runs the next micro-batch; after the last one applies the update and returns the step's result. */
  async advance(): Promise<StepResult | undefined> {
    const pending = this.pending;
    if (!pending) throw new Error('no training step in progress');
    const batch = pending.batches[pending.next++]!;
    const last = pending.next === pending.batches.length;
    const fetch = [TRAINING_IO.loss, ...this.params.map((p) => `grad_sum.${p.name}`), ...(last ? this.updateOutputs() : [])];
    let out: ort.InferenceSession.OnnxValueMapType;
    try {
      out = await this.session.run(this.feeds(batch, pending.count, pending.grads, pending.scalars), fetch);
    } catch (err) {
      this.pending = undefined;
      throw err;
    }
    pending.loss += Number(out[TRAINING_IO.loss]!.data[0]);
    pending.grads = new Map(this.params.map((p) => [p.name, out[`grad_sum.${p.name}`]!.data as Float32Array]));
    if (!last) return undefined;
    const take = (prefix: string) => new Map(this.params.map((p) => [p.name, out[`${prefix}.${p.name}`]!.data as Float32Array]));
    this.state = { step: this.state.step + 1, params: take('new_param'), m: take('new_adam_m'), v: take('new_adam_v') };
    this.pending = undefined;
    return { loss: pending.loss, gradNorm: Number(out[TRAINING_IO.gradNorm]!.data[0]), gradients: pending.grads };
  }

  /**
   * The mean loss over `batches` with the current parameters, nothing updated: only the `loss`
   * output is fetched, so ORT runs the forward and loss part of the step graph alone.
   */
  async evaluate(batches: MicroBatch[]): Promise<number> {
    const count = batches.reduce((n, b) => n + sum(b.targetMask), 0);
    if (count === 0) throw new Error('evaluation needs at least one target token');
    const zeros = new Map<string, Float32Array>(this.params.map((p) => [p.name, new Float32Array(elementCount(p.shape))]));
    const scalars = adamwScalars({ lr: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: Infinity }, 1);
    let loss = 0;
    for (const batch of batches) loss += Number((await this.session.run(this.feeds(batch, count, zeros, scalars), [TRAINING_IO.loss]))[TRAINING_IO.loss]!.data[0]);
    return loss;
  }

  /** A whole step at once (tests and benches; the engine interleaves `advance()` with serving). */
  async step(batches: MicroBatch[], hyper: AdamWHyperparameters): Promise<StepResult> {
    this.startStep(batches, hyper);
    for (;;) {
      const result = await this.advance();
      if (result) return result;
    }
  }

  async release(): Promise<void> {
    await this.session.release();
  }

  private updateOutputs(): string[] {
    return [TRAINING_IO.gradNorm, ...this.params.flatMap((p) => [`new_param.${p.name}`, `new_adam_m.${p.name}`, `new_adam_v.${p.name}`])];
  }

  private feeds(batch: MicroBatch, count: number, grads: Map<string, Float32Array>, scalars: Record<string, number>): Record<string, ort.Tensor> {
    const { rows, seqLen } = this.options;
    const dims = [rows, seqLen];
    if (batch.inputIds.length !== rows * seqLen) throw new Error(`micro-batch has ${batch.inputIds.length} tokens, the step graph takes ${rows}x${seqLen}`);
    const feeds: Record<string, ort.Tensor> = {
      [TRAINING_IO.inputIds]: new ort.Tensor('int64', batch.inputIds, dims),
      [TRAINING_IO.targetIds]: new ort.Tensor('int32', batch.targetIds, dims),
      [TRAINING_IO.targetWeights]: float32(batch.targetMask.map((m) => m / count), dims),
    };
    for (const [name, value] of Object.entries(scalars)) feeds[name] = float32(Float32Array.of(value), []);
    for (const p of this.params) {
      feeds[`param.${p.name}`] = float32(this.state.params.get(p.name)!, p.shape);
      feeds[`adam_m.${p.name}`] = float32(this.state.m.get(p.name)!, p.shape);
      feeds[`adam_v.${p.name}`] = float32(this.state.v.get(p.name)!, p.shape);
      feeds[`grad_acc.${p.name}`] = float32(grads.get(p.name)!, p.shape);
    }
    checkFeeds(this.session.inputNames, feeds);
    return feeds;
  }
}

/**
 * A trainer state at step 0 from starting parameters: AdamW's moments at zero, as torch.optim.AdamW
 * starts them.
 *
 * @example const state = freshTrainerState(trainable.init(arch, options, seed));
 */
export function freshTrainerState(params: Map<string, Float32Array>): TrainerState {
  const zeros = () => new Map([...params].map(([name, p]) => [name, new Float32Array(p.length)]));
  return { step: 0, params, m: zeros(), v: zeros() };
}

/** Every parameter, with both moments, at its declared size; nothing else. */
function checkState(params: TrainableParam[], state: TrainerState): void {
  for (const [kind, values] of [['param', state.params], ['m', state.m], ['v', state.v]] as const) {
    for (const p of params) {
      const size = values.get(p.name)?.length;
      if (size !== elementCount(p.shape)) throw new Error(`trainer state ${kind} ${p.name}: expected ${elementCount(p.shape)} values [${p.shape.join(', ')}], got ${size ?? 'none'}`);
    }
    const unknown = [...values.keys()].filter((name) => !params.some((p) => p.name === name));
    if (unknown.length) throw new Error(`trainer state ${kind} has tensors the trained kind does not: ${unknown.slice(0, 4).join(', ')}`);
  }
}

/** The AdamW graph scalars for step t, computed in float64 as PyTorch does on the host. */
export function adamwScalars(h: AdamWHyperparameters, t: number): Record<string, number> {
  const A = TRAINING_IO.adamw;
  return {
    [A.decayFactor]: 1 - h.lr * h.weightDecay,
    [A.oneMinusBeta1]: 1 - h.beta1,
    [A.beta2]: h.beta2,
    [A.oneMinusBeta2]: 1 - h.beta2,
    [A.eps]: h.eps,
    [A.stepSize]: h.lr / (1 - h.beta1 ** t),
    [A.biasCorrection2Sqrt]: Math.sqrt(1 - h.beta2 ** t),
    [TRAINING_IO.maxGradNorm]: h.maxGradNorm,
  };
}

function sum(values: Float32Array): number {
  let total = 0;
  for (const v of values) total += v;
  return total;
}
