import type { Device } from './model-runtime.js';
import type { GenerateEvent, GenerateRequest } from './types.js';

/** Everything the worker needs to start: plain data, since it crosses a thread boundary. */
export interface EngineOptions {
  modelDir: string;
  cacheDir: string;
  device: Device;
  maxRows: number;
  maxContext: number;
  deltaSlots: number;
  maxRank: number;
  prefillChunk: number;
  maxQueue: number;
  threads?: number;
}

/** What the main thread learns about the loaded model. */
export interface ModelInfo {
  family: string;
  vocabSize: number;
  maxContext: number;
  eosTokenIds: number[];
  bosTokenId?: number;
  device: Device;
  /** Milliseconds spent opening the checkpoint, building or reusing the graph, and creating sessions. */
  loadMs: number;
}

export interface DeltaSummary {
  name: string;
  rank: number;
  modules: number;
}

export type ToWorker =
  | { type: 'generate'; request: GenerateRequest }
  | { type: 'cancel'; id: string }
  /** Validates a PEFT adapter against the backbone and (unless dryRun) registers it under `name`. */
  | { type: 'register_peft'; callId: number; name: string; config: string; weights: Uint8Array; dryRun: boolean }
  | { type: 'unregister_delta'; callId: number; name: string }
  | { type: 'stats'; callId: number }
  | { type: 'shutdown' };

export type FromWorker =
  | { type: 'ready'; info: ModelInfo }
  | { type: 'fatal'; message: string }
  | { type: 'event'; event: GenerateEvent }
  | { type: 'reply'; callId: number; ok: true; value: unknown }
  | { type: 'reply'; callId: number; ok: false; code: string; message: string };
