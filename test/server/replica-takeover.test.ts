/**
 * A replica killed (SIGKILL) in the middle of a fine-tuning job: another replica takes the job
 * over once the lease expires, resumes from the last checkpoint, logs no step twice, and ends at
 * the same weights as an uninterrupted run.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import { ConfigSchema } from '../../src/config.js';
import { S3DeltaStore } from '../../src/deltas/store/s3.js';
import { PostgresClaims } from '../../src/deltas/store/claims-postgres.js';
import { JobStore } from '../../src/training/job-store.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, tempDir } from '../helpers.js';
import { postgresMissing, startPostgres, type TestPostgres } from '../postgres.js';
import { allEvents } from '../replicas.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TASK = [
  { prompt: [17, 250, 9, 42, 100], target: [300, 301, 302, 303, 304, 305] },
  { prompt: [400, 6, 77, 120, 33], target: [210, 211, 212, 213, 214, 215] },
];
const JSONL = TASK.map(({ prompt, target }) => JSON.stringify({ input_ids: [...prompt, ...target], labels: [...prompt.map(() => -100), ...target] })).join('\n');
const STEPS = 100;
const LEASE_MS = 4000;

/** The real `deltaserve` command as replica A; resolves once it says it is ready. */
function startReplica(args: string[], env: Record<string, string>): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'deltaserve.mjs'), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready in time:\n${output}`)), 60_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const url = /listening on (http:\/\/\S+)/.exec(output)?.[1];
      if (url && /ready in/.test(output)) {
        clearTimeout(timer);
        resolve({ child, url });
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code}:\n${output}`));
    });
  });
}

const missing = postgresMissing();

describe('a replica killed mid-job', { skip: missing ?? false }, () => {
  const directory = tempDir('deltaserve-s3rver-');
  const s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory });
  let pg: TestPostgres;
  let a: { child: ChildProcess; url: string } | undefined;
  let b: RunningServer | undefined;
  const cacheDir = tempDir();
  const env: Record<string, string> = {};

  before(async () => {
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    const { port } = await s3.run();
    Object.assign(env, { AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${port}`, AWS_S3_FORCE_PATH_STYLE: 'true', AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' });
    Object.assign(process.env, env);
    const client = new S3Client({ endpoint: env['AWS_ENDPOINT_URL_S3'], forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
    await client.send(new CreateBucketCommand({ Bucket: 'shared' }));
    client.destroy();
    pg = await startPostgres();
  });
  after(async () => {
    a?.child.kill('SIGKILL');
    await b?.close();
    await pg?.stop();
    await s3.close();
  });

  const call = async (url: string, method: string, route: string, body?: unknown) => {
    const init: RequestInit = { method };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) Object.assign(init, { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const res = await fetch(`${url}${route}`, init);
    return { status: res.status, json: (await res.json()) as Json };
  };
  const waitFor = async (url: string, id: string, done: (job: Json) => boolean) => {
    for (;;) {
      const { json } = await call(url, 'GET', `/admin/v1/fine_tuning/jobs/${id}`);
      if (done(json)) return json;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  const jobRequest = (fileId: string, name: string) => ({
    model: 'tiny-llama',
    training_file: fileId,
    name,
    method: { type: 'lora', lora: { r: 8, alpha: 16, target_modules: 'all-linear' } },
    hyperparameters: { max_steps: STEPS, batch_size: 2, learning_rate: 1e-2, lr_scheduler: 'constant', max_grad_norm: null },
    seed: 11,
  });

  it('B takes the job over after the lease expires, resumes from the checkpoint, and ends at the weights of an uninterrupted run', async (t) => {
    const flags = ['--model', path.join(FIXTURE, 'base'), '--model-name', 'tiny-llama', '--port', '0', '--threads', '1', '--max-context', '64', '--max-rank', '8', '--store', 's3://shared/deltas', '--control-db', pg.url, '--job-lease-ms', String(LEASE_MS), '--train-checkpoint-every', '5', '--cache-dir', cacheDir];
    a = await startReplica([...flags, '--data-dir', tempDir()], env);
    const form = new FormData();
    form.set('purpose', 'fine-tune');
    form.set('file', new Blob([JSONL]), 'task.jsonl');
    const file = (await call(a.url, 'POST', '/admin/v1/files', form)).json.id;
    // A takes the job at once (nobody else is there yet), then B starts beside it.
    const job = (await call(a.url, 'POST', '/admin/v1/fine_tuning/jobs', jobRequest(file, 'resumed'))).json;
    await waitFor(a.url, job.id, (j) => j.step >= 1);
    b = await startServer(ConfigSchema.parse({ port: 0, cacheDir, dataDir: tempDir(), store: 's3://shared/deltas', controlDb: pg.url, model: path.join(FIXTURE, 'base'), modelName: 'tiny-llama', maxContext: 64, threads: 1, maxRank: 8, jobLeaseMs: LEASE_MS, trainCheckpointEvery: 5, logLevel: 'warn' }));
    await b.ready;
    const records = new JobStore(new S3DeltaStore('s3://shared/deltas', { claims: await PostgresClaims.open(pg.url) }).records('training'));
    const holder = async () => (await records.latestLease(job.id))?.holder ?? '';
    const atKill = await waitFor(b.url, job.id, (j) => j.step >= 12 || j.status !== 'running');
    assert.equal(atKill.status, 'running', 'A must still be training when it is killed (make STEPS larger if this fails)');
    assert.match(await holder(), new RegExp(`:${a.child.pid}:`), 'a live lease is not taken: A still runs the job');

    a.child.kill('SIGKILL');
    const killedAt = performance.now();
    const done = await waitFor(b.url, job.id, (j) => j.status !== 'running' && j.status !== 'queued');
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.match(await holder(), new RegExp(`:${process.pid}:`), 'B finished it');
    t.diagnostic(`killed at step ${atKill.step}; B finished ${((performance.now() - killedAt) / 1000).toFixed(1)} s later (lease ${LEASE_MS} ms)`);

    const events = (await allEvents(b.url, job.id)).reverse();
    const steps = events.filter((e: Json) => e.type === 'metrics' && 'train_loss' in e.data).map((e: Json) => e.data.step);
    assert.deepEqual(steps, Array.from({ length: STEPS }, (_, i) => i + 1), 'every step logged once, in order');
    const resumed = events.map((e: Json) => e.message).filter((m: string) => m.startsWith('Resumed from the checkpoint'));
    assert.equal(resumed.length, 1);
    const from = Number(/step (\d+)/.exec(resumed[0])![1]);
    // A was at least at the step B saw (its record may lag behind its training, never ahead).
    assert.ok(from >= 5 && from % 5 === 0 && from < STEPS, `resumed from ${from}, killed at ${atKill.step} or later`);
    t.diagnostic(`B resumed from the checkpoint at step ${from}`);

    // The same job, uninterrupted, on B.
    const straight = (await call(b.url, 'POST', '/admin/v1/fine_tuning/jobs', jobRequest(file, 'straight'))).json;
    assert.equal((await waitFor(b.url, straight.id, (j) => j.status !== 'running' && j.status !== 'queued')).status, 'succeeded');
    const weights = async (name: string) => Buffer.from(await (await fetch(`${b!.url}/v1/deltas/${name}/files/adapter_model.safetensors`)).arrayBuffer());
    const [resumedWeights, straightWeights] = await Promise.all([weights('resumed'), weights('straight')]);
    assert.ok(resumedWeights.length > 1000);
    assert.ok(resumedWeights.equals(straightWeights), 'the job taken over ends at the same weights as an uninterrupted run');
  });
});
