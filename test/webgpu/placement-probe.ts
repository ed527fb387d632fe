// Creates a session on webgpu with verbose logging; the parent test reads ORT's node-placement
// report from stderr. `training` (default): the fixture's training step; `inference`: the
// fixture's inference graph with the KV cache on the device.
import ort from 'onnxruntime-node';
import { prepareTrainingGraph } from '../../src/engine/graph-cache.js';
import { deltaLimits, inferenceGraph } from '../../src/engine/model-runtime.js';
import { tempDir } from '../helpers.js';
import { fixtureCheckpoint, fixtureInitialState } from '../training-fixture.js';

const ckpt = fixtureCheckpoint();
let model: string;
if (process.argv[2] === 'inference') {
  model = inferenceGraph(ckpt, tempDir(), { maxCacheLength: 32, attention: 'group-query', kvCache: 'device', limits: deltaLimits({ maxRank: 8 }) });
} else {
  const { layout } = fixtureInitialState(ckpt);
  model = prepareTrainingGraph(ckpt, tempDir(), { rows: 2, seqLen: 16 }, { kind: 'lora', options: layout });
}
const session = await ort.InferenceSession.create(model, { executionProviders: ['webgpu'], logSeverityLevel: 0, logVerbosityLevel: 0 });
await session.release();
