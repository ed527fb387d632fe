import crypto from 'node:crypto';
import { runJob, type JobContext } from './job-runner.js';
import { JobStore, type JobRecord } from './job-store.js';
import { TERMINAL, type FineTuneSpec, type FineTuningJob, type JobEvent } from './job-types.js';

/** Hears each new event; null when the manager stops and no more will come. */
type Listener = (event: JobEvent | null) => void;

interface LiveJob extends JobRecord {
  events: JobEvent[];
  listeners: Set<Listener>;
  cancelRequested: boolean;
}

/**
 * The fine-tuning jobs of one server: OpenAI-shaped job objects and events, persisted under the
 * data directory, run one at a time in submission order on the shared engine. Jobs that were
 * queued or running when the server stopped are queued again on start, and a running one
 * resumes from its last checkpoint.
 *
 * @example
 * const jobs = JobManager.open(dir, context);
 * const job = jobs.create(spec); // status 'queued'
 */
export class JobManager {
  private readonly jobs = new Map<string, LiveJob>();
  private readonly queue: string[] = [];
  private running: string | undefined;
  private idleWaiters: (() => void)[] = [];
  private stopping = false;

  private constructor(private readonly store: JobStore, private readonly ctx: JobContext) {}

  static open(dir: string, ctx: JobContext, warn: (message: string) => void = console.warn): JobManager {
    const manager = new JobManager(new JobStore(dir), ctx);
    for (const { record, events } of manager.store.loadAll(warn)) {
      manager.jobs.set(record.job.id, { ...record, events, listeners: new Set(), cancelRequested: false });
      if (!TERMINAL.has(record.job.status)) manager.queue.push(record.job.id);
    }
    // Resumed jobs wait in the order they were created, the interrupted one first among them.
    manager.queue.sort((a, b) => Number(manager.jobs.get(b)!.job.status === 'running') - Number(manager.jobs.get(a)!.job.status === 'running'));
    for (const id of manager.queue) manager.update(id, { status: 'queued' });
    queueMicrotask(() => manager.pump());
    return manager;
  }

  create(spec: FineTuneSpec): FineTuningJob {
    const id = `ftjob-${crypto.randomBytes(12).toString('hex')}`;
    const h = spec.hyper;
    const job: FineTuningJob = {
      id,
      object: 'fine_tuning.job',
      created_at: now(),
      finished_at: null,
      model: spec.model,
      fine_tuned_model: null,
      organization_id: spec.tenant,
      status: 'queued',
      training_file: spec.trainingFile,
      validation_file: spec.validationFile ?? null,
      hyperparameters: { n_epochs: h.nEpochs ?? null, max_steps: h.maxSteps ?? null, batch_size: h.batchSize, learning_rate: h.learningRate, weight_decay: h.weightDecay, max_grad_norm: h.maxGradNorm, warmup_steps: h.warmupSteps, lr_scheduler: h.lrScheduler },
      method: { type: 'lora', lora: { r: spec.lora.r, alpha: spec.lora.alpha, target_modules: spec.lora.targetModules, use_rslora: spec.lora.useRslora } },
      seed: spec.seed,
      trained_tokens: 0,
      error: null,
      result_files: [],
      estimated_finish: null,
      step: 0,
      total_steps: null,
      loss: null,
      valid_loss: null,
      tokens_per_second: null,
      eta_seconds: null,
    };
    const live: LiveJob = { job, spec, events: [], listeners: new Set(), cancelRequested: false };
    this.jobs.set(id, live);
    this.store.save(live);
    this.event(id, 'info', 'message', `Created fine-tuning job: ${id}`);
    this.queue.push(id);
    queueMicrotask(() => this.pump());
    return job;
  }

  get(id: string): FineTuningJob | undefined {
    return this.jobs.get(id)?.job;
  }

  /** Newest first, as OpenAI lists them. */
  list(tenant?: string): FineTuningJob[] {
    return [...this.jobs.values()].map((j) => j.job).filter((j) => !tenant || j.organization_id === tenant).sort((a, b) => b.created_at - a.created_at || b.id.localeCompare(a.id));
  }

