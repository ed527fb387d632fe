import type { RuntimeOptions } from './model-runtime.js';
import type { EngineOptions } from './protocol.js';
import type { SchedulerOptions } from './scheduler.js';

/**
 * The runtime's options from the engine's: only the fields ModelRuntime reads, so nothing meant
 * for the scheduler, the store or the trainer reaches it. Every hooked-in kind costs every pass,
 * so the engine starts with LoRA only unless told otherwise.
 *
 * @example const runtime = await ModelRuntime.create(runtimeOptions(workerData as EngineOptions));
 */
export function runtimeOptions(options: EngineOptions): RuntimeOptions {
  return {
    modelDir: options.modelDir,
    cacheDir: options.cacheDir,
    device: options.device,
    maxRows: options.maxRows,
    maxContext: options.maxContext,
    deltaSlots: options.deltaSlots,
    maxRank: options.maxRank,
    maxVirtualTokens: options.maxVirtualTokens,
    maxBottleneck: options.maxBottleneck,
    ...(options.deltaKinds ? { deltaKinds: options.deltaKinds } : {}),
    initialKinds: options.initialKinds ?? ['lora'],
    ...(options.threads !== undefined ? { threads: options.threads } : {}),
  };
}

/**
 * The scheduler's limits from the engine's options (its callbacks are added by the worker).
 *
 * @example new Scheduler(runtime, deltas, emit, { ...schedulerOptions(options), wake });
 */
export function schedulerOptions(options: EngineOptions): Pick<SchedulerOptions, 'prefillChunk' | 'maxQueue'> {
  return { prefillChunk: options.prefillChunk, maxQueue: options.maxQueue };
}
