import { parentPort, workerData } from 'node:worker_threads';
import { DeltaValidationError } from '../deltas/errors.js';
import { parsePeftLora } from '../deltas/peft-lora.js';
import { openDeltaStore } from '../deltas/store/index.js';
import { openCheckpoint } from '../model/checkpoint.js';
import { loraModules } from '../model/lower-inference.js';
import { DiskDeltaCache, fetchDeltaFiles, type FetchTier } from './delta-cache.js';
import type { DeltaLoaderOptions, LoaderReply, LoaderRequest } from './delta-loader.js';
import { toSlotLayout } from './lora-slots.js';

/** The loader thread: fetch and verify (load), validate against the backbone, convert to f32, lay out for slots, transfer back. */
const options = workerData as DeltaLoaderOptions;
const { arch } = openCheckpoint(options.modelDir);
const shapes = loraModules(arch).map((p) => ({ modulePath: p.modulePath, inFeatures: p.inFeatures, outFeatures: p.outFeatures }));
const store = openDeltaStore(options.store);
const disk = options.diskCacheDir ? new DiskDeltaCache(options.diskCacheDir) : undefined;
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
    const delta = parsePeftLora(request.name, config, weights, arch, options.maxRank);
    const modules = [...toSlotLayout(shapes, delta.modules, options.maxRank)];
    const transfer = [...new Set(modules.flatMap(([, m]) => [m.a.buffer as ArrayBuffer, m.b.buffer as ArrayBuffer]))];
    return { reply: { id: request.id, ok: true, name: delta.name, maxRank: delta.maxRank, modules, warnings: delta.warnings ?? [], tier }, transfer };
  } catch (err) {
    const problems = err instanceof DeltaValidationError ? err.problems : undefined;
    return { reply: { id: request.id, ok: false, name: request.name, code: (err as { code?: string }).code ?? 'internal_error', problems, message: (err as Error).message }, transfer: [] };
  }
}
