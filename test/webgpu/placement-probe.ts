// Creates the fixture's training-step session on webgpu with verbose logging; the parent test
// reads ORT's node-placement report from stderr.
import ort from 'onnxruntime-node';
import { prepareTrainingGraph } from '../../src/engine/graph-cache.js';
import { tempDir } from '../helpers.js';
import { fixtureCheckpoint, fixtureInitialState } from '../training-fixture.js';

const ckpt = fixtureCheckpoint();
const { modules } = fixtureInitialState(ckpt);
const model = prepareTrainingGraph(ckpt, tempDir(), { rows: 2, seqLen: 16 }, { rank: 8, alpha: 16, useRslora: false, modules });
const session = await ort.InferenceSession.create(model, { executionProviders: ['webgpu'], logSeverityLevel: 0, logVerbosityLevel: 0 });
await session.release();
