import '../deltas/kinds/index.js';
import type { DeltaLimits } from '../deltas/kind.js';
import type { DeltaFiles } from '../deltas/store/types.js';
import { trainableKind, type DeltaFileBytes, type TrainableKind, type TrainingBackbone } from '../deltas/training.js';
import type { Engine } from '../engine/client.js';
import { freshTrainerState, type TrainerState } from '../engine/trainer-state.js';
import type { ArchitectureSpec } from '../model/architecture.js';
import { microBatches, sequenceLength, stepExamples, stepsPerEpoch } from './batches.js';
import { parseTrainingJsonl, type DatasetOptions, type TrainingExample } from './dataset.js';
import type { TrainingFileStore } from './file-store.js';
import { methodOptions, type FineTuneSpec } from './job-types.js';
import { learningRate } from './schedule.js';

/** Everything a job needs from the server around it. */
export interface JobContext {
  engine: Pick<Engine, 'trainBegin' | 'trainStep' | 'trainEvaluate' | 'trainState' | 'trainEnd'>;
  arch: ArchitectureSpec;
  /** The server's limits, which a trained delta must fit to be served. */
  limits: DeltaLimits;
  dataset: Omit<DatasetOptions, 'maxLength'>;
  files: TrainingFileStore;
  readDelta(owner: string, name: string, version: number): Promise<DeltaFiles>;
  /** Stores and registers the finished adapter; returns the model id clients use. */
  publish(tenant: string, name: string, files: DeltaFiles): Promise<string>;
  /**
   * Writes the model a kind with `result: 'model'` trained (full fine-tuning) as a model directory
   * for job `id`; returns its path, which `--model` serves. Absent: such jobs fail.
   */
  publishModel?(id: string, files: DeltaFileBytes): Promise<string>;
  padId: number;
  /** The tokenizer and frozen weights some kinds initialise from (prompt tuning's TEXT init, DoRA's ‖W‖). */
  backbone?: TrainingBackbone;
  /** Positions a sequence may take (the serving context): a kind's virtual tokens plus a row must fit. */
  context?: number;
  maxLength: number;
  microBatchRows: number;
  checkpointEvery: number;
}

/** Where a job's trainer state is saved and found again (the shared store: any replica may resume it). */
export interface JobCheckpoints {
  load(): Promise<TrainerState | undefined>;
  save(state: TrainerState): Promise<void>;
}

/** What the manager hears while a job runs. */
export interface JobProgress {
  started(info: { totalSteps: number; resumedAt: number; examples: number }): void;
  stepped(metrics: { step: number; loss: number; gradNorm: number; lr: number; tokens: number; elapsedMs: number }): void;
  checkpointed(step: number): void;
  /** Validation loss (when the job has a validation file), at each checkpoint and at the end. */
  validated(metrics: { step: number; validLoss: number }): void;
  /** Cancelled by a user, or the job's lease lost to another replica: stop, save nothing. */
  cancelled(): boolean;
  /** The server is stopping: stop and save a checkpoint to resume from. */
  interrupted(): boolean;
}

/**
 * Runs one job to its end on the shared engine: data → the kind's resolved options and starting
 * state (fresh, a delta to continue from, or the last checkpoint) → steps (each waits its turn
 * behind serving) → checkpoints → the finished delta, in its kind's format, stored and
 * registered. Returns the model id, or null when cancelled or interrupted (then after saving a
 * checkpoint).
 */
