import crypto from 'node:crypto';
import os from 'node:os';
import type { ObjectStore } from '../deltas/store/objects.js';
import { runJob, type JobContext } from './job-runner.js';
import { JobStore, type JobRecord, type Lease } from './job-store.js';
import { TERMINAL, type FineTuneSpec, type FineTuningJob, type JobEvent } from './job-types.js';

/** Hears each new event; null when the manager stops and no more will come. */
type Listener = (event: JobEvent | null) => void;

interface LiveJob extends JobRecord {
  events: JobEvent[];
  /** The number of the last event read or written. */
  lastSeq: number;
  listeners: Set<Listener>;
  cancelRequested: boolean;
  /** Writes of the record and events, in order (the holder's updates are not awaited one by one). */
  writes: Promise<void>;
  /** A write of the record is queued on `writes`; later updates ride on it (only the newest state matters). */
  saveQueued?: boolean;
}

export interface JobManagerOptions {
  /** How long a lease lasts unrenewed; the holder renews it every third of this. */
  leaseMs: number;
  warn?: (message: string) => void;
}

/**
 * The fine-tuning jobs of every replica sharing a store: OpenAI-shaped job objects and events,
 * kept in the store (job-store.ts), and run one at a time per replica on its engine. A replica
 * takes a job by leasing it; status, events and cancel work from any replica (this one reads the
 * store for jobs it does not run). When a holder dies, its lease expires and another replica takes
 * the job over from the last checkpoint; a holder that stops gracefully checkpoints and gives the
 * lease up, so the next replica (or itself restarted) resumes at once. A resumed job does not log
 * again the steps its events already hold.
 *
 * @example
 * const jobs = await JobManager.open(deltaStore.records('training'), context, { leaseMs: 15_000 });
 * const job = await jobs.create(spec); // status 'queued'
 */
export class JobManager {
  private readonly jobs = new Map<string, LiveJob>();
  private readonly store: JobStore;
  private readonly holder = `${os.hostname()}:${process.pid}:${crypto.randomBytes(3).toString('hex')}`;
  private running: string | undefined;
  private execution: Promise<void> | undefined;
  private stopping = false;
  private ticking: Promise<void> | undefined;
  private readonly reloading = new Map<string, Promise<void>>();
  private readonly timer: NodeJS.Timeout;

  private constructor(objects: ObjectStore, private readonly ctx: JobContext, private readonly options: JobManagerOptions) {
    this.store = new JobStore(objects);
    this.timer = setInterval(() => this.tick(), this.pollMs).unref();
  }

  static async open(objects: ObjectStore, ctx: JobContext, options: JobManagerOptions): Promise<JobManager> {
    const manager = new JobManager(objects, ctx, options);
    await manager.refresh();
    queueMicrotask(() => manager.tick());
    return manager;
  }

  /** How often this replica looks for jobs to take and for news of jobs others run. */
  get pollMs(): number {
    return Math.max(50, Math.min(1000, Math.floor(this.options.leaseMs / 3)));
  }

  /** Stores a queued job; with an idempotency key, a retry returns the job its first attempt created. */
  async create(spec: FineTuneSpec, options: { idempotencyKey?: string } = {}): Promise<FineTuningJob> {
    const id = `ftjob-${options.idempotencyKey === undefined ? crypto.randomBytes(12).toString('hex') : crypto.createHash('sha256').update(`${spec.tenant}\0${options.idempotencyKey}`).digest('hex').slice(0, 24)}`;
    const job = newJob(id, spec);
    if (!(await this.store.create({ job, spec }))) {
      const first = (await this.find(id))!;
      // The seed and the result's name may be drawn at random per request: the rest must match.
      const same = (s: FineTuneSpec) => JSON.stringify([s.model, s.trainingFile, s.validationFile, s.tenant, s.method, s.hyper]);
      if (same(first.spec) !== same(spec)) throw Object.assign(new Error(`Idempotency-Key was first used for another job (${id}); use a new key for a new job`), { code: 'idempotency_key_reused' });
      return first.job;
    }
    this.jobs.set(id, { job, spec, events: [], lastSeq: 0, listeners: new Set(), cancelRequested: false, writes: Promise.resolve() });
    await this.event(id, 'info', 'message', `Created fine-tuning job: ${id}`);
    queueMicrotask(() => this.tick());
    return job;
  }

