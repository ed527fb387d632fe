import v8 from 'node:v8';
import { parentPort, workerData } from 'node:worker_threads';
import { TieredDeltaSource } from './delta-cache.js';
import { DeltaLoaderThread } from './delta-loader.js';
import { deltaLimits, ModelRuntime } from './model-runtime.js';
import { runtimeOptions, schedulerOptions } from './options.js';
import type { DeltaResidency, DeltaSummary, EngineOptions, FromWorker, ToWorker } from './protocol.js';
import { Scheduler } from './scheduler.js';
import { TrainingRunner } from './training-runner.js';
import { EngineError, engineErrorCode } from './types.js';

/**
 * The engine thread: ORT's run() blocks its caller, so the model, the scheduler and every
 * session live here and the HTTP thread only exchanges messages with it.
 */
const port = parentPort!;
const send = (message: FromWorker) => port.postMessage(message);
const options = workerData as EngineOptions;

async function main(): Promise<void> {
  const started = performance.now();
  const runtime = await ModelRuntime.create(runtimeOptions(options));
  const { arch } = runtime;
  // The disk tier only pays for stores that are not local files already.
  const diskCache = options.store.startsWith('s3://') ? { dir: options.diskCacheDir, maxBytes: options.diskCacheMaxBytes } : undefined;
  // Deltas are fetched, verified, validated and laid out for slots on a thread of their own, and
  // host-cached in slot layout, so making one resident is a copy.
  const loader = new DeltaLoaderThread({ modelDir: options.modelDir, limits: deltaLimits(options), store: options.store, diskCache, storeTimeoutMs: options.storeTimeoutMs });
  const deltas = new TieredDeltaSource((name) => loader.load(name), {
    hostCacheBytes: options.hostCacheBytes,
    diskCache,
    holdLimit: Math.max(options.maxRows, options.deltaSlots),
  });
  let wake: (() => void) | null = null;
  const scheduler = new Scheduler(runtime, deltas, (event) => send({ type: 'event', event }), {
    ...schedulerOptions(options),
    wake: () => wake?.(),
    onLoad: (name, load) => send({ type: 'delta_load', name, ...load }),
    enableKind: (kind) => runtime.enableKinds([kind]),
  });
  const training = new TrainingRunner(runtime.checkpoint, { cacheDir: options.cacheDir, device: options.device, threads: options.threads, share: options.trainingShare });
  let running = true;

  const reply = (callId: number, value: unknown) => send({ type: 'reply', callId, ok: true, value });
  const fail = (callId: number, err: Error & { code?: string; detail?: string }) => send({ type: 'reply', callId, ok: false, code: err.code ?? 'internal_error', message: err.message, ...(err.detail ? { detail: err.detail } : {}) });
  const residency = (name: string): DeltaResidency => {
    const at = scheduler.residency.residentSlot(name);
    return { name, host: deltas.has(name), kind: at?.kind ?? scheduler.residency.shape(name)?.kind ?? null, slot: at?.slot ?? null, pinned: scheduler.residency.pinned.includes(name) };
  };
  /** Loads a delta into host memory through the scheduler (one load however many callers), throwing its failure; hooks its kind in. */
  const ensureLoaded = async (name: string): Promise<void> => {
    if (!deltas.has(name)) {
      const failure = await scheduler.requestLoad(name);
      if (failure) throw new EngineError(engineErrorCode(failure.code), failure.message, failure.detail);
      if (!deltas.has(name)) throw new EngineError('internal_error', `delta '${name}' does not fit the host cache of ${options.hostCacheBytes} bytes`);
    }
    const kind = scheduler.residency.shape(name)?.kind;
    if (kind) await runtime.enableKinds([kind]);
  };
  const respond = (callId: number, work: () => Promise<unknown>) => {
    work().then((value) => reply(callId, value), (err: Error) => fail(callId, err)).finally(() => wake?.());
  };

  port.on('message', (message: ToWorker) => {
    try {
      handle(message);
    } catch (err) {
      if (message.type === 'generate') {
        const code = err instanceof EngineError ? err.code : 'internal_error';
        send({ type: 'event', event: { type: 'error', id: message.request.id, code, message: (err as Error).message } });
      } else if ('callId' in message) {
        send({ type: 'reply', callId: message.callId, ok: false, code: (err as { code?: string }).code ?? 'internal_error', message: (err as Error).message });
      }
    }
    wake?.();
  });

  function handle(message: ToWorker): void {
    switch (message.type) {
      case 'generate':
        scheduler.submit(message.request);
        return send({ type: 'event', event: { type: 'queued', id: message.request.id } });
      case 'cancel':
        return scheduler.cancel(message.id);
      case 'register_peft':
        return respond(message.callId, async () => {
          const delta = await loader.parse(message.name, { config: new TextEncoder().encode(message.config), weights: message.weights }, message.dryRun ? undefined : message.sha256);
          if (!message.dryRun) {
            // Warm after upload: the new version is in host memory, and its kind is being hooked in.
            deltas.put(message.name, delta);
            scheduler.forget(message.name);
            runtime.enableKinds([delta.kind]).catch(() => undefined);
          }
          const summary: DeltaSummary = { name: delta.name, kind: delta.kind, summary: delta.summary, virtualTokens: delta.virtualTokens, warnings: delta.warnings };
          return summary;
        });
      case 'unregister_delta':
        scheduler.forget(message.name);
        return respond(message.callId, async () => {
          await deltas.forget(message.name, message.sha256);
          return null;
        });
      case 'stats':
        return send({ type: 'reply', callId: message.callId, ok: true, value: { ...scheduler.stats, ...deltas.stats, servedKinds: [...runtime.stacks.keys()], ...threadMemory() } });
      case 'prefetch_delta':
        return respond(message.callId, async () => {
          await ensureLoaded(message.name);
          scheduler.residency.makeResident(message.name);
          return residency(message.name);
        });
      case 'pin_delta': {
        const { name } = message;
        return respond(message.callId, async () => {
          await ensureLoaded(name);
          if (!scheduler.residency.pin(name)) throw new EngineError('slots_busy', `every slot of this delta's kind is in use by running requests; retry pinning '${name}' shortly`);
          return residency(name);
        });
      }
      case 'enable_kinds':
        return respond(message.callId, () => runtime.enableKinds(message.kinds).then(() => null));
      case 'unpin_delta':
        scheduler.residency.unpin(message.name);
        return reply(message.callId, residency(message.name));
      case 'train_begin':
        return respond(message.callId, () => training.begin(message.spec));
      case 'train_step':
        return respond(message.callId, () => training.step(message.jobId, message.batches, message.hyper));
      case 'train_evaluate':
        return respond(message.callId, () => training.evaluate(message.jobId, message.batches));
      case 'train_state':
        return reply(message.callId, training.state(message.jobId));
      case 'train_end':
        return respond(message.callId, () => training.end(message.jobId));
      case 'shutdown':
        running = false;
        return;
      case 'crash':
        // An uncaught exception on this thread, as a bug in a step would throw: the worker dies.
        if (process.env.NODE_ENV === 'test') setImmediate(() => {
          throw new Error('engine crash injected for a test (NODE_ENV=test)');
        });
        return;
    }
  }

  send({
    type: 'ready',
    info: { family: arch.family, vocabSize: arch.vocabSize, maxContext: runtime.options.maxContext, maxRows: options.maxRows, deltaSlots: options.deltaSlots, eosTokenIds: arch.eosTokenIds, bosTokenId: arch.bosTokenId, device: options.device, loadMs: performance.now() - started },
  });
  while (running) {
    const serving = !scheduler.idle;
    if (serving) {
      const started = performance.now();
      await scheduler.step();
      training.served(performance.now() - started);
    } else training.servingIdle();
    // Serving keeps priority: a training micro-batch runs when nothing is served, or within its share.
    // Idle otherwise: fault in the next delta slot's pages (one per turn), then wait for work.
    if (training.mayRun(serving)) await training.runMicroBatch();
    else if (!serving && !scheduler.residency.prefaultNext()) {
      // While loads are in flight, look again now and then: a waiting request's deadline still counts.
      await new Promise<void>((resolve) => {
        wake = resolve;
        if (scheduler.loads) setTimeout(resolve, 100);
      });
      wake = null;
      continue;
    }
    // Let queued messages (new requests, cancellations, training steps) in between steps.
    await new Promise((resolve) => setImmediate(resolve));
  }
  await loader.close();
  await runtime.release();
  port.close();
}

main().catch((err: Error) => send({ type: 'fatal', message: err.message }));

/**
 * This thread's own V8 heap, and the memory its JavaScript objects hold outside it (typed arrays'
 * buffers, ONNX Runtime's output tensors): the HTTP thread's figures do not include them, and the
 * process's RSS cannot tell them from native allocations.
 */
function threadMemory(): { engineHeapBytes: number; engineExternalBytes: number } {
  const heap = v8.getHeapStatistics();
  return { engineHeapBytes: heap.used_heap_size, engineExternalBytes: heap.external_memory };
}
