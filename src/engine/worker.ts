import { parentPort, workerData } from 'node:worker_threads';
import { parsePeftLora, type LoraDelta } from '../deltas/peft-lora.js';
import { ModelRuntime } from './model-runtime.js';
import type { DeltaSummary, EngineOptions, FromWorker, ToWorker } from './protocol.js';
import { Scheduler } from './scheduler.js';
import { EngineError } from './types.js';

/**
 * The engine thread: ORT's run() blocks its caller, so the model, the scheduler and every
 * session live here and the HTTP thread only exchanges messages with it.
 */
const port = parentPort!;
const send = (message: FromWorker) => port.postMessage(message);
const options = workerData as EngineOptions;

async function main(): Promise<void> {
  const started = performance.now();
  const runtime = await ModelRuntime.create(options);
  const deltas = new Map<string, LoraDelta>();
  const scheduler = new Scheduler(runtime, { lookup: (name) => deltas.get(name) }, (event) => send({ type: 'event', event }), options);
  const { arch } = runtime;
  let wake: (() => void) | null = null;
  let running = true;

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
      case 'register_peft': {
        const delta = parsePeftLora(message.name, message.config, message.weights, arch, options.maxRank);
        if (!message.dryRun) {
          deltas.set(message.name, delta);
          scheduler.slotTable.evict(message.name);
        }
        const summary: DeltaSummary = { name: delta.name, rank: delta.maxRank, modules: delta.modules.size };
        return send({ type: 'reply', callId: message.callId, ok: true, value: summary });
      }
      case 'unregister_delta':
        deltas.delete(message.name);
        scheduler.slotTable.evict(message.name);
        return send({ type: 'reply', callId: message.callId, ok: true, value: null });
      case 'stats':
        return send({ type: 'reply', callId: message.callId, ok: true, value: scheduler.stats });
      case 'shutdown':
        running = false;
        return;
    }
  }

  send({
    type: 'ready',
    info: { family: arch.family, vocabSize: arch.vocabSize, maxContext: runtime.options.maxContext, eosTokenIds: arch.eosTokenIds, bosTokenId: arch.bosTokenId, device: options.device, loadMs: performance.now() - started },
  });
  while (running) {
    if (scheduler.idle) {
      await new Promise<void>((resolve) => (wake = resolve));
      wake = null;
      continue;
    }
    await scheduler.step();
    // Let queued messages (new requests, cancellations) in between steps.
    await new Promise((resolve) => setImmediate(resolve));
  }
  await runtime.release();
  port.close();
}

main().catch((err: Error) => send({ type: 'fatal', message: err.message }));
