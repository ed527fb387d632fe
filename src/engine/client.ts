import { Worker } from 'node:worker_threads';
import type { DeltaCacheStats } from './delta-cache.js';
import type { AdamWHyperparameters, MicroBatch, TrainerState } from './trainer.js';
import type { TrainBeginSpec, TrainStepResult } from './training-runner.js';
import type { DeltaResidency, DeltaSummary, EngineOptions, FromWorker, ModelInfo, ToWorker } from './protocol.js';
import { EngineError, engineErrorCode, type EngineErrorCode, type GenerateEvent, type GenerateRequest } from './types.js';
import { threadEntry } from './thread-entry.js';

/**
 * Scheduler counters (queued requests, rows decoding, rows in use incl. prefill, occupied delta
 * slots, admin-pinned deltas, delta loads in flight) and the delta cache tiers' counters.
 */
export interface EngineStats extends DeltaCacheStats {
  waiting: number;
  decoding: number;
  running: number;
  residentSlots: number;
  pinnedDeltas: number;
  loadsInFlight: number;
  /** Delta keys (owner/name@version) of the rows in flight, and of the waiting requests. */
  runningDeltas: string[];
  waitingDeltas: string[];
  /** The delta kinds hooked into the graph now (each one's hooks run in every pass). */
  servedKinds: string[];
  /** The engine thread's V8 heap in use, and the memory its objects hold outside that heap. */
  engineHeapBytes: number;
  engineExternalBytes: number;
}

/** ready: serving; restarting: the thread died and a new one is starting (requests get 503); failed: it could not be restarted. */
export type EngineStatus = 'starting' | 'ready' | 'restarting' | 'failed';

/** The engine as the HTTP side sees it. */
export interface Engine {
  readonly info: ModelInfo;
  readonly status: EngineStatus;
  /** Hears the engine thread crash and restart (for logs). */
  onLifecycle(listener: (event: EngineLifecycleEvent) => void): void;
  /** Makes the engine thread crash, to test the restart path; honoured only under NODE_ENV=test. */
  injectCrash(): void;
  /** Streams a generation's events; ends after its 'done' (or throws on 'error'). */
  generate(request: GenerateRequest, signal?: AbortSignal): AsyncIterable<GenerateEvent>;
  /**
   * Validates a PEFT adapter's two files against the backbone; registers it under `name` unless
   * dryRun. With the stored version's `sha256`, the files also go into the disk tier.
   */
  registerPeft(name: string, files: { config: Uint8Array; weights: Uint8Array }, options?: { dryRun?: boolean; sha256?: string }): Promise<DeltaSummary>;
  /** Forgets a delta version; with its SHA-256, its files also leave the local disk cache. */
  unregisterDelta(name: string, sha256?: string): Promise<void>;
  stats(): Promise<EngineStats>;
  /**
   * Hooks delta kinds into the graph ahead of their first request (which would otherwise wait
   * for it); rejects with invalid_delta for a kind that cannot be served here.
   */
  enableKinds(kinds: string[]): Promise<void>;
  /** Loads a delta (engine key) into host memory, and into a free or evictable slot if there is one. */
  prefetchDelta(name: string): Promise<DeltaResidency>;
  /** Keeps a delta resident until unpinned; rejects with pin_limit or slots_busy (409). */
  pinDelta(name: string): Promise<DeltaResidency>;
  unpinDelta(name: string): Promise<DeltaResidency>;
  /** Creates the trainer for a training job on the engine's device (one job at a time). */
  trainBegin(spec: TrainBeginSpec): Promise<void>;
  /** Runs one optimiser step between inference steps (serving keeps priority). */
  trainStep(jobId: string, batches: MicroBatch[], hyper: AdamWHyperparameters): Promise<TrainStepResult>;
  /** Mean loss of held-out micro-batches under the job's current parameters. */
  trainEvaluate(jobId: string, batches: MicroBatch[]): Promise<number>;
  trainState(jobId: string): Promise<TrainerState>;
  /** Releases the job's trainer and returns its final state. */
  trainEnd(jobId: string): Promise<TrainerState>;
  /** Hears every delta load the engine finishes (the tier it read from and its duration). */
  onDeltaLoad(listener: (load: { name: string; tier: 'host' | 'disk' | 'store'; ms: number }) => void): void;
  /** Stops the thread after its current step; past `deadline` (epoch ms) it is terminated mid-step. */
  close(deadline?: number): Promise<void>;
}

/** What happened to the engine thread: it died (requests in flight failed), came back, or could not. */
export type EngineLifecycleEvent = { phase: 'crashed'; reason: string } | { phase: 'restarted'; ms: number; attempts: number } | { phase: 'failed'; reason: string; attempts: number };

/** Restarts tried after a crash before the engine is given up as failed (readiness and liveness then 503). */
const MAX_RESTART_ATTEMPTS = 5;

/**
 * Starts the engine worker and resolves once the model is loaded. A worker that dies later is
 * replaced (see Engine.status): requests in flight fail with engine_restarting, the new thread
 * hooks in the kinds and pins the deltas the old one had, and deltas load again from the tiers.
 *
 * @example const engine = await startEngine({ modelDir, cacheDir, device: 'cpu', ... });
 */
