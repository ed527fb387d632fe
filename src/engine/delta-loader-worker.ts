import { parentPort, workerData } from 'node:worker_threads';
import { DeltaValidationError } from '../deltas/errors.js';
import { parseDelta } from '../deltas/parse.js';
import { digestFiles } from '../deltas/store/common.js';
import { openDeltaStore } from '../deltas/store/index.js';
import { openCheckpoint } from '../model/checkpoint.js';
import { readCheckpointWeight } from '../model/weight-data.js';
import { DiskDeltaCache, fetchDeltaFiles, type FetchTier } from './delta-cache.js';
import type { DeltaLoaderOptions, LoaderReply, LoaderRequest } from './delta-loader.js';

/** The loader thread: fetch and verify (load), validate against the backbone, lay out for slots, transfer back. */
const options = workerData as DeltaLoaderOptions;
const checkpoint = openCheckpoint(options.modelDir);
const { arch } = checkpoint;
// Kinds that need the frozen weights at parse time (DoRA) read them from the checkpoint here.
const baseWeight = (name: string) => readCheckpointWeight(checkpoint, name);
const store = openDeltaStore(options.store, { s3: { timeoutMs: options.storeTimeoutMs } });
const disk = options.diskCache ? new DiskDeltaCache(options.diskCache.dir, options.diskCache.maxBytes) : undefined;
const port = parentPort!;

port.on('message', (request: LoaderRequest) => {
  void handle(request).then(({ reply, transfer }) => port.postMessage(reply, transfer));
});

async function handle(request: LoaderRequest): Promise<{ reply: LoaderReply; transfer: ArrayBuffer[] }> {
  try {
    let tier: FetchTier | undefined;
    let config: string;
    let weights: Uint8Array;
    if (request.kind === 'load') {
      const fetched = await fetchDeltaFiles(store, disk, request.name);
      tier = fetched.tier;
      config = new TextDecoder().decode(fetched.files.config);
      weights = fetched.files.weights;
    } else {
      ({ config, weights } = request);
    }
    const delta = parseDelta(request.name, { config, weights }, arch, options.limits, baseWeight);
    if (request.kind === 'parse' && request.sha256 && disk) await keepOnDisk(request.name, request.sha256, { config: new TextEncoder().encode(config), weights });
    // Tensors that are views of the weights file (F32 read in place) are copied out, so what
    // moves back is the laid-out tensors alone; the kinds put theirs in as few buffers as they can.
    const tensors = [...delta.tensors].map(([name, t]): [string, Float32Array] => [name, t.buffer === weights.buffer ? t.slice() : t]);
    const transfer = [...new Set(tensors.map(([, t]) => t.buffer as ArrayBuffer))];
    return { reply: { id: request.id, ok: true, delta: { ...delta, tensors }, tier }, transfer };
  } catch (err) {
    const problems = err instanceof DeltaValidationError ? err.problems : undefined;
    const { code, message, detail } = describeFailure(err);
    return { reply: { id: request.id, ok: false, name: request.name, code, problems, message, detail }, transfer: [] };
  }
}

/** An upload's files into the disk tier, when the bytes are the stored version's (the config went through a string). */
async function keepOnDisk(name: string, sha256: string, files: { config: Uint8Array; weights: Uint8Array }): Promise<void> {
  if (digestFiles(files) === sha256) await disk!.write(sha256, files, name);
}

/** A failure as the engine reports it: the raw cause of a store outage (StoreUnavailableError.detail) kept apart. */
function describeFailure(err: unknown): { code: string; message: string; detail?: string } {
  const e = err as Error & { code?: string; detail?: string };
  // Only the engine's own codes cross over; an errno ('EACCES') is an internal error.
  const code = typeof e.code === 'string' && /^[a-z_]+$/.test(e.code) ? e.code : 'internal_error';
  return { code, message: e.message, detail: e.detail };
}