  get(id: string): FineTuningJob | undefined {
    return this.jobs.get(id)?.job;
  }

  /** The job as the store has it now (unless this replica runs it, and so knows best), with its new events. */
  async find(id: string): Promise<LiveJob | undefined> {
    if (!/^ftjob-[0-9a-f]{24}$/.test(id)) return undefined;
    if (this.running !== id) await this.reload(id);
    return this.jobs.get(id);
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

  /** Calls `listener` with each new event of the job (also of jobs other replicas run); returns the unsubscribe function. */
  subscribe(id: string, listener: Listener): () => void {
    const live = this.jobs.get(id);
    live?.listeners.add(listener);
    return () => live?.listeners.delete(listener);
  }

  /**
   * Cancels from any replica: the request is stored, so the holder stops after its current step
   * (within a third of the lease); a job nobody holds (queued, or its holder gone) is taken and
   * cancelled here at once.
   */
  async cancel(id: string): Promise<FineTuningJob | undefined> {
    const live = await this.find(id);
    if (!live || TERMINAL.has(live.job.status)) return live?.job;
    live.cancelRequested = true;
    await this.store.requestCancel(id);
    if (this.running === id) return live.job;
    const lease = await this.store.acquire(id, this.holder, this.options.leaseMs);
    if (!lease) return live.job;
    try {
      await this.reload(id);
      if (!TERMINAL.has(live.job.status)) await this.finish(id, { status: 'cancelled' }, 'Fine-tuning job cancelled');
    } finally {
      await this.store.release(id, lease);
    }
    return live.job;
  }

  /** Resolves when this replica runs no job (tests, shutdown). */
  async whenIdle(): Promise<void> {
    while (this.execution) await this.execution;
  }

  /**
   * Stops taking jobs; a running job finishes its current step, saves a checkpoint, stays
   * 'running' in the store and its lease is given up, so another replica (or the next start) resumes it.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.timer);
    await this.ticking;
    await this.whenIdle();
    for (const live of this.jobs.values()) for (const listener of live.listeners) listener(null);
  }

  /** One look at the store: news of jobs for their listeners, then a job to take if this replica is free. */
  private tick(): void {
    if (this.stopping || this.ticking) return;
    this.ticking = (async () => {
      await this.refresh();
      if (this.running || this.stopping) return;
      const waiting = [...this.jobs.values()].filter((j) => !TERMINAL.has(j.job.status)).sort((a, b) => a.job.created_at - b.job.created_at || a.job.id.localeCompare(b.job.id));
      for (const { job } of waiting) {
        const lease = await this.store.acquire(job.id, this.holder, this.options.leaseMs);
        if (!lease) continue;
        this.running = job.id;
        this.execution = this.execute(job.id, lease).finally(() => {
          this.running = undefined;
          this.execution = undefined;
          queueMicrotask(() => this.tick());
        });
        return;
      }
    })()
      .catch((err: Error) => this.options.warn?.(`fine-tuning jobs: ${err.message.slice(0, 300)}`))
      .finally(() => (this.ticking = undefined));
  }

  /** Reads the ids in the store; loads new jobs and re-reads those not finished that this replica does not run. */
  private async refresh(): Promise<void> {
    for (const id of await this.store.ids()) {
      const known = this.jobs.get(id);
      if (this.running === id || (known && TERMINAL.has(known.job.status) && known.listeners.size === 0)) continue;
      await this.reload(id).catch((err: Error) => this.options.warn?.(`skipping training job ${id}: ${err.message.slice(0, 200)}`));
    }
  }

  /** The stored record (unless this replica runs the job, or `force`) and the events after the last one seen; listeners hear the new events. */
  private reload(id: string, force = false): Promise<void> {
    // One read per job at a time: two at once would both append the same new events.
    const previous = this.reloading.get(id) ?? Promise.resolve();
    const next = previous.then(() => this.read(id, force));
    const tail = next.catch(() => undefined);
    this.reloading.set(id, tail);
    void tail.then(() => this.reloading.get(id) === tail && this.reloading.delete(id));
    return next;
  }

  private async read(id: string, force: boolean): Promise<void> {
    const record = await this.store.load(id);
    if (!record) return;
    let live = this.jobs.get(id);
    if (!live) {
      live = { ...record, events: [], lastSeq: 0, listeners: new Set(), cancelRequested: false, writes: Promise.resolve() };
      this.jobs.set(id, live);
    } else if (force || this.running !== id) Object.assign(live, { job: record.job, spec: record.spec });
    for (const { seq, event } of await this.store.events(id, live.lastSeq)) {
      live.lastSeq = Math.max(live.lastSeq, seq);
      live.events.push(event);
      for (const listener of live.listeners) listener(event);
    }
    // A job another replica ended: its last event was stored before its status, so every event is
    // delivered by now, and streams of it here end.
    if (this.running !== id && TERMINAL.has(live.job.status)) for (const listener of live.listeners) listener(null);
  }

  private async execute(id: string, lease: Lease): Promise<void> {
    await this.reload(id, true);
    const live = this.jobs.get(id)!;
    if (TERMINAL.has(live.job.status)) return this.store.release(id, lease);
    // Steps some holder already logged (before it died or stopped) are run again from the checkpoint, not logged again.
    const logged = Math.max(0, ...live.events.map((e) => (typeof e.data?.['step'] === 'number' ? (e.data['step'] as number) : 0)));
    let lost = false;
    const renewal = setInterval(() => {
      void (async () => {
        // Renewals that did not land for most of the lease: another replica may take the job any moment now.
        if (Date.now() > lease.expiresAt - this.options.leaseMs / 6) lost = true;
        if (!lost && !(await this.store.renew(id, lease, this.options.leaseMs))) lost = true;
        if (await this.store.cancelRequested(id)) live.cancelRequested = true;
      })().catch((err: Error) => this.options.warn?.(`job ${id}: lease renewal failed: ${err.message.slice(0, 200)}`));
    }, this.pollMs).unref();
    if (await this.store.cancelRequested(id)) live.cancelRequested = true;
    this.update(id, { status: 'running' });
    let tokens = live.job.trained_tokens;
    const tokensBefore = tokens;
    let firstStep = 0;
    try {
      const stored = this.store.checkpoints(id);
      // A checkpoint is saved only once the events and record before it are stored: a replica
      // that resumes from it finds every step up to it logged, and logs none of them again.
      const checkpoints = { load: stored.load, save: async (state: Parameters<typeof stored.save>[0]) => (await live.writes, await stored.save(state)) };
      const model = await runJob(id, live.spec, checkpoints, this.ctx, {
        started: ({ totalSteps, resumedAt, examples }) => {
          firstStep = resumedAt;
          this.update(id, { total_steps: totalSteps, step: resumedAt });
          void this.event(id, 'info', 'message', resumedAt ? `Resumed from the checkpoint at step ${resumedAt} of ${totalSteps}` : `Fine-tuning started: ${examples} examples, ${totalSteps} steps`);
        },
        stepped: ({ step, loss, gradNorm, lr, tokens: stepTokens, elapsedMs }) => {
          tokens += stepTokens;
          const eta = Math.round(((elapsedMs / (step - firstStep)) * ((live.job.total_steps ?? step) - step)) / 1000);
          this.update(id, { step, loss, trained_tokens: tokens, tokens_per_second: ((tokens - tokensBefore) * 1000) / elapsedMs, eta_seconds: eta, estimated_finish: now() + eta });
          if (step > logged) void this.event(id, 'info', 'metrics', `Step ${step}/${live.job.total_steps}: training loss=${loss.toFixed(4)}`, { step, train_loss: loss, grad_norm: gradNorm, learning_rate: lr, total_steps: live.job.total_steps });
        },
        checkpointed: (step) => {
          if (step > logged || this.stopping) void this.event(id, 'info', 'message', `Checkpoint saved at step ${step}`, { step });
        },
        validated: ({ step, validLoss }) => {
          this.update(id, { valid_loss: validLoss });
          if (step > logged) void this.event(id, 'info', 'metrics', `Step ${step}/${live.job.total_steps}: validation loss=${validLoss.toFixed(4)}`, { step, valid_loss: validLoss });
        },
        cancelled: () => live.cancelRequested || lost,
        interrupted: () => this.stopping,
      });
      if (lost) return; // another replica holds the job now: write nothing more
      if (model === null && !live.cancelRequested) await this.event(id, 'info', 'message', 'The server is stopping; the job resumes from its checkpoint on another replica or the next start');
      else if (model === null) await this.finish(id, { status: 'cancelled' }, 'Fine-tuning job cancelled');
      else await this.finish(id, { status: 'succeeded', fine_tuned_model: model, eta_seconds: 0 }, `The job has successfully completed; new model: ${model}`);
    } catch (err) {
      // Stopping mid-step (engine gone) is not a failure: the job stays running and resumes.
      if (this.stopping || lost) return;
      const e = err as Error & { code?: string; line?: number };
      if (e.code === 'engine_restarting') return await this.requeueAfterCrash(id);
      await this.finish(id, { status: 'failed', error: { code: e.code ?? 'training_failed', message: e.message, param: e.line !== undefined ? 'training_file' : null } }, `Fine-tuning failed: ${e.message}`, 'error');
    } finally {
      clearInterval(renewal);
      await live.writes;
      if (!lost) await this.store.release(id, lease);
    }
  }

  /**
   * The engine thread crashed under the job: it is queued again and, once the engine is back
   * (this replica tries again after a second, or another replica takes it), resumes from its last
   * checkpoint.
   */
  private async requeueAfterCrash(id: string): Promise<void> {
    await this.event(id, 'warn', 'message', 'The engine restarted after a crash; the job resumes from its last checkpoint');
    this.update(id, { status: 'queued' });
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }

  /**
   * Ends the job: its last event is stored before the record that says it ended, so a replica that
   * reads a finished status from the store finds the whole event log there too. Here the status
   * changes first (after the saves already queued), so local listeners see it with the last event.
   */
  private async finish(id: string, patch: Partial<FineTuningJob>, message: string, level: JobEvent['level'] = 'info'): Promise<void> {
    const live = this.jobs.get(id)!;
    await live.writes;
    Object.assign(live.job, { ...patch, finished_at: now() });
    await this.event(id, level, 'message', message);
    this.update(id, {});
    await live.writes;
  }

  /** Changes the job here at once and in the store in order (the caller holds its lease, or created it). */
  private update(id: string, patch: Partial<FineTuningJob>): void {
    const live = this.jobs.get(id)!;
    Object.assign(live.job, patch);
    if (live.saveQueued) return;
    live.saveQueued = true;
    live.writes = live.writes
      .then(() => {
        live.saveQueued = false;
        return this.store.save({ job: { ...live.job }, spec: live.spec });
      })
      .catch((err: Error) => this.options.warn?.(`job ${id}: could not store its record: ${err.message.slice(0, 200)}`));
  }

  private async event(id: string, level: JobEvent['level'], type: JobEvent['type'], message: string, data: Record<string, unknown> | null = null): Promise<void> {
    const live = this.jobs.get(id)!;
    const event: JobEvent = { id: `ftevent-${crypto.randomBytes(12).toString('hex')}`, object: 'fine_tuning.job.event', created_at: now(), level, message, type, data };
    live.events.push(event);
    for (const listener of live.listeners) listener(event);
    live.writes = live.writes
      .then(async () => {
        live.lastSeq = Math.max(live.lastSeq, await this.store.appendEvent(id, event));
      })
      .catch((err: Error) => this.options.warn?.(`job ${id}: could not store an event: ${err.message.slice(0, 200)}`));
    await live.writes;
  }
}

function newJob(id: string, spec: FineTuneSpec): FineTuningJob {
  const h = spec.hyper;
  return {
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
    method: spec.method,
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
}

const now = () => Math.floor(Date.now() / 1000);
