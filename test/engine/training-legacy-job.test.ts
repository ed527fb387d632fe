/**
 * A fine-tuning job stored before trainable kinds — `spec.lora` in job.json, a checkpoint whose
 * parameter names drop `.weight` — still loads and resumes to the weights an uninterrupted job of
 * today ends at. The job runner drives the engine's real TrainingRunner in this process.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import type { JobContext, JobProgress } from '../../src/training/job-runner.js';
import { runJob } from '../../src/training/job-runner.js';
import { JobStore } from '../../src/training/job-store.js';
import { FilesystemObjects } from '../../src/deltas/store/objects-fs.js';
import { jsonBytes } from '../../src/deltas/store/objects.js';
import type { FineTuneSpec } from '../../src/training/job-types.js';
import { TrainingFileStore } from '../../src/training/file-store.js';
import { TrainingRunner } from '../../src/engine/training-runner.js';
import { ChatTemplate } from '../../src/model/chat-template.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { encodeSafetensors, parseSafetensors } from '../../src/model/safetensors.js';
import { TextTokenizer } from '../../src/model/tokenizer.js';
import { FIXTURE, tempDir } from '../helpers.js';

const BASE = path.join(FIXTURE, 'base');
const JSONL = [
  { input_ids: [17, 250, 9, 42, 100, 300, 301, 302], labels: [-100, -100, -100, -100, -100, 300, 301, 302] },
  { input_ids: [400, 6, 77, 120, 33, 210, 211], labels: [-100, -100, -100, -100, -100, 210, 211] },
].map((r) => JSON.stringify(r)).join('\n');

/** The job runner's context over an in-process TrainingRunner (the engine thread's half). */
async function context(published: Map<string, Uint8Array>): Promise<{ ctx: JobContext; fileId: string }> {
  const ckpt = openCheckpoint(BASE);
  const runner = new TrainingRunner(ckpt, { cacheDir: tempDir(), device: 'cpu', share: 1 });
  const files = await TrainingFileStore.open(new FilesystemObjects(tempDir()), 0);
  const file = await files.put({ filename: 'task.jsonl', tenant: 'default', rows: 2 }, new TextEncoder().encode(JSONL));
  const engine: JobContext['engine'] = {
    trainBegin: (spec) => runner.begin(structuredClone(spec)),
    trainStep: async (id, batches, hyper) => {
      const done = runner.step(id, batches, hyper);
      while (runner.hasWork) await runner.runMicroBatch();
      return done;
    },
    trainEvaluate: (id, batches) => runner.evaluate(id, batches),
    trainState: async (id) => structuredClone(runner.state(id)),
    trainEnd: (id) => runner.end(id),
  };
  const tokenizer = TextTokenizer.fromDirectory(BASE);
  const ctx: JobContext = {
    engine,
    arch: ckpt.arch,
    limits: { maxRank: 8, maxVirtualTokens: 8, maxBottleneck: 8 },
    dataset: { tokenizer, chatTemplate: ChatTemplate.fromDirectory(BASE)!, vocabSize: ckpt.arch.vocabSize },
    files,
    readDelta: () => Promise.reject(new Error('no stored deltas here')),
    publish: async (_tenant, name, delta) => (published.set(name, delta.weights), name),
    padId: 0,
    maxLength: 64,
    microBatchRows: 2,
    checkpointEvery: 2,
  };
  return { ctx, fileId: file.id };
}

const progress = (interruptAfter = Infinity): JobProgress => {
  let steps = 0;
  return { started() {}, stepped: () => void steps++, checkpointed() {}, validated() {}, cancelled: () => false, interrupted: () => steps >= interruptAfter };
};

test('a job stored before trainable kinds (spec.lora, checkpoint names without .weight) resumes to the same weights', async () => {
  const published = new Map<string, Uint8Array>();
  const { ctx, fileId } = await context(published);
  const spec: FineTuneSpec = {
    model: 'tiny-llama',
    trainingFile: fileId,
    tenant: 'default',
    name: 'straight',
    method: { type: 'lora', lora: { r: 4, alpha: 8, target_modules: ['q_proj', 'v_proj', 'down_proj'], use_rslora: false } },
    hyper: { maxSteps: 5, batchSize: 2, learningRate: 1e-2, weightDecay: 0, maxGradNorm: 1, warmupSteps: 0, lrScheduler: 'constant' },
    seed: 7,
  };
  const store = new JobStore(new FilesystemObjects(tempDir()));
  assert.equal(await runJob('straight', spec, store.checkpoints('straight'), ctx, progress()), 'straight');

  // The same job, interrupted after 3 steps, then stored as an older server stored it.
  const objects = new FilesystemObjects(tempDir());
  const legacyStore = new JobStore(objects);
  const legacySpec = { ...spec, name: 'resumed', method: undefined, lora: { r: 4, alpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'], useRslora: false } };
  const job = { id: 'ftjob-legacy', object: 'fine_tuning.job', created_at: 1, status: 'running', method: { type: 'lora', lora: spec.method['lora'] } };
  await objects.put(`jobs/${job.id}.json`, jsonBytes({ job, spec: legacySpec }));
  assert.equal(await runJob(job.id, { ...spec, name: 'resumed' }, legacyStore.checkpoints(job.id), ctx, progress(3)), null);
  await writeLegacyCheckpoint(objects, `job-checkpoints/${job.id}/trainer-state.safetensors`);

  const record = (await legacyStore.load(job.id))!;
  assert.deepEqual(record.spec.method, { type: 'lora', lora: spec.method['lora'] });
  assert.equal('lora' in record.spec, false);
  assert.equal(await runJob(job.id, record.spec, legacyStore.checkpoints(job.id), ctx, progress()), 'resumed');
  assert.ok(Buffer.from(published.get('resumed')!).equals(Buffer.from(published.get('straight')!)), 'the resumed legacy job ends at the uninterrupted job\'s weights');
});

/** Rewrites a checkpoint as servers before trainable kinds wrote it: `param.<module>.lora_A`, no `names` metadata. */
async function writeLegacyCheckpoint(objects: FilesystemObjects, key: string): Promise<void> {
  const { header, tensor } = parseSafetensors((await objects.get(key))!, key);
  assert.equal(header.metadata?.['names'], 'peft');
  const tensors: Parameters<typeof encodeSafetensors>[0] = {};
  for (const key of header.tensors.keys()) {
    assert.match(key, /\.weight$/);
    const data = tensor(key);
    tensors[key.replace(/\.weight$/, '')] = { dtype: 'F32', shape: [data.length], data };
  }
  await objects.put(key, encodeSafetensors(tensors, { step: header.metadata!['step']! }));
}
