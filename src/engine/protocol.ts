import type { Device, RuntimeOptions } from './model-runtime.js';
import type { AdamWHyperparameters, MicroBatch } from './trainer.js';
import type { TrainBeginSpec } from './training-runner.js';
import type { GenerateEvent, GenerateRequest } from './types.js';

/**
 * Everything the worker needs to start: plain data, since it crosses a thread boundary. The
 * runtime's fields are declared once, in RuntimeOptions; the worker hands them on with
 * runtimeOptions() (engine/options.ts), the rest go to the scheduler, the loader and the trainer.
 * `initialKinds` defaults to LoRA here (others are hooked in when first needed).
 */
export interface EngineOptions
  extends Pick<RuntimeOptions, 'modelDir' | 'cacheDir' | 'device' | 'maxRows' | 'maxContext' | 'deltaSlots' | 'maxRank' | 'deltaKinds' | 'initialKinds' | 'threads'>,
    Required<Pick<RuntimeOptions, 'maxVirtualTokens' | 'maxBottleneck'>> {
  /** Prompt tokens prefilled per scheduler step. */
  prefillChunk: number;
  /** Requests waiting for a row before the engine answers queue_full. */
  maxQueue: number;
  /** The delta store the engine loads cold deltas from: a directory, or s3://bucket/prefix. */
  store: string;
  /** Deadline of each request to the store (S3), in ms. */
  storeTimeoutMs?: number;
  /** Bound of the host-memory LRU of parsed deltas, in bytes. */
  hostCacheBytes: number;
  /** Local disk cache of verified delta files (used for object stores only). */
  diskCacheDir: string;
  /** Bound of the disk cache's entries, in bytes (least recently used removed first). */
  diskCacheMaxBytes: number;
  /** Largest share of device time training takes while requests are being served (0..1). */
  trainingShare: number;
}

/** What the main thread learns about the loaded model. */
export interface ModelInfo {
  family: string;
  vocabSize: number;
  maxContext: number;
  /** KV-cache rows (the largest decode batch) and resident delta slots. */
  maxRows: number;
  deltaSlots: number;
  eosTokenIds: number[];
  bosTokenId?: number;
  device: Device;
  /** Milliseconds spent opening the checkpoint, building or reusing the graph, and creating sessions. */
  loadMs: number;
}

/** What validating a delta tells the server (see ParsedDelta). */
export interface DeltaSummary {
  name: string;
  kind: string;
  summary: Record<string, number | string | boolean>;
  virtualTokens: number;
  /** What validation accepted but ignored (tensors PEFT would ignore too). */
  warnings: string[];
}

/** What prefetch, pin and unpin report. */
export interface DeltaResidency {
  name: string;
  /** In the host-memory tier. */
  host: boolean;
  /** Its delta kind, once known (after its first load). */
  kind: string | null;
  /** The slot it occupies, or null. */
  slot: number | null;
  pinned: boolean;
}

export type ToWorker =
  | { type: 'generate'; request: GenerateRequest }
  | { type: 'cancel'; id: string }
  /** Validates a PEFT adapter against the backbone and (unless dryRun) registers it under `name`. */
  | { type: 'register_peft'; callId: number; name: string; config: string; weights: Uint8Array; dryRun: boolean; sha256?: string }
  | { type: 'unregister_delta'; callId: number; name: string; sha256?: string }
  | { type: 'stats'; callId: number }
  /** Loads a delta into host memory, and into a free or least recently used unpinned slot if there is one. */
  | { type: 'prefetch_delta'; callId: number; name: string }
  /** Keeps a delta resident in a slot until unpinned; at most deltaSlots - 1 pins. */
  | { type: 'pin_delta'; callId: number; name: string }
  | { type: 'unpin_delta'; callId: number; name: string }
  /** Hooks delta kinds into the graph (a new session, switched to between passes); replies once their slots exist. */
  | { type: 'enable_kinds'; callId: number; kinds: string[] }
  /** Creates the trainer for a job (one at a time). */
  | { type: 'train_begin'; callId: number; spec: TrainBeginSpec }
  /** Runs one optimiser step over micro-batches, between inference steps; replies when done. */
  | { type: 'train_step'; callId: number; jobId: string; batches: MicroBatch[]; hyper: AdamWHyperparameters }
  /** Mean loss of held-out micro-batches under the current parameters. */
  | { type: 'train_evaluate'; callId: number; jobId: string; batches: MicroBatch[] }
  /** The trainer's parameters and AdamW moments (for a checkpoint). */
  | { type: 'train_state'; callId: number; jobId: string }
  /** Releases the trainer and replies with its final state. */
  | { type: 'train_end'; callId: number; jobId: string }
  | { type: 'shutdown' }
  /** Throws from the engine thread so the restart path can be tested; ignored unless NODE_ENV=test. */
  | { type: 'crash' };

export type FromWorker =
  | { type: 'ready'; info: ModelInfo }
  | { type: 'fatal'; message: string }
  | { type: 'event'; event: GenerateEvent }
  /** A delta finished loading into host memory (telemetry). */
  | { type: 'delta_load'; name: string; tier: 'host' | 'disk' | 'store'; ms: number }
  | { type: 'reply'; callId: number; ok: true; value: unknown }
  | { type: 'reply'; callId: number; ok: false; code: string; message: string; detail?: string };