export async function startEngine(options: EngineOptions): Promise<Engine> {
  const client = new WorkerEngine(options);
  await client.start();
  return client;
}

/** Omit distributed over a union, so each message keeps its own fields. */
type WithoutCallId<T> = T extends unknown ? Omit<T, 'callId'> : never;

class WorkerEngine implements Engine {
  info!: ModelInfo;
  status: EngineStatus = 'starting';
  private worker!: Worker;
  private readonly streams = new Map<string, (event: GenerateEvent) => void>();
  private readonly calls = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextCall = 1;
  private closed = false;
  /** What a replacement thread must restore: the kinds hooked in and the pinned deltas. */
  private readonly kinds = new Set<string>();
  private readonly pins = new Set<string>();
  private readonly lifecycleListeners: ((event: EngineLifecycleEvent) => void)[] = [];

  constructor(private readonly options: EngineOptions) {}

  async start(): Promise<void> {
    await this.spawn();
    this.status = 'ready';
  }

  /** A new worker thread; resolves when its model is loaded, rejects if it fails to start. */
  private spawn(): Promise<void> {
    const worker = new Worker(threadEntry(import.meta.url, 'worker'), { workerData: this.options });
    this.worker = worker;
    let ready = false;
    let reason = '';
    return new Promise((resolve, reject) => {
      worker.on('message', (message: FromWorker) => {
        if (message.type === 'ready') {
          ready = true;
          this.info = message.info;
          resolve();
        } else if (message.type === 'fatal') {
          reason = message.message;
          if (!ready) reject(new Error(`engine failed to start: ${message.message}`));
          // The engine loop died but the thread lives on, serving nothing: end it, then restart.
          else void worker.terminate();
        } else this.dispatch(message);
      });
      worker.on('error', (err) => {
        reason = err.message;
        if (!ready) reject(err);
      });
      worker.on('exit', (code) => {
        if (!ready) reject(new Error(`engine worker exited with code ${code}${reason ? `: ${reason}` : ''}`));
        if (this.worker !== worker) return;
        if (this.closed) return this.failAll('internal_error', 'the engine stopped');
        if (this.status === 'ready') return this.crashed(reason || `the engine thread exited with code ${code}`);
        // A replacement that died while being restored: its pending calls fail, and restart() tries again.
        this.failAll('engine_restarting', 'the engine is restarting');
      });
    });
  }

  /** The thread died while serving: everything in flight fails now (503, retry), and a new thread starts. */
  private crashed(reason: string): void {
    this.status = 'restarting';
    this.failAll('engine_restarting', `the engine stopped unexpectedly (${reason}) and is restarting; the request did not complete; retry shortly`);
    this.emit({ phase: 'crashed', reason });
    void this.restart();
  }

  private async restart(): Promise<void> {
    const started = performance.now();
    for (let attempt = 1; !this.closed; attempt++) {
      try {
        await this.spawn();
        if (this.kinds.size) await this.send({ type: 'enable_kinds', kinds: [...this.kinds] });
        // A pin that no longer loads (its delta deleted meanwhile) is dropped, not fatal.
        for (const name of this.pins) await this.send({ type: 'pin_delta', name }).catch(() => this.pins.delete(name));
        if (this.closed) return;
        this.status = 'ready';
        this.emit({ phase: 'restarted', ms: performance.now() - started, attempts: attempt });
        return;
      } catch (err) {
        if (attempt >= MAX_RESTART_ATTEMPTS) {
          this.status = 'failed';
          this.emit({ phase: 'failed', reason: (err as Error).message, attempts: attempt });
          return;
        }
        await this.worker.terminate();
        await new Promise((resolve) => setTimeout(resolve, Math.min(250 * 2 ** attempt, 5000)));
      }
    }
  }

  onLifecycle(listener: (event: EngineLifecycleEvent) => void): void {
    this.lifecycleListeners.push(listener);
  }

  private emit(event: EngineLifecycleEvent): void {
    for (const listener of this.lifecycleListeners) listener(event);
  }

  /** Why a request cannot reach the engine now, or undefined when it can. */
  private unavailable(): EngineError | undefined {
    if (this.status === 'ready') return undefined;
    if (this.status === 'failed') return new EngineError('internal_error', `the engine stopped and could not be restarted after ${MAX_RESTART_ATTEMPTS} attempts`);
    return new EngineError('engine_restarting', 'the engine is restarting after a crash; retry shortly');
  }

  private readonly loadListeners: ((load: { name: string; tier: 'host' | 'disk' | 'store'; ms: number }) => void)[] = [];

  onDeltaLoad(listener: (load: { name: string; tier: 'host' | 'disk' | 'store'; ms: number }) => void): void {
    this.loadListeners.push(listener);
  }

