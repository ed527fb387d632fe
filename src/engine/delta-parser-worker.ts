import { parentPort, workerData } from 'node:worker_threads';
import { DeltaValidationError } from '../deltas/errors.js';
import { parsePeftLora } from '../deltas/peft-lora.js';
import { openCheckpoint } from '../model/checkpoint.js';
import { loraModules } from '../model/lower-inference.js';
import type { DeltaParserOptions, ParseReply, ParseRequest } from './delta-parser.js';
import { toSlotLayout } from './lora-slots.js';

/** The parser thread: validate against the backbone, convert to f32, lay out for slots, transfer back. */
const options = workerData as DeltaParserOptions;
const { arch } = openCheckpoint(options.modelDir);
const shapes = loraModules(arch).map((p) => ({ modulePath: p.modulePath, inFeatures: p.inFeatures, outFeatures: p.outFeatures }));
const port = parentPort!;

port.on('message', (request: ParseRequest) => {
  let reply: ParseReply;
  const transfer: ArrayBuffer[] = [];
  try {
    const delta = parsePeftLora(request.name, request.config, request.weights, arch, options.maxRank);
    const modules = [...toSlotLayout(shapes, delta.modules, options.maxRank)];
    for (const [, m] of modules) transfer.push(m.a.buffer as ArrayBuffer, m.b.buffer as ArrayBuffer);
    reply = { id: request.id, ok: true, name: delta.name, maxRank: delta.maxRank, modules };
  } catch (err) {
    const problems = err instanceof DeltaValidationError ? err.problems : undefined;
    reply = { id: request.id, ok: false, name: request.name, code: (err as { code?: string }).code ?? 'internal_error', problems, message: (err as Error).message };
  }
  port.postMessage(reply, transfer);
});
