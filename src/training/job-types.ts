import type { LrSchedulerKind } from './schedule.js';

/**
 * OpenAI's `method`: `type` names a trainable kind (deltas/training.ts) and the object under
 * that name holds its options as the request gave them (defaults filled in), e.g.
 * `{ type: 'lora', lora: { r: 8, alpha: 16, target_modules: 'all-linear', use_rslora: false } }`.
 */
export interface FineTuneMethod {
  type: string;
  [options: string]: unknown;
}

/**
 * The options object of a method (`method[method.type]`).
 *
 * @example methodOptions({ type: 'lora', lora: { r: 8 } }) // { r: 8 }
 */
export function methodOptions(method: FineTuneMethod): unknown {
  return method[method.type];
}

/** A validated fine-tuning request (the admin API maps OpenAI's shape onto this). */
export interface FineTuneSpec {
  /** The `model` as given: the base model's name or a delta reference. */
  model: string;
  /** When continuing from a delta: its exact version. */
  from?: { owner: string; name: string; version: number };
  trainingFile: string;
  validationFile?: string;
  /** Owner of the resulting delta. */
  tenant: string;
  /** Name of the resulting delta. */
  name: string;
  method: FineTuneMethod;
  hyper: {
    nEpochs?: number;
    maxSteps?: number;
    batchSize: number;
    learningRate: number;
    weightDecay: number;
    /** null: no clipping */
    maxGradNorm: number | null;
    warmupSteps: number;
    lrScheduler: LrSchedulerKind;
  };
  seed: number;
}

export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

/** OpenAI's fine_tuning.job object, plus live progress fields. */
export interface FineTuningJob {
  id: string;
  object: 'fine_tuning.job';
  created_at: number;
  finished_at: number | null;
  model: string;
  fine_tuned_model: string | null;
  organization_id: string;
  status: JobStatus;
  training_file: string;
  validation_file: string | null;
  hyperparameters: { n_epochs: number | null; max_steps: number | null; batch_size: number; learning_rate: number; weight_decay: number; max_grad_norm: number | null; warmup_steps: number; lr_scheduler: LrSchedulerKind };
  method: FineTuneMethod;
  seed: number;
  trained_tokens: number;
  error: { code: string; message: string; param: string | null } | null;
  result_files: string[];
  estimated_finish: number | null;
  /** Optimiser steps taken and planned. */
  step: number;
  total_steps: number | null;
  /** Loss of the latest step. */
  loss: number | null;
  /** Validation loss at the latest checkpoint or the end, when the job has a validation file. */
  valid_loss: number | null;
  /** Training tokens per second over the job so far. */
  tokens_per_second: number | null;
  /** Seconds until the planned steps are done, at the rate so far. */
  eta_seconds: number | null;
}

/** OpenAI's fine_tuning.job.event. */
export interface JobEvent {
  id: string;
  object: 'fine_tuning.job.event';
  created_at: number;
  level: 'info' | 'warn' | 'error';
  message: string;
  type: 'message' | 'metrics';
  data: Record<string, unknown> | null;
}

export const TERMINAL: ReadonlySet<JobStatus> = new Set(['succeeded', 'failed', 'cancelled']);