  private dispatch(message: FromWorker): void {
    if (message.type === 'delta_load') for (const listener of this.loadListeners) listener({ name: message.name, tier: message.tier, ms: message.ms });
    else if (message.type === 'event') this.streams.get(message.event.id)?.(message.event);
    else if (message.type === 'reply') {
      const call = this.calls.get(message.callId);
      this.calls.delete(message.callId);
      if (!call) return;
      if (message.ok) call.resolve(message.value);
      else call.reject(new EngineError(engineErrorCode(message.code), message.message, message.detail));
    }
  }

  private failAll(code: EngineErrorCode, reason: string): void {
    for (const [id, push] of this.streams) push({ type: 'error', id, code, message: reason });
    for (const call of this.calls.values()) call.reject(new EngineError(code, reason));
    this.calls.clear();
  }

  private post(message: ToWorker): void {
    this.worker.postMessage(message);
  }

  private call<T>(message: WithoutCallId<Extract<ToWorker, { callId: number }>>): Promise<T> {
    const refused = this.unavailable();
    return refused ? Promise.reject(refused) : this.send(message);
  }

  /** A call to the current thread, ready or not (restart() restores a new thread before it is ready). */
  private send<T>(message: WithoutCallId<Extract<ToWorker, { callId: number }>>): Promise<T> {
    const callId = this.nextCall++;
    return new Promise<T>((resolve, reject) => {
      this.calls.set(callId, { resolve: resolve as (v: unknown) => void, reject });
      this.post({ ...message, callId } as ToWorker);
    });
  }

  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncIterable<GenerateEvent> {
    const refused = this.unavailable();
    if (refused) throw refused;
    const queue: GenerateEvent[] = [];
    let notify: (() => void) | null = null;
    this.streams.set(request.id, (event) => {
      queue.push(event);
      notify?.();
    });
    const onAbort = () => this.post({ type: 'cancel', id: request.id });
    signal?.addEventListener('abort', onAbort, { once: true });
    this.post({ type: 'generate', request });
    try {
      for (;;) {
        while (!queue.length) await new Promise<void>((resolve) => (notify = resolve));
        const event = queue.shift()!;
        if (event.type === 'error') throw new EngineError(engineErrorCode(event.code), event.message, event.detail);
        yield event;
        if (event.type === 'done') return;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.streams.delete(request.id);
      // A consumer that stops early (client gone) frees the row at the next step.
      if (!queue.some((e) => e.type === 'done')) this.post({ type: 'cancel', id: request.id });
    }
  }

  registerPeft(name: string, files: { config: Uint8Array; weights: Uint8Array }, options: { dryRun?: boolean; sha256?: string } = {}): Promise<DeltaSummary> {
    const config = new TextDecoder().decode(files.config);
    return this.call({ type: 'register_peft', name, config, weights: files.weights, dryRun: options.dryRun ?? false, ...(options.sha256 ? { sha256: options.sha256 } : {}) });
  }

  unregisterDelta(name: string, sha256?: string): Promise<void> {
    return this.call({ type: 'unregister_delta', name, ...(sha256 ? { sha256 } : {}) });
  }

  trainBegin(spec: TrainBeginSpec): Promise<void> {
    return this.call({ type: 'train_begin', spec });
  }

  trainStep(jobId: string, batches: MicroBatch[], hyper: AdamWHyperparameters): Promise<TrainStepResult> {
    return this.call({ type: 'train_step', jobId, batches, hyper });
  }

  trainState(jobId: string): Promise<TrainerState> {
    return this.call({ type: 'train_state', jobId });
  }

  trainEvaluate(jobId: string, batches: MicroBatch[]): Promise<number> {
    return this.call({ type: 'train_evaluate', jobId, batches });
  }

  trainEnd(jobId: string): Promise<TrainerState> {
    return this.call({ type: 'train_end', jobId });
  }

  stats(): Promise<EngineStats> {
    return this.call({ type: 'stats' });
  }

  async enableKinds(kinds: string[]): Promise<void> {
    await this.call({ type: 'enable_kinds', kinds });
    for (const kind of kinds) this.kinds.add(kind);
  }

  prefetchDelta(name: string): Promise<DeltaResidency> {
    return this.call({ type: 'prefetch_delta', name });
  }

  async pinDelta(name: string): Promise<DeltaResidency> {
    const residency = await this.call<DeltaResidency>({ type: 'pin_delta', name });
    this.pins.add(name);
    return residency;
  }

  async unpinDelta(name: string): Promise<DeltaResidency> {
    this.pins.delete(name);
    return this.call({ type: 'unpin_delta', name });
  }

  injectCrash(): void {
    this.post({ type: 'crash' });
  }

  async close(deadline = Infinity): Promise<void> {
    this.closed = true;
    const exited = new Promise((resolve) => (this.worker.threadId < 0 ? resolve(undefined) : this.worker.once('exit', resolve)));
    this.post({ type: 'shutdown' });
    // The loop ends after its current step; past the deadline (shutdown grace), the thread is ended mid-step.
    const wait = deadline - Date.now();
    const timer = Number.isFinite(wait) ? setTimeout(() => void this.worker.terminate(), Math.max(0, wait)) : undefined;
    await exited;
    clearTimeout(timer);
  }
}
