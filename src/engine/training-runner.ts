import type { TrainingTarget } from '../deltas/training.js';
import type { Checkpoint } from '../model/checkpoint.js';
import { Trainer, type AdamWHyperparameters, type MicroBatch, type TrainerState } from './trainer.js';
import type { Device } from './model-runtime.js';
import { EngineError } from './types.js';

/** What a training job asks the engine for: a trainer of this kind and shape, starting from `state`. */
export interface TrainBeginSpec extends TrainingTarget {
  jobId: string;
  /** Micro-batch rows and tokens per row: the step graph's fixed shape. */
  rows: number;
  seqLen: number;
  state: TrainerState;
}

export interface TrainStepResult {
  loss: number;
  gradNorm: number;
  /** Steps the trainer has taken, this one included. */
  step: number;
  /** Milliseconds the step's micro-batches ran on the device. */
  deviceMs: number;
}

interface QueuedStep {
  resolve: (result: TrainStepResult) => void;
  reject: (err: Error) => void;
  deviceMs: number;
}

/**
 * The training side of the shared device: at most one job's trainer, and at most one queued
 * step, run one micro-batch at a time by the engine loop. Serving keeps priority: while requests
 * are running, training may take only `share` of the device time; when serving is idle it runs
 * back to back.
 */
export class TrainingRunner {
  private job: { id: string; trainer: Trainer; step?: QueuedStep } | undefined;
  private beginning = false;
  private servedMs = 0;
  private trainedMs = 0;

  constructor(
    private readonly ckpt: Checkpoint,
    private readonly options: { cacheDir: string; device: Device; threads?: number | undefined; share: number },
  ) {}

  async begin(spec: TrainBeginSpec): Promise<void> {
    if (this.job || this.beginning) throw new EngineError('training_busy', `the engine is already training job ${this.job?.id ?? '(starting)'}; one job trains at a time`);
    this.beginning = true;
    try {
      const { cacheDir, device, threads } = this.options;
      const trainer = await Trainer.create(this.ckpt, { cacheDir, device, threads, rows: spec.rows, seqLen: spec.seqLen, kind: spec.kind, options: spec.options }, spec.state);
      this.job = { id: spec.jobId, trainer };
    } finally {
      this.beginning = false;
    }
  }

  /** Queues one optimiser step; it resolves when its last micro-batch has run. */
  step(jobId: string, batches: MicroBatch[], hyper: AdamWHyperparameters): Promise<TrainStepResult> {
    const job = this.active(jobId);
    if (job.step) throw new EngineError('training_busy', `job ${jobId} already has a step queued`);
    job.trainer.startStep(batches, hyper);
    return new Promise((resolve, reject) => (job.step = { resolve, reject, deviceMs: 0 }));
  }

  /** Mean loss of held-out micro-batches under the current parameters (run at once: it is forward-only). */
  evaluate(jobId: string, batches: MicroBatch[]): Promise<number> {
    const job = this.active(jobId);
    if (job.step) throw new EngineError('training_busy', `job ${jobId} has a step in progress`);
    return job.trainer.evaluate(batches);
  }

  state(jobId: string): TrainerState {
    return this.active(jobId).trainer.snapshot();
  }

  /** Releases the trainer (a queued step is abandoned) and returns its final state. */
  async end(jobId: string): Promise<TrainerState> {
    const job = this.active(jobId);
    this.job = undefined;
    job.step?.reject(new EngineError('training_cancelled', `job ${jobId} ended with a step queued`));
    const state = job.trainer.snapshot();
    await job.trainer.release();
    return state;
  }

  get hasWork(): boolean {
    return this.job?.step !== undefined;
  }

  /** Whether a micro-batch may run now, given whether requests are being served. */
  mayRun(serving: boolean): boolean {
    if (!this.hasWork) return false;
    if (!serving) return true;
    const { share } = this.options;
    return this.trainedMs <= (share / (1 - share)) * this.servedMs;
  }

  /** Accounts serving time (the share is measured over the current busy period). */
  served(ms: number): void {
    this.servedMs += ms;
  }

  /** Serving went idle: the next busy period starts a fresh account. */
  servingIdle(): void {
    this.servedMs = 0;
    this.trainedMs = 0;
  }

  async runMicroBatch(): Promise<void> {
    const job = this.job!;
    const queued = job.step!;
    const started = performance.now();
    try {
      const result = await job.trainer.advance();
      const ms = performance.now() - started;
      this.trainedMs += ms;
      queued.deviceMs += ms;
      if (!result) return;
      job.step = undefined;
      queued.resolve({ loss: result.loss, gradNorm: result.gradNorm, step: job.trainer.stepsTaken, deviceMs: queued.deviceMs });
    } catch (err) {
      job.step = undefined;
      queued.reject(err as Error);
    }
  }

  private active(jobId: string): { id: string; trainer: Trainer; step?: QueuedStep } {
    if (!this.job || this.job.id !== jobId) throw new EngineError('training_not_found', `the engine is not training job ${jobId}`);
    return this.job;
  }
}