  /** Job counts by status and the running job's progress, for the training metrics. */
  snapshot(): { jobs: Record<string, number>; step: number | null; totalSteps: number | null; loss: number | null; trainedTokens: number } {
    const jobs: Record<string, number> = { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
    let trainedTokens = 0;
    for (const { job } of this.jobs.values()) {
      jobs[job.status] = (jobs[job.status] ?? 0) + 1;
      trainedTokens += job.trained_tokens;
    }
    const running = this.running ? this.jobs.get(this.running)!.job : undefined;
    return { jobs, step: running?.step ?? null, totalSteps: running?.total_steps ?? null, loss: running?.loss ?? null, trainedTokens };
  }

  /** Oldest first. */
  events(id: string): JobEvent[] {
    return this.jobs.get(id)?.events ?? [];
  }

  /** Calls `listener` with each new event of the job; returns the unsubscribe function. */
  subscribe(id: string, listener: Listener): () => void {
    const live = this.jobs.get(id);
    live?.listeners.add(listener);
    return () => live?.listeners.delete(listener);
  }

  /** A queued job is cancelled at once; a running one after its current step. */
  cancel(id: string): FineTuningJob | undefined {
    const live = this.jobs.get(id);
    if (!live || TERMINAL.has(live.job.status)) return live?.job;
    live.cancelRequested = true;
    const queued = this.queue.indexOf(id);
    if (queued >= 0) {
      this.queue.splice(queued, 1);
      this.finish(id, { status: 'cancelled' }, 'Fine-tuning job cancelled');
    }
    return live.job;
  }

  /** Resolves when no job is running or queued (tests, shutdown). */
  whenIdle(): Promise<void> {
    if (!this.running && (!this.queue.length || this.stopping)) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Stops taking jobs; a running job finishes its current step, saves a checkpoint and stays
   * 'running' on disk, so the next start resumes it.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    this.queue.length = 0;
    await this.whenIdle();
    for (const live of this.jobs.values()) for (const listener of live.listeners) listener(null);
  }

  private pump(): void {
    if (this.running || this.stopping) {
      if (!this.running) for (const resolve of this.idleWaiters.splice(0)) resolve();
      return;
    }
    const id = this.queue.shift();
    if (!id) {
      for (const resolve of this.idleWaiters.splice(0)) resolve();
      return;
    }
    this.running = id;
    this.execute(id).finally(() => {
      this.running = undefined;
      this.pump();
    });
  }

  private async execute(id: string): Promise<void> {
    const live = this.jobs.get(id)!;
    this.update(id, { status: 'running' });
    let tokens = live.job.trained_tokens;
    const tokensBefore = tokens;
    let firstStep = 0;
    try {
      const model = await runJob(id, live.spec, this.store.checkpointDir(id), this.ctx, {
        started: ({ totalSteps, resumedAt, examples }) => {
          firstStep = resumedAt;
          this.update(id, { total_steps: totalSteps, step: resumedAt });
          this.event(id, 'info', 'message', resumedAt ? `Resumed from the checkpoint at step ${resumedAt} of ${totalSteps}` : `Fine-tuning started: ${examples} examples, ${totalSteps} steps`);
        },
        stepped: ({ step, loss, gradNorm, lr, tokens: stepTokens, elapsedMs }) => {
          tokens += stepTokens;
          const eta = Math.round(((elapsedMs / (step - firstStep)) * ((live.job.total_steps ?? step) - step)) / 1000);
          this.update(id, { step, loss, trained_tokens: tokens, tokens_per_second: ((tokens - tokensBefore) * 1000) / elapsedMs, eta_seconds: eta, estimated_finish: now() + eta });
          this.event(id, 'info', 'metrics', `Step ${step}/${live.job.total_steps}: training loss=${loss.toFixed(4)}`, { step, train_loss: loss, grad_norm: gradNorm, learning_rate: lr, total_steps: live.job.total_steps });
        },
        checkpointed: (step) => this.event(id, 'info', 'message', `Checkpoint saved at step ${step}`),
        validated: ({ step, validLoss }) => {
          this.update(id, { valid_loss: validLoss });
          this.event(id, 'info', 'metrics', `Step ${step}/${live.job.total_steps}: validation loss=${validLoss.toFixed(4)}`, { step, valid_loss: validLoss });
        },
        cancelled: () => live.cancelRequested,
        interrupted: () => this.stopping,
      });
      if (model === null && !live.cancelRequested) this.event(id, 'info', 'message', 'The server is stopping; the job resumes from its checkpoint on restart');
      else if (model === null) this.finish(id, { status: 'cancelled' }, 'Fine-tuning job cancelled');
      else this.finish(id, { status: 'succeeded', fine_tuned_model: model, eta_seconds: 0 }, `The job has successfully completed; new model: ${model}`);
    } catch (err) {
      // Stopping mid-step (engine gone) is not a failure: the job stays running and resumes.
      if (this.stopping) return;
      const e = err as Error & { code?: string; line?: number };
      if (e.code === 'engine_restarting') return this.requeueAfterCrash(id);
      this.finish(id, { status: 'failed', error: { code: e.code ?? 'training_failed', message: e.message, param: e.line !== undefined ? 'training_file' : null } }, `Fine-tuning failed: ${e.message}`, 'error');
    }
  }

  /**
   * The engine thread crashed under the job: it goes back to the head of the queue and, once the
   * engine is back (tried again every second), resumes from its last checkpoint.
   */
  private async requeueAfterCrash(id: string): Promise<void> {
    this.event(id, 'warn', 'message', 'The engine restarted after a crash; the job resumes from its last checkpoint');
    this.update(id, { status: 'queued' });
    this.queue.unshift(id);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }

  private finish(id: string, patch: Partial<FineTuningJob>, message: string, level: JobEvent['level'] = 'info'): void {
    this.update(id, { ...patch, finished_at: now() });
    this.event(id, level, 'message', message);
  }

  private update(id: string, patch: Partial<FineTuningJob>): void {
    const live = this.jobs.get(id)!;
    Object.assign(live.job, patch);
    this.store.save(live);
  }

  private event(id: string, level: JobEvent['level'], type: JobEvent['type'], message: string, data: Record<string, unknown> | null = null): void {
    const live = this.jobs.get(id)!;
    const event: JobEvent = { id: `ftevent-${crypto.randomBytes(12).toString('hex')}`, object: 'fine_tuning.job.event', created_at: now(), level, message, type, data };
    live.events.push(event);
    this.store.appendEvent(id, event);
    for (const listener of live.listeners) listener(event);
  }
}

const now = () => Math.floor(Date.now() / 1000);
