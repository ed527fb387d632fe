import path from 'node:path';
import type { Config } from '../config.js';
import type { EngineOptions } from '../engine/protocol.js';

/** Where the engine finds what startup already resolved: the model directory and the delta store. */
export interface EngineLocations {
  /** The model directory (the embedded model is written out before the engine starts). */
  modelDir: string;
  /** The delta store: a directory, or s3://bucket/prefix. */
  store: string;
}

/**
 * The engine's options from the server's config: only the fields the engine thread reads, so the
 * API keys file, tenant limits and the rest of the config never cross into the worker.
 *
 * @example const engine = await startEngine(engineOptions(config, { modelDir, store }));
 */
export function engineOptions(config: Config, at: EngineLocations): EngineOptions {
  return {
    modelDir: at.modelDir,
    cacheDir: config.cacheDir,
    device: config.device,
    maxRows: config.maxRows,
    maxContext: config.maxContext,
    deltaSlots: config.deltaSlots,
    maxRank: config.maxRank,
    maxVirtualTokens: config.maxVirtualTokens,
    maxBottleneck: config.maxBottleneck,
    ...(config.deltaKinds ? { deltaKinds: config.deltaKinds } : {}),
    ...(config.threads !== undefined ? { threads: config.threads } : {}),
    prefillChunk: config.prefillChunk,
    maxQueue: config.maxQueue,
    store: at.store,
    storeTimeoutMs: config.storeTimeoutMs,
    hostCacheBytes: config.hostCacheBytes,
    diskCacheDir: config.diskCacheDir ?? path.join(config.cacheDir, 'deltas'),
    diskCacheMaxBytes: config.diskCacheMaxBytes,
    trainingShare: config.trainingShare,
  };
}