export async function runJob(id: string, spec: FineTuneSpec, checkpoints: JobCheckpoints, ctx: JobContext, progress: JobProgress): Promise<string | null> {
  const examples = await loadExamples(spec.trainingFile, ctx);
  const trainable = trainableKind(spec.method.type);
  const { options, initial } = await startingPoint(spec, trainable, ctx);
  const saved = await checkpoints.load();
  const state = saved ?? initial;
  const batchSize = Math.min(spec.hyper.batchSize, examples.length);
  const totalSteps = spec.hyper.maxSteps ?? (spec.hyper.nEpochs ?? 1) * stepsPerEpoch(examples.length, batchSize);
  const rows = Math.min(batchSize, ctx.microBatchRows);
  // Rows were checked against the context at job creation; the graph's padding must fit too.
  const virtual = trainable.virtualTokens?.(options) ?? 0;
  const seqLen = Math.min(sequenceLength(examples, ctx.maxLength), (ctx.context ?? Infinity) - virtual);
  const truncate = (e: TrainingExample) => ({ inputIds: e.inputIds.slice(0, seqLen), labels: e.labels.slice(0, seqLen) });
  const truncated = examples.map(truncate);
  const validation = spec.validationFile ? microBatches((await loadExamples(spec.validationFile, ctx)).map(truncate), rows, seqLen, ctx.padId).batches : undefined;
  const validate = async (step: number) => {
    if (validation) progress.validated({ step, validLoss: await ctx.engine.trainEvaluate(id, validation) });
  };
  progress.started({ totalSteps, resumedAt: state.step, examples: examples.length });
  await ctx.engine.trainBegin({ jobId: id, kind: trainable.name, options, rows, seqLen, state });
  const began = performance.now();
  let final: TrainerState;
  try {
    const h = spec.hyper;
    const adamw = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: h.weightDecay, maxGradNorm: h.maxGradNorm ?? Infinity };
    for (let step = state.step; step < totalSteps; step++) {
      if (progress.cancelled() || progress.interrupted()) break;
      const chosen = stepExamples(truncated.length, batchSize, spec.seed, step).map((i) => truncated[i]!);
      const { batches, tokens } = microBatches(chosen, rows, seqLen, ctx.padId);
      const lr = learningRate({ base: h.learningRate, step, total: totalSteps, warmup: h.warmupSteps, kind: h.lrScheduler });
      const result = await ctx.engine.trainStep(id, batches, { ...adamw, lr });
      progress.stepped({ step: result.step, loss: result.loss, gradNorm: result.gradNorm, lr, tokens, elapsedMs: performance.now() - began });
      if (result.step % ctx.checkpointEvery === 0 && result.step < totalSteps) {
        await checkpoints.save(await ctx.engine.trainState(id));
        progress.checkpointed(result.step);
        await validate(result.step);
      }
    }
    if (!progress.cancelled() && !progress.interrupted()) await validate(totalSteps);
  } finally {
    final = await ctx.engine.trainEnd(id);
  }
  if (progress.cancelled()) return null;
  if (progress.interrupted()) {
    await checkpoints.save(final);
    progress.checkpointed(final.step);
    return null;
  }
  const files = trainable.write(ctx.arch, options, final.params, { baseModel: spec.from ? `${spec.from.owner}/${spec.from.name}@${spec.from.version}` : spec.model });
  if (trainable.result === 'model') {
    if (!ctx.publishModel) throw new Error(`this server cannot publish the model a ${trainable.name} job trains`);
    return ctx.publishModel(id, files);
  }
  return ctx.publish(spec.tenant, spec.name, { config: new TextEncoder().encode(files.config), weights: files.weights });
}

async function loadExamples(fileId: string, ctx: JobContext): Promise<TrainingExample[]> {
  const text = new TextDecoder().decode(await ctx.files.read(fileId));
  // Truncation to the step graph's length happens after; parse at the configured maximum.
  return parseTrainingJsonl(text, { ...ctx.dataset, maxLength: ctx.maxLength });
}

/** The kind's resolved options and starting parameters: a fresh delta on the base, or the delta to continue from. */
async function startingPoint(spec: FineTuneSpec, trainable: TrainableKind, ctx: JobContext): Promise<{ options: unknown; initial: TrainerState }> {
  if (spec.from) {
    const files = await ctx.readDelta(spec.from.owner, spec.from.name, spec.from.version);
    const { options, params } = trainable.fromDelta({ config: new TextDecoder().decode(files.config), weights: files.weights }, ctx.arch, ctx.backbone);
    return { options, initial: freshTrainerState(params) };
  }
  const options = trainable.resolve(ctx.arch, trainable.options.parse(methodOptions(spec.method)), ctx.limits, ctx.backbone);
  return { options, initial: freshTrainerState(trainable.init(ctx.arch, options, spec.seed, ctx.backbone)) };
}
