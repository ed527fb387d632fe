/**
 * kill -9 during a fine-tuning job, then the same replica started again on the same data
 * directory: the job resumes from its last checkpoint once the dead process's lease expires,
 * logs every step once, and ends at the same weights as an uninterrupted run of the same job.
 * (Another replica taking the job over is test/server/replica-takeover.test.ts.)
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { FilesystemDeltaStore } from '../../src/deltas/store/index.js';
import { tempDir } from '../helpers.js';
import { allEvents } from '../replicas.js';
import { assertStoreConsistent } from './consistency.js';
import { call, killAll, startReplica, waitFor, type Json } from './harness.js';

after(killAll);

const TASK = [
  { prompt: [17, 250, 9, 42, 100], target: [300, 301, 302, 303, 304, 305] },
  { prompt: [400, 6, 77, 120, 33], target: [210, 211, 212, 213, 214, 215] },
];
const JSONL = TASK.map(({ prompt, target }) => JSON.stringify({ input_ids: [...prompt, ...target], labels: [...prompt.map(() => -100), ...target] })).join('\n');
const STEPS = 40;
const CHECKPOINT_EVERY = 5;
const LEASE_MS = 1500;

const jobRequest = (fileId: string, name: string) => ({
  model: 'tiny',
  training_file: fileId,
  name,
  method: { type: 'lora', lora: { r: 8, alpha: 16, target_modules: 'all-linear' } },
  hyperparameters: { max_steps: STEPS, batch_size: 2, learning_rate: 1e-2, lr_scheduler: 'constant', max_grad_norm: null },
  seed: 11,
});

/** The job's record, polled until `done` says so (or a minute passes). */
async function jobWhen(url: string, id: string, done: (job: Json) => boolean): Promise<Json> {
  let job: Json;
  await waitFor(async () => done((job = (await call(url, 'GET', `/admin/v1/fine_tuning/jobs/${id}`)).json)), 60_000, () => `job ${id} never got there: ${JSON.stringify(job)}`);
  return job;
}

describe('kill -9 during training', () => {
  it('a restart on the same data directory resumes the job from its checkpoint and ends at the weights of an uninterrupted run', async (t) => {
    const dataDir = tempDir();
    const options = { cacheDir: tempDir(), dataDir, args: ['--max-context', '64', '--max-rank', '8', '--job-lease-ms', String(LEASE_MS), '--train-checkpoint-every', String(CHECKPOINT_EVERY)] };
    const first = await startReplica(options);
    const form = new FormData();
    form.set('purpose', 'fine-tune');
    form.set('file', new Blob([JSONL]), 'task.jsonl');
    const file = (await call(first.url, 'POST', '/admin/v1/files', form)).json.id as string;
    const job = (await call(first.url, 'POST', '/admin/v1/fine_tuning/jobs', jobRequest(file, 'resumed'))).json;
    // Past the first checkpoint, not yet done.
    const atKill = await jobWhen(first.url, job.id, (j) => j.step > CHECKPOINT_EVERY + 1 || !['queued', 'running'].includes(j.status));
    assert.equal(atKill.status, 'running', 'the job must still run when the process is killed (raise STEPS if this fails)');
    first.child.kill('SIGKILL');
    assert.equal((await first.exited).signal, 'SIGKILL');

    const second = await startReplica(options);
    const done = await jobWhen(second.url, job.id, (j) => !['queued', 'running'].includes(j.status));
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    const events = (await allEvents(second.url, job.id)).reverse();
    const steps = events.filter((e: Json) => e.type === 'metrics' && 'train_loss' in e.data).map((e: Json) => e.data.step);
    assert.deepEqual(steps, Array.from({ length: STEPS }, (_, i) => i + 1), 'every step logged once, in order');
    const resumed = events.map((e: Json) => String(e.message)).filter((m: string) => m.startsWith('Resumed from the checkpoint'));
    assert.equal(resumed.length, 1, JSON.stringify(resumed));
    const from = Number(/step (\d+)/.exec(resumed[0]!)![1]);
    assert.ok(from >= CHECKPOINT_EVERY && from % CHECKPOINT_EVERY === 0 && from < STEPS, `resumed from step ${from}`);
    t.diagnostic(`killed at step ${atKill.step} or later; resumed from the checkpoint at step ${from}`);

    const straight = (await call(second.url, 'POST', '/admin/v1/fine_tuning/jobs', jobRequest(file, 'straight'))).json;
    assert.equal((await jobWhen(second.url, straight.id, (j) => !['queued', 'running'].includes(j.status))).status, 'succeeded');
    const weights = async (name: string) => Buffer.from(await (await fetch(`${second.url}/v1/deltas/${name}/files/adapter_model.safetensors`)).arrayBuffer());
    const [resumedWeights, straightWeights] = await Promise.all([weights('resumed'), weights('straight')]);
    assert.ok(resumedWeights.length > 1000);
    assert.ok(resumedWeights.equals(straightWeights), 'the resumed job ends at the same weights as an uninterrupted run');

    await assertStoreConsistent({ store: new FilesystemDeltaStore(path.join(dataDir, 'deltas')), replicas: [second.url], dataDirs: [dataDir], seen: new Map() });
    second.child.kill('SIGKILL');
  });
});
