import { Worker } from 'node:worker_threads';
import { DeltaValidationError } from '../deltas/errors.js';
import type { DeltaLimits, ParsedDelta } from '../deltas/kind.js';
import type { DeltaFiles } from '../deltas/store/types.js';
import type { DiskCacheOptions, FetchTier } from './delta-cache.js';
import { Turns } from './turns.js';
import { threadEntry } from './thread-entry.js';

/** What the loader thread needs: the backbone to validate against, the store, and the disk tier. */
export interface DeltaLoaderOptions {
  modelDir: string;
  limits: DeltaLimits;
  /** The delta store's location (opened again on the loader thread). */
  store: string;
  /** Verified files are cached there by SHA-256; absent for a filesystem store (it is local already). */
  diskCache?: DiskCacheOptions;
  /** Deadline of each store request (see S3DeltaStoreOptions.timeoutMs). */
  storeTimeoutMs?: number;
}

/** `sha256` on a parse: the stored version's digest, so its files also go into the disk tier. */
export type LoaderRequest = { id: number; kind: 'parse'; name: string; config: string; weights: Uint8Array; sha256?: string } | { id: number; kind: 'load'; name: string };
/** A failure's `message` is for clients; `detail` (the raw cause: endpoints, paths) is for logs. */
export type LoaderReply =
  | { id: number; ok: true; delta: Omit<ParsedDelta, 'tensors'> & { tensors: [string, Float32Array][] }; tier?: FetchTier }
  | { id: number; ok: false; name: string; code: string; problems?: string[]; message: string; detail?: string };

/**
 * Fetches, verifies, validates, converts and lays out deltas on a thread of its own. On the
 * engine thread, whose event loop only turns between forward passes, a 20 MB download would
 * trickle in a socket buffer at a time, and its digest and parse (tens of milliseconds) would
 * stall every running stream. Results come back with their buffers transferred, not copied.
 *
 * @example const { delta, tier } = await loader.load('acme/sql@3');
 */
export class DeltaLoaderThread {
  private worker: Worker;
  private readonly pending = new Map<number, { resolve: (reply: LoaderReply & { ok: true }) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  /**
   * Loads run at most two at a time (one downloading while one parses), first come first served.
   * Run all at once, concurrent loads share the CPU and the link and all finish late; one after
   * another, the first finishes as soon as it alone would, which halves the average wait.
   */
  private readonly loadTurns = new Turns(2);

  private closed = false;

  constructor(private readonly options: DeltaLoaderOptions) {
    this.worker = this.spawn();
  }

  /** The thread, replaced if it ever exits unasked (its pending calls fail; later calls go to the new one). */
  private spawn(): Worker {
    const worker = new Worker(threadEntry(import.meta.url, 'delta-loader-worker'), { workerData: this.options });
    worker.unref();
    worker.on('message', (reply: LoaderReply) => this.settle(reply));
    worker.on('error', (err) => this.failAll(err));
    worker.on('exit', (code) => {
      if (this.closed) return;
      this.failAll(new Error(`the delta loader thread exited (code ${code})`));
      this.worker = this.spawn();
    });
    return worker;
  }

  /**
   * Validates and lays out files already in hand (an upload or a registered directory); with the
   * stored version's `sha256`, they are also kept in the disk tier (object stores only).
   */
  async parse(name: string, files: DeltaFiles, sha256?: string): Promise<ParsedDelta> {
    // A buffer the weights own whole moves to the loader thread instead of being copied (20 MB);
    // the caller does not touch the files after handing them over.
    const { buffer, byteOffset, byteLength } = files.weights;
    const transfer = byteOffset === 0 && byteLength === buffer.byteLength && buffer instanceof ArrayBuffer ? [buffer] : [];
    const reply = await this.call({ kind: 'parse', name, config: new TextDecoder().decode(files.config), weights: files.weights, ...(sha256 ? { sha256 } : {}) }, transfer);
    return toDelta(reply);
  }

  /** Reads `owner/name@version` from the disk tier or the store, verifies its digest, and parses it. */
  async load(name: string): Promise<{ delta: ParsedDelta; tier: FetchTier }> {
    const reply = await this.loadTurns.run(() => this.call({ kind: 'load', name }));
    return { delta: toDelta(reply), tier: reply.tier ?? 'store' };
  }

  private call(request: Omit<Extract<LoaderRequest, { kind: 'parse' }>, 'id'> | Omit<Extract<LoaderRequest, { kind: 'load' }>, 'id'>, transfer: ArrayBuffer[] = []): Promise<LoaderReply & { ok: true }> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...request, id }, transfer);
    });
  }

  private settle(reply: LoaderReply): void {
    const call = this.pending.get(reply.id);
    this.pending.delete(reply.id);
    if (!call) return;
    if (reply.ok) call.resolve(reply);
    else if (reply.code === 'invalid_delta') call.reject(new DeltaValidationError(reply.name, reply.problems ?? [reply.message]));
    else call.reject(Object.assign(new Error(reply.message), { code: reply.code, detail: reply.detail }));
  }

  private failAll(err: Error): void {
    for (const call of this.pending.values()) call.reject(err);
    this.pending.clear();
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.worker.terminate();
  }
}

function toDelta(reply: LoaderReply & { ok: true }): ParsedDelta {
  return { ...reply.delta, tensors: new Map(reply.delta.tensors) };
}
