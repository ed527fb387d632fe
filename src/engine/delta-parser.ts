import { Worker } from 'node:worker_threads';
import { DeltaValidationError } from '../deltas/errors.js';
import type { LoraDelta, LoraModule } from '../deltas/peft-lora.js';
import type { ModuleShape } from './lora-slots.js';

/** What the parser thread needs to validate against the backbone and lay deltas out for slots. */
export interface DeltaParserOptions {
  modelDir: string;
  maxRank: number;
}

export type ParseRequest = { id: number; name: string; config: string; weights: Uint8Array };
export type ParseReply =
  | { id: number; ok: true; name: string; maxRank: number; modules: [string, LoraModule][] }
  | { id: number; ok: false; name: string; code: string; problems?: string[]; message: string };

/**
 * Validates, converts and lays out deltas on a thread of its own: parsing 20 MB of weights takes
 * a few hundred milliseconds, which on the engine thread would stall every running stream.
 * Results come back with their buffers transferred, not copied.
 *
 * @example const delta = await parser.parse('acme/sql@3', files);
 */
export class DeltaParserThread {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (d: LoraDelta) => void; reject: (e: Error) => void }>();
  private nextId = 1;

  constructor(options: DeltaParserOptions) {
    this.worker = new Worker(new URL('./delta-parser-entry.mjs', import.meta.url), { workerData: options });
    this.worker.unref();
    this.worker.on('message', (reply: ParseReply) => this.settle(reply));
    this.worker.on('error', (err) => this.failAll(err));
  }

  parse(name: string, files: { config: Uint8Array; weights: Uint8Array }): Promise<LoraDelta> {
    const id = this.nextId++;
    const request: ParseRequest = { id, name, config: new TextDecoder().decode(files.config), weights: files.weights };
    // A buffer the weights own whole moves to the parser thread instead of being copied (20 MB);
    // the caller does not touch the files after handing them over.
    const { buffer, byteOffset, byteLength } = files.weights;
    const transfer = byteOffset === 0 && byteLength === buffer.byteLength && buffer instanceof ArrayBuffer ? [buffer] : [];
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage(request, transfer);
    });
  }

  private settle(reply: ParseReply): void {
    const call = this.pending.get(reply.id);
    this.pending.delete(reply.id);
    if (!call) return;
    if (reply.ok) call.resolve({ kind: 'lora', name: reply.name, maxRank: reply.maxRank, modules: new Map(reply.modules) });
    else if (reply.code === 'invalid_delta') call.reject(new DeltaValidationError(reply.name, reply.problems ?? [reply.message]));
    else call.reject(Object.assign(new Error(reply.message), { code: reply.code }));
  }

  private failAll(err: Error): void {
    for (const call of this.pending.values()) call.reject(err);
    this.pending.clear();
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

export type { ModuleShape };
