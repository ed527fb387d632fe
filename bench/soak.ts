/**
 * Soak: two replicas over one S3 store (s3rver in its own process; PostgreSQL claims when it is
 * installed, else one replica takes every write), driven by mixed traffic for N minutes:
 * completions and streams across the base and several deltas, streams whose clients disconnect
 * midway, reads of the delta list, uploads and deletes of deltas, one small fine-tuning job after
 * another, and once a minute a burst past --max-queue that provokes 429s on purpose (clients wait
 * out Retry-After). Every 10 s it
 * samples each replica's RSS (/proc) and V8 heap (/metrics) and prints a row; at the end the RSS
 * slope after the warm-up (least squares, MB/min), errors by status and operation, and whether
 * any rows were stuck once traffic stopped. Exits 1 on an error, a stuck row, or a slope of
 * --max-slope MB/min or more.
 *
 * Usage: npm run soak -- --minutes 10 [--warmup-minutes 2] [--clients 6] [--out soak.json] [--without-training]
 */
import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { tempDir } from '../test/helpers.js';
import { postgresMissing, startPostgres, type TestPostgres } from '../test/postgres.js';
import { BUCKET, deltaForm, killAll, S3Process, startReplica, variantWeights, type Replica } from '../test/faults/harness.js';

const { values: flags } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    'warmup-minutes': { type: 'string', default: '2' },
    clients: { type: 'string', default: '6' },
    'sample-seconds': { type: 'string', default: '10' },
    'max-slope': { type: 'string', default: '1' },
    out: { type: 'string' },
    // To tell which traffic a slope comes from.
    'without-training': { type: 'boolean', default: false },
  },
});
const number = (flag: keyof typeof flags) => {
  const value = Number(flags[flag]);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${flag} must be a positive number, got ${JSON.stringify(flags[flag])}`);
  return value;
};
const MINUTES = number('minutes');
const WARMUP_MINUTES = Math.min(number('warmup-minutes'), MINUTES / 2);
const CLIENTS = Math.round(number('clients'));
const SAMPLE_MS = number('sample-seconds') * 1000;
const MAX_SLOPE = number('max-slope');
const MAX_QUEUE = 16;
const STABLE = ['stable-0', 'stable-1', 'stable-2', 'stable-3'];
const TRAIN_JSONL = [
  { prompt: [17, 250, 9, 42, 100], target: [300, 301, 302, 303, 304, 305] },
  { prompt: [400, 6, 77, 120, 33], target: [210, 211, 212, 213, 214, 215] },
]
  .map(({ prompt, target }) => JSON.stringify({ input_ids: [...prompt, ...target], labels: [...prompt.map(() => -100), ...target] }))
  .join('\n');

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

// ---- accounting --------------------------------------------------------------------------

/** op → status (or failure name) → count; provoked 429s (during a burst on that replica) apart. */
const outcomes = new Map<string, Map<string, number>>();
let requests = 0;
let errors = 0;
let provoked = 0;
const examples: string[] = [];
const bursting = new Set<string>();

function record(op: string, url: string, status: number | string, ok: boolean, detail?: string): void {
  requests++;
  const byStatus = outcomes.get(op) ?? new Map<string, number>();
  byStatus.set(String(status), (byStatus.get(String(status)) ?? 0) + 1);
  outcomes.set(op, byStatus);
  if (ok) return;
  if (status === 429 && bursting.has(url)) provoked++;
  else {
    errors++;
    if (examples.length < 20) examples.push(`${op} ${status} ${(detail ?? '').slice(0, 300)}`);
  }
}

const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)]!;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A client told to come back later (429, 503) waits as long as Retry-After says, as a well-behaved one would. */
async function backOff(res: Response): Promise<void> {
  const seconds = Number(res.headers.get('retry-after'));
  if ((res.status === 429 || res.status === 503) && seconds > 0) await sleep(Math.min(seconds, 10) * 1000);
}

/** One JSON call, recorded under `op`; `ok` when its status is 2xx. */
async function call(op: string, url: string, method: string, route: string, body?: unknown): Promise<{ status: number; json: Json }> {
  const init: RequestInit = { method, signal: AbortSignal.timeout(120_000) };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) Object.assign(init, { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  try {
    const res = await fetch(`${url}${route}`, init);
    const text = await res.text();
    let json: Json = text;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON
    }
    record(op, url, res.status, res.ok, text);
    await backOff(res);
    return { status: res.status, json };
  } catch (err) {
    record(op, url, (err as Error).name === 'TimeoutError' ? 'timeout' : 'network', false, (err as Error).message);
    return { status: 0, json: null };
  }
}

/** A streamed completion; `disconnectAfter` events, the client goes away (that is not an error). */
async function stream(url: string, model: string, maxTokens: number, disconnectAfter?: number): Promise<void> {
  const op = disconnectAfter === undefined ? 'stream' : 'stream-disconnect';
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error('timeout')), 120_000);
  try {
    const res = await fetch(`${url}/v1/completions`, { method: 'POST', signal: controller.signal, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, prompt: [1, 2, 3, 4], max_tokens: maxTokens, temperature: 0.7, stream: true }) });
    if (!res.ok) {
      record(op, url, res.status, false, await res.text());
      return backOff(res);
    }
    let text = '';
    let events = 0;
    for await (const chunk of res.body!.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      events += chunk.split('\n\n').length - 1;
      if (disconnectAfter !== undefined && events >= disconnectAfter) {
        controller.abort();
        return record(op, url, 200, true);
      }
    }
    const complete = text.trimEnd().endsWith('data: [DONE]');
    record(op, url, complete ? 200 : 'stream_incomplete', complete, text.slice(-300));
  } catch (err) {
    if (disconnectAfter !== undefined && controller.signal.aborted && !(controller.signal.reason instanceof Error)) return record(op, url, 200, true);
    record(op, url, controller.signal.reason instanceof Error ? 'timeout' : 'network', false, (err as Error).message);
  } finally {
    clearTimeout(timer);
  }
}

// ---- traffic -----------------------------------------------------------------------------

let running = true;

async function client(replicas: Replica[]): Promise<void> {
  while (running) {
    const url = pick(replicas).url;
    const model = pick(['tiny', ...STABLE]);
    const x = Math.random();
    if (x < 0.4) await call('complete', url, 'POST', '/v1/completions', { model, prompt: [1, 2, 3, 4], max_tokens: 4 + Math.floor(Math.random() * 12), temperature: 0.7 });
    else if (x < 0.7) await stream(url, model, 8 + Math.floor(Math.random() * 24));
    else if (x < 0.85) await stream(url, model, 48, 1 + Math.floor(Math.random() * 4));
    else await call('read', url, 'GET', Math.random() < 0.5 ? '/v1/deltas' : `/v1/deltas/${pick(STABLE)}`);
  }
}

/** Uploads a delta through one replica, uses that version through the other, deletes it; again. */
async function churn(replicas: Replica[], writers: Replica[]): Promise<void> {
  for (let i = 0; running; i++) {
    const name = `churn-${i % 3}`;
    const writer = pick(writers);
    const up = await call('upload', writer.url, 'POST', '/v1/deltas', deltaForm(name, variantWeights(16 + (i % 200))));
    if (up.status === 201) await call('complete', pick(replicas).url, 'POST', '/v1/completions', { model: `${name}@${up.json.version}`, prompt: [1, 2, 3, 4], max_tokens: 4 });
    await call('delete', pick(writers).url, 'DELETE', `/v1/deltas/${name}`);
    await sleep(1000);
  }
}

/** One small fine-tuning job after another; each result is used through a replica, then deleted. */
async function trainer(replicas: Replica[], writers: Replica[]): Promise<void> {
  const form = new FormData();
  form.set('purpose', 'fine-tune');
  form.set('file', new Blob([TRAIN_JSONL]), 'task.jsonl');
  const file = (await call('train', writers[0]!.url, 'POST', '/admin/v1/files', form)).json?.id as string | undefined;
  if (!file) return;
  for (let n = 1; running; n++) {
    const url = pick(writers).url;
    const request = { model: 'tiny', training_file: file, name: `ft-${n}`, method: { type: 'lora', lora: { r: 4, alpha: 8, target_modules: 'all-linear' } }, hyperparameters: { max_steps: 10, batch_size: 2, learning_rate: 1e-2 }, seed: n };
    const job = await call('train', url, 'POST', '/admin/v1/fine_tuning/jobs', request);
    if (job.status !== 201) {
      await sleep(5000);
      continue;
    }
    let status = job.json.status as string;
    for (const started = Date.now(); ['queued', 'running'].includes(status) && Date.now() - started < 300_000; ) {
      await sleep(500);
      status = (await call('train-poll', pick(replicas).url, 'GET', `/admin/v1/fine_tuning/jobs/${job.json.id}`)).json?.status ?? status;
    }
    record('train-job', url, status, status === 'succeeded', status);
    if (status !== 'succeeded') continue;
    await call('complete', pick(replicas).url, 'POST', '/v1/completions', { model: `ft-${n}`, prompt: [1, 2, 3, 4], max_tokens: 4 });
    await call('delete', pick(writers).url, 'DELETE', `/v1/deltas/ft-${n}`);
  }
}

/** Once a minute, 3 × --max-queue requests at once on one replica: the 429s it answers are provoked. */
async function bursts(replicas: Replica[]): Promise<void> {
  for (let wait = 30_000; running; wait = 60_000) {
    for (const until = Date.now() + wait; running && Date.now() < until; ) await sleep(250);
    if (!running) return;
    const { url } = pick(replicas);
    bursting.add(url);
    await Promise.all(Array.from({ length: MAX_QUEUE * 3 }, () => call('burst', url, 'POST', '/v1/completions', { model: pick(['tiny', ...STABLE]), prompt: [1, 2, 3, 4], max_tokens: 16 })));
    bursting.delete(url);
  }
}

// ---- sampling ----------------------------------------------------------------------------

interface Sample {
  seconds: number;
  /** RSS, the HTTP thread's V8 heap, and the engine thread's heap + the memory its objects hold outside it. */
  replicas: { rssMB: number; heapMB: number | null; engineMB: number | null }[];
  requests: number;
  errors: number;
  provoked429: number;
}

function rssMB(pid: number): number {
  const kb = Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
  return kb / 1024;
}

/** The HTTP thread's V8 heap and the engine thread's memory (heap + external), from /metrics. */
async function metricsMB(url: string): Promise<{ heapMB: number | null; engineMB: number | null }> {
  const text = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(10_000) }).then((r) => r.text(), () => '');
  const read = (name: string) => {
    const value = new RegExp(`^${name}\\S*\\s+([0-9.e+]+)`, 'm').exec(text)?.[1];
    return value === undefined ? null : Number(value) / 2 ** 20;
  };
  const engineHeap = read('deltaserve_engine_memory_heap_used');
  const engineExternal = read('deltaserve_engine_memory_external');
  return { heapMB: read('v8js_memory_heap_used'), engineMB: engineHeap === null || engineExternal === null ? null : engineHeap + engineExternal };
}

/** Least-squares slope of y over x. */
function slope(points: [number, number][]): number {
  const n = points.length;
  if (n < 2) return NaN;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  const sxy = points.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0);
  const sxx = points.reduce((s, [x]) => s + (x - mx) ** 2, 0);
  return sxx === 0 ? NaN : sxy / sxx;
}

const pad = (value: string | number, width: number) => String(value).padStart(width);
const fmt = (value: number | null) => (value === null || Number.isNaN(value) ? '-' : value.toFixed(1));

// ---- main --------------------------------------------------------------------------------

let pg: TestPostgres | undefined;
const s3 = new S3Process();
process.on('SIGINT', () => {
  killAll();
  process.exit(130);
});
try {
  const loadStart = os.loadavg();
  await s3.start();
  const pgProblem = postgresMissing();
  if (!pgProblem) pg = await startPostgres();
  // Host memory holds ~13 of these deltas: its LRU reaches its bound within the warm-up, so that
  // the slope measures leaks, not a cache filling up (the default bound is 2 GiB).
  // One tenant stands for every user here: its request rate is not what is soaked (0: no limit);
  // the 429s on purpose come from --max-queue.
  const args = ['--store', `s3://${BUCKET}/soak`, '--host-cache-bytes', String(1 << 20), '--tenant-requests-per-second', '0', '--max-rank', '8', '--max-queue', String(MAX_QUEUE), '--log-level', 'warn', '--train-checkpoint-every', '5', ...(pg ? ['--control-db', pg.url] : [])];
  const replicas = await Promise.all(['a', 'b'].map(() => startReplica({ cacheDir: tempDir('deltaserve-soak-'), dataDir: tempDir('deltaserve-soak-'), args, env: { ...s3.env(), NODE_ENV: 'production' } })));
  // Without claims, creates are atomic only inside one process: one replica takes every write.
  const writers = pg ? replicas : [replicas[0]!];
  console.log(`soak: ${MINUTES} min (warm-up ${WARMUP_MINUTES} min), ${CLIENTS} clients, 2 replicas over s3rver${pg ? ' + PostgreSQL claims' : ` (${pgProblem}: every write through replica a)`}; ${os.cpus().length} CPUs, load average ${loadStart.map((l) => l.toFixed(2)).join(' ')}`);
  for (const [i, name] of STABLE.entries()) {
    const res = await call('upload', replicas[0]!.url, 'POST', '/v1/deltas', deltaForm(name, variantWeights(i + 1)));
    if (res.status !== 201) throw new Error(`could not upload ${name}: ${res.status} ${JSON.stringify(res.json)}`);
  }

  const started = Date.now();
  const samples: Sample[] = [];
  console.log(`\n${pad('time', 6)} ${pad('a RSS MB', 9)} ${pad('a heap', 7)} ${pad('a engine', 8)} ${pad('b RSS MB', 9)} ${pad('b heap', 7)} ${pad('b engine', 8)} ${pad('requests', 9)} ${pad('req/s', 6)} ${pad('errors', 7)} ${pad('429 prov.', 9)}`);
  const sample = async () => {
    const seconds = (Date.now() - started) / 1000;
    const row: Sample = { seconds, replicas: await Promise.all(replicas.map(async (r) => ({ rssMB: rssMB(r.child.pid!), ...(await metricsMB(r.url)) }))), requests, errors, provoked429: provoked };
    const rate = samples.length ? (row.requests - samples.at(-1)!.requests) / (seconds - samples.at(-1)!.seconds) : 0;
    samples.push(row);
    const [a, b] = row.replicas;
    console.log(`${pad(`${Math.floor(seconds / 60)}:${String(Math.floor(seconds % 60)).padStart(2, '0')}`, 6)} ${pad(fmt(a!.rssMB), 9)} ${pad(fmt(a!.heapMB), 7)} ${pad(fmt(a!.engineMB), 8)} ${pad(fmt(b!.rssMB), 9)} ${pad(fmt(b!.heapMB), 7)} ${pad(fmt(b!.engineMB), 8)} ${pad(row.requests, 9)} ${pad(rate.toFixed(1), 6)} ${pad(row.errors, 7)} ${pad(row.provoked429, 9)}`);
  };
  await sample();
  const traffic = [...Array.from({ length: CLIENTS }, () => client(replicas)), churn(replicas, writers), ...(flags['without-training'] ? [] : [trainer(replicas, writers)]), bursts(replicas)];
  for (let next = started + SAMPLE_MS; next <= started + MINUTES * 60_000; next += SAMPLE_MS) {
    await sleep(next - Date.now());
    await sample();
  }
  running = false;
  await Promise.all(traffic);

  // No rows stuck once traffic stopped (disconnected clients' rows were freed).
  const stuck: Record<string, number> = {};
  for (const [i, r] of replicas.entries()) {
    let left = NaN;
    for (const until = Date.now() + 15_000; Date.now() < until; await sleep(250)) {
      const text = await fetch(`${r.url}/metrics`).then((res) => res.text());
      left = ['vllm:num_requests_running', 'vllm:num_requests_waiting'].reduce((s, name) => s + Number(new RegExp(`^${name}\\S*\\s+([0-9.]+)`, 'm').exec(text)?.[1] ?? NaN), 0);
      if (left === 0) break;
    }
    stuck['ab'[i]!] = left;
  }

  const after = samples.filter((s) => s.seconds >= WARMUP_MINUTES * 60);
  const slopes = Object.fromEntries(replicas.map((_, i) => ['ab'[i]!, slope(after.map((s) => [s.seconds / 60, s.replicas[i]!.rssMB]))]));
  const slopeOf = (field: 'heapMB' | 'engineMB') => Object.fromEntries(replicas.map((_, i) => ['ab'[i]!, slope(after.filter((s) => s.replicas[i]![field] !== null).map((s) => [s.seconds / 60, s.replicas[i]![field]!]))]));
  const heapSlopes = slopeOf('heapMB');
  const engineSlopes = slopeOf('engineMB');
  const byStatus: Record<string, number> = {};
  for (const statuses of outcomes.values()) for (const [status, count] of statuses) byStatus[status] = (byStatus[status] ?? 0) + count;
  const loadEnd = os.loadavg();
  console.log(`\nRSS slope after ${WARMUP_MINUTES} min (MB/min): a ${fmt(slopes.a!)}, b ${fmt(slopes.b!)}; HTTP heap slope: a ${fmt(heapSlopes.a!)}, b ${fmt(heapSlopes.b!)}; engine thread (heap + external) slope: a ${fmt(engineSlopes.a!)}, b ${fmt(engineSlopes.b!)}`);
  console.log(`requests ${requests}; by status ${JSON.stringify(byStatus)}; errors ${errors} (429s provoked by the bursts: ${provoked})`);
  console.log(`by operation: ${JSON.stringify(Object.fromEntries([...outcomes].map(([op, m]) => [op, Object.fromEntries(m)])))}`);
  console.log(`rows left running or waiting after traffic stopped: a ${stuck.a}, b ${stuck.b}; load average at the end ${loadEnd.map((l) => l.toFixed(2)).join(' ')}`);
  for (const example of examples) console.log(`  error: ${example}`);
  const failures = [errors > 0 && `${errors} errors`, Object.values(stuck).some((n) => n !== 0) && 'stuck rows', Object.values(slopes).some((s) => !(s < MAX_SLOPE)) && `an RSS slope of ${MAX_SLOPE} MB/min or more`].filter(Boolean);
  console.log(failures.length ? `FAIL: ${failures.join(', ')}` : `PASS: no errors, no stuck rows, RSS slope under ${MAX_SLOPE} MB/min`);
  if (flags.out) {
    const report = { startedAt: new Date(started).toISOString(), minutes: MINUTES, warmupMinutes: WARMUP_MINUTES, clients: CLIENTS, postgres: Boolean(pg), cpus: os.cpus().length, loadAverage: { start: loadStart, end: loadEnd }, samples, slopesMBPerMin: { rss: slopes, heap: heapSlopes, engine: engineSlopes }, requests, byStatus, byOperation: Object.fromEntries([...outcomes].map(([op, m]) => [op, Object.fromEntries(m)])), errors, provoked429: provoked, stuckRows: stuck, examples };
    fs.writeFileSync(flags.out, `${JSON.stringify(report, null, 2)}\n`);
    console.log(`wrote ${flags.out}`);
  }
  process.exitCode = failures.length ? 1 : 0;
} finally {
  killAll();
  await pg?.stop();
  await s3.stop();
}
