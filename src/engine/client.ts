import { Worker } from 'node:worker_threads';
import type { DeltaCacheStats } from './delta-cache.js';
import type { AdamWHyperparameters, MicroBatch, TrainerState } from './trainer.js';
import type { TrainBeginSpec, TrainStepResult } from './training-runner.js';
import type { DeltaResidency, DeltaSummary, EngineOptions, FromWorker, ModelInfo, ToWorker } from './protocol.js';
import { EngineError, type EngineErrorCode, type GenerateEvent, type GenerateRequest } from './types.js';
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
}

/** The engine as the HTTP side sees it. */
export interface Engine {
  readonly info: ModelInfo;
  /** Streams a generation's events; ends after its 'done' (or throws on 'error'). */
  generate(request: GenerateRequest, signal?: AbortSignal): AsyncIterable<GenerateEvent>;
  /** Validates a PEFT adapter's two files against the backbone; registers it under `name` unless dryRun. */
  registerPeft(name: string, files: { config: Uint8Array; weights: Uint8Array }, options?: { dryRun?: boolean }): Promise<DeltaSummary>;
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
  close(): Promise<void>;
}

/**
 * Starts the engine worker and resolves once the model is loaded.
 *
 * @example const engine = await startEngine({ modelDir, cacheDir, device: 'cpu', ... });
 */
export async function startEngine(options: EngineOptions): Promise<Engine> {
  const worker = new Worker(threadEntry(import.meta.url, 'worker'), { workerData: options });
  const client = new WorkerEngine(worker);
  await client.ready;
  return client;
}

/** Omit distributed over a union, so each message keeps its own fields. */
type WithoutCallId<T> = T extends unknown ? Omit<T, 'callId'> : never;

class WorkerEngine implements Engine {
  info!: ModelInfo;
  readonly ready: Promise<void>;
  private readonly streams = new Map<string, (event: GenerateEvent) => void>();
  private readonly calls = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextCall = 1;
  private closed = false;

  constructor(private readonly worker: Worker) {
    this.ready = new Promise((resolve, reject) => {
      worker.on('message', (message: FromWorker) => {
        if (message.type === 'ready') {
          this.info = message.info;
          resolve();
        } else if (message.type === 'fatal') {
          reject(new Error(`engine failed to start: ${message.message}`));
        } else this.dispatch(message);
      });
      worker.on('error', reject);
      worker.on('exit', (code) => {
        if (!this.closed) reject(new Error(`engine worker exited with code ${code}`));
        this.failAll('the engine stopped');
      });
    });
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
      else call.reject(new EngineError(message.code as EngineErrorCode, message.message));
    }
  }

  private failAll(reason: string): void {
    for (const [id, push] of this.streams) push({ type: 'error', id, code: 'internal_error', message: reason });
    for (const call of this.calls.values()) call.reject(new Error(reason));
    this.calls.clear();
  }

  private post(message: ToWorker): void {
    this.worker.postMessage(message);
  }

  private call<T>(message: WithoutCallId<Extract<ToWorker, { callId: number }>>): Promise<T> {
    const callId = this.nextCall++;
    return new Promise<T>((resolve, reject) => {
      this.calls.set(callId, { resolve: resolve as (v: unknown) => void, reject });
      this.post({ ...message, callId } as ToWorker);
    });
  }

  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncIterable<GenerateEvent> {
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
        if (event.type === 'error') throw new EngineError(event.code as EngineErrorCode, event.message);
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

  registerPeft(name: string, files: { config: Uint8Array; weights: Uint8Array }, options: { dryRun?: boolean } = {}): Promise<DeltaSummary> {
    const config = new TextDecoder().decode(files.config);
    return this.call({ type: 'register_peft', name, config, weights: files.weights, dryRun: options.dryRun ?? false });
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

  enableKinds(kinds: string[]): Promise<void> {
    return this.call({ type: 'enable_kinds', kinds });
  }

  prefetchDelta(name: string): Promise<DeltaResidency> {
    return this.call({ type: 'prefetch_delta', name });
  }

  pinDelta(name: string): Promise<DeltaResidency> {
    return this.call({ type: 'pin_delta', name });
  }

  unpinDelta(name: string): Promise<DeltaResidency> {
    return this.call({ type: 'unpin_delta', name });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.post({ type: 'shutdown' });
    await new Promise((resolve) => this.worker.once('exit', resolve));
  }
}
