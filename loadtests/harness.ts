/**
 * npm run loadtest [-- --clients 32 --deltas 16 --requests 64 --sequential 16 --max-tokens 32 --out FILE]
 *
 * Multi-tenant load against a deltaserve on this machine. By default it starts its own server
 * (the SmolLM2-135M-shaped bench checkpoint, N random rank-16 all-linear PEFT adapters written to
 * the cache), or it targets `--url` (loopback only). Two scenarios over the same planned requests
 * (each picks a delta by Zipf(s) and sends a ~32-token token-id prompt, greedy, streamed):
 *   concurrency: C clients, each looping over the shared request list until it is used up;
 *   sequential:  the first K of the same requests, one at a time (throughput extrapolated).
 * Prints a table and writes a JSON summary. Every loop is bounded by the request count and by
 * --time-limit (seconds), after which in-flight requests are aborted and the run reports them.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigSchema } from '../src/config.js';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { writeRandomPeftAdapter } from '../bench/peft-adapter.js';
import { ensureSyntheticCheckpoint, SMOLLM2_135M_CONFIG } from '../bench/synthetic.js';
import { assertLoopbackUrl, percentiles, planRequests, runCompletion, type PlannedRequest, type RequestResult } from './lib.js';

const USAGE = `usage: node --import tsx loadtests/harness.ts [options]
  --url URL             target a running server (loopback only); default: start one here
  --clients N           concurrent clients (32)
  --deltas N            deltas to spread requests over (16)
  --requests N          requests in the concurrency scenario (64)
  --sequential N        how many of the same requests run one at a time (16; 0 skips the scenario)
  --max-tokens N        max_tokens per request (32)
  --prompt-tokens N     prompt length in token ids (32)
  --zipf S              Zipf exponent of delta popularity (1.1)
  --seed N              workload seed (1)
  --no-stream           non-streamed requests (TTFT only from the server's x-deltaserve-ttft-ms header)
  --no-warmup           skip the warm-up request per delta
  --time-limit S        wall-clock bound for the whole run in seconds (1200)
  --request-timeout S   per-request bound in seconds (600)
  --out FILE            JSON summary (bench-results/loadtest.json)
  own server only:  --cache-dir DIR  --threads N  --max-rows N (32)  --delta-slots N (16)  --max-context N (512)
  --url only:       --models a,b,c (delta names; default: the first N deltas of /v1/models)  --vocab N (256)  --api-key KEY
  --min-ratio X         exit 1 when concurrent/sequential throughput is below X`;

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    clients: { type: 'string', default: '32' },
    deltas: { type: 'string', default: '16' },
    requests: { type: 'string', default: '64' },
    sequential: { type: 'string', default: '16' },
    'max-tokens': { type: 'string', default: '32' },
    'prompt-tokens': { type: 'string', default: '32' },
    zipf: { type: 'string', default: '1.1' },
    seed: { type: 'string', default: '1' },
    'no-stream': { type: 'boolean', default: false },
    'no-warmup': { type: 'boolean', default: false },
    'time-limit': { type: 'string', default: '1200' },
    'request-timeout': { type: 'string', default: '600' },
    out: { type: 'string', default: 'bench-results/loadtest.json' },
    'cache-dir': { type: 'string' },
    threads: { type: 'string' },
    'max-rows': { type: 'string', default: '32' },
    'delta-slots': { type: 'string', default: '16' },
    'max-context': { type: 'string', default: '512' },
    models: { type: 'string' },
    vocab: { type: 'string', default: '256' },
    'api-key': { type: 'string' },
    'min-ratio': { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}

function int(name: keyof typeof values, min: number): number {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < min) {
    console.error(`--${name}: expected an integer >= ${min}, got '${values[name]}'\n${USAGE}`);
    process.exit(2);
  }
  return n;
}
const clients = int('clients', 1);
const deltaCount = int('deltas', 1);
const requestCount = int('requests', 1);
const sequentialCount = Math.min(int('sequential', 0), requestCount);
const maxTokens = int('max-tokens', 1);
const promptTokens = int('prompt-tokens', 1);
const seed = int('seed', 0);
const timeLimitS = int('time-limit', 1);
const requestTimeoutS = int('request-timeout', 1);
const zipfS = Number(values.zipf);
if (!(zipfS >= 0)) {
  console.error(`--zipf: expected a number >= 0, got '${values.zipf}'`);
  process.exit(2);
}
const stream = !values['no-stream'];

// One deadline for everything: scenarios stop taking requests and abort in-flight ones at
// --time-limit; a hard exit follows shortly after in case something (startup) hangs.
const runStarted = performance.now();
const deadline = new AbortController();
setTimeout(() => deadline.abort(new Error(`--time-limit ${timeLimitS}s reached`)), timeLimitS * 1000).unref();
setTimeout(() => {
  console.error(`loadtest: still running ${timeLimitS + 60}s after start; exiting`);
  process.exit(3);
}, (timeLimitS + 60) * 1000).unref();

let server: RunningServer | undefined;
let baseUrl: string;
let models: string[];
let vocab: number;
let modelLabel: string;
let deviceLabel: string;
let serverInfo: Record<string, unknown>;
const authHeaders: Record<string, string> = values['api-key'] ? { authorization: `Bearer ${values['api-key']}` } : {};

try {
  if (values.url) {
    baseUrl = assertLoopbackUrl(values.url);
    const listed = (await (await fetch(`${baseUrl}/v1/models`, { headers: authHeaders, signal: deadline.signal })).json()) as { data: { id: string; parent: string | null }[] };
    const base = listed.data.find((m) => m.parent === null)?.id ?? 'unknown';
    const available = listed.data.filter((m) => m.parent !== null).map((m) => m.id).sort();
    models = values.models ? values.models.split(',').map((s) => s.trim()).filter(Boolean) : available.slice(0, deltaCount);
    if (models.length === 0) {
      console.error(`loadtest: ${baseUrl} lists no deltas; pass --models or register deltas on the server`);
      process.exit(2);
    }
    vocab = int('vocab', 2);
    modelLabel = base;
    deviceLabel = `unknown (external server at ${baseUrl})`;
    serverInfo = { url: baseUrl, started_by_harness: false };
  } else {
    const cacheDir = values['cache-dir'] ?? ConfigSchema.parse({}).cacheDir;
    const t0 = performance.now();
    const modelDir = ensureSyntheticCheckpoint(path.join(cacheDir, 'bench', 'smollm2-135m-shape'), SMOLLM2_135M_CONFIG);
    models = Array.from({ length: deltaCount }, (_, i) => `lt-${String(i).padStart(2, '0')}`);
    const adapterDirs = models.map((name, i) => writeRandomPeftAdapter(path.join(cacheDir, 'loadtest', 'adapters', `${name}-r16-seed${1000 + i}`), SMOLLM2_135M_CONFIG, { rank: 16, alpha: 32, seed: 1000 + i }));
    const prepareMs = performance.now() - t0;
    const config = ConfigSchema.parse({
      model: modelDir,
      modelName: 'smollm2-135m-shape',
      port: 0,
      host: '127.0.0.1',
      cacheDir,
      dataDir: freshDataDir(cacheDir),
      maxRows: int('max-rows', 1),
      deltaSlots: int('delta-slots', 1),
      maxContext: int('max-context', 2),
      maxRank: 16,
      threads: values.threads,
      delta: models.map((name, i) => `${name}=${adapterDirs[i]}`),
      // The harness prints its own table; the server's per-request JSON lines would drown it.
      logLevel: 'warn',
    });
    const t1 = performance.now();
    server = await startServer(config);
    const engine = await Promise.race([server.ready, new Promise<never>((_, reject) => deadline.signal.addEventListener('abort', () => reject(deadline.signal.reason), { once: true }))]);
    baseUrl = server.url;
    vocab = engine.info.vocabSize;
    modelLabel = 'SmolLM2-135M-shaped Llama (random weights): hidden 576, 30 layers, 9 heads, 3 KV heads, vocab 49152, tied';
    deviceLabel = engine.info.device;
    serverInfo = {
      url: baseUrl,
      started_by_harness: true,
      prepare_ms: Math.round(prepareMs),
      ready_ms: Math.round(performance.now() - t1),
      max_rows: config.maxRows,
      delta_slots: config.deltaSlots,
      max_context: config.maxContext,
      threads: config.threads ?? `all (${os.cpus().length})`,
      deltas: `${deltaCount} random PEFT LoRA adapters, rank 16, lora_alpha 32, all 7 projections, F32`,
    };
    console.error(`loadtest: server ready at ${baseUrl} in ${(Number(serverInfo.ready_ms) / 1000).toFixed(1)} s (${deltaCount} deltas)`);
  }
} catch (err) {
  console.error(`loadtest: setup failed: ${(err as Error).message}`);
  await server?.close().catch(() => undefined);
  process.exit(1);
}

const planned = planRequests({ count: requestCount, models, zipfS, promptTokens, vocab, seed });
const deltaHistogram: Record<string, number> = {};
for (const r of planned) deltaHistogram[r.model] = (deltaHistogram[r.model] ?? 0) + 1;

const requestSignal = () => AbortSignal.any([deadline.signal, AbortSignal.timeout(requestTimeoutS * 1000)]);
const send = (r: PlannedRequest, tokens = maxTokens, streamed = stream) => runCompletion(baseUrl, r, { maxTokens: tokens, stream: streamed, signal: requestSignal(), headers: authHeaders });

// Warm-up (not measured): one short request per delta, so both scenarios find every delta
// resident and the first measured requests do not pay for loading adapters or lazy init.
let warmupErrors = 0;
if (!values['no-warmup']) {
  const t = performance.now();
  for (const model of models) {
    if (deadline.signal.aborted) break;
    const res = await send({ index: -1, model, prompt: planned[0]!.prompt }, 2, false);
    if (!res.ok) {
      warmupErrors++;
      console.error(`loadtest: warm-up request for ${model} failed: ${res.error}`);
    }
  }
  console.error(`loadtest: warm-up ${models.length} requests in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}

interface Scenario {
  name: string;
  clients: number;
  requests: number;
  errors: number;
  not_run: number;
  output_tokens: number;
  duration_s: number;
  output_tokens_per_s: number;
  latency_ms: { p50: number; p95: number; p99: number };
  ttft_ms: { p50: number; p95: number; p99: number };
  server_ttft_ms?: { count: number; p50: number; p95: number; p99: number };
  error_samples?: string[];
  extrapolation?: { measured_requests: number; of_requests: number; estimated_duration_s: number; note: string };
}

/** `workers` clients pull from the shared list until it is used up or the deadline passes. */
async function runScenario(name: string, requests: PlannedRequest[], workers: number): Promise<{ scenario: Scenario; results: RequestResult[] }> {
  const results: RequestResult[] = [];
  let next = 0;
  let lastReport = performance.now();
  const started = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(workers, requests.length) }, async () => {
      for (;;) {
        if (deadline.signal.aborted) return;
        const i = next++;
        if (i >= requests.length) return;
        results.push(await send(requests[i]!));
        if (performance.now() - lastReport > 10_000) {
          lastReport = performance.now();
          console.error(`loadtest: ${name}: ${results.length}/${requests.length} done, ${results.filter((r) => !r.ok).length} errors, ${((lastReport - started) / 1000).toFixed(0)} s`);
        }
      }
    }),
  );
  const durationS = (performance.now() - started) / 1000;
  const outputTokens = results.reduce((s, r) => s + (r.ok ? r.outputTokens : 0), 0);
  const ok = results.filter((r) => r.ok);
  const serverTtft = results.filter((r) => r.serverTtftMs !== undefined).map((r) => r.serverTtftMs!);
  const failures = results.filter((r) => !r.ok);
  const scenario: Scenario = {
    name,
    clients: Math.min(workers, requests.length),
    requests: results.length,
    errors: failures.length,
    not_run: requests.length - results.length,
    output_tokens: outputTokens,
    duration_s: round(durationS, 3),
    output_tokens_per_s: round(outputTokens / durationS, 2),
    latency_ms: roundAll(percentiles(ok.map((r) => r.latencyMs))),
    ttft_ms: roundAll(percentiles(ok.filter((r) => r.ttftMs !== undefined).map((r) => r.ttftMs!))),
    ...(serverTtft.length ? { server_ttft_ms: { count: serverTtft.length, ...roundAll(percentiles(serverTtft)) } } : {}),
    ...(failures.length ? { error_samples: [...new Set(failures.map((r) => r.error ?? `http ${r.status}`))].slice(0, 5) } : {}),
  };
  return { scenario, results };
}

const scenarios: Scenario[] = [];
const concurrent = await runScenario('concurrency', planned, clients);
scenarios.push(concurrent.scenario);
let sequential: Scenario | undefined;
if (sequentialCount > 0 && !deadline.signal.aborted) {
  sequential = (await runScenario('sequential', planned.slice(0, sequentialCount), 1)).scenario;
  if (sequentialCount < requestCount && sequential.requests > 0) {
    const perRequestS = sequential.duration_s / sequential.requests;
    sequential.extrapolation = {
      measured_requests: sequential.requests,
      of_requests: requestCount,
      estimated_duration_s: round(perRequestS * requestCount, 1),
      note: `only the first ${sequential.requests} of the ${requestCount} requests ran one at a time; the sequential throughput is their output tokens/s, assumed to hold for all ${requestCount}`,
    };
  }
  scenarios.push(sequential);
}

const ratio = sequential && sequential.output_tokens_per_s > 0 ? round(concurrent.scenario.output_tokens_per_s / sequential.output_tokens_per_s, 2) : null;
const cpus = os.cpus();
const summary = {
  model: modelLabel,
  device: deviceLabel,
  cpus: `${cpus.length} x ${cpus[0]?.model ?? 'unknown'}`,
  node: process.version,
  date: new Date().toISOString(),
  server: serverInfo,
  workload: {
    deltas: models.length,
    delta_popularity: `Zipf(s=${zipfS}) over ${models.length} deltas (${models[0]} most popular)`,
    delta_histogram: deltaHistogram,
    distinct_deltas: Object.keys(deltaHistogram).length,
    prompt_tokens: promptTokens,
    max_tokens: maxTokens,
    temperature: 0,
    stream,
    seed,
    warmup: values['no-warmup'] ? 'none' : `one non-streamed 2-token request per delta before measuring (${warmupErrors} errors)`,
    ttft: stream ? 'client-side: request sent to the first SSE data chunk' : 'not measured client-side (non-streamed); see server_ttft_ms',
    errors: 'non-2xx, a stream without data: [DONE], a transport error, or an abort at --request-timeout / --time-limit',
  },
  scenarios,
  ratios: { concurrent_vs_sequential_throughput: ratio },
  target: { concurrent_vs_sequential_throughput: '>= 4', errors: 0, met: ratio !== null && ratio >= 4 && scenarios.every((s) => s.errors === 0 && s.not_run === 0) },
  wall_s: round((performance.now() - runStarted) / 1000, 1),
};

printTable(summary.scenarios);
console.log(`\nconcurrent vs sequential output-token throughput: ${ratio === null ? 'n/a' : `${ratio.toFixed(2)}x`} (target >= 4x)`);
if (sequential?.extrapolation) console.log(`note: ${sequential.extrapolation.note}`);
fs.mkdirSync(path.dirname(path.resolve(values.out)), { recursive: true });
fs.writeFileSync(values.out, `${JSON.stringify(summary, null, 2)}\n`);
console.log(`wrote ${values.out}`);

await server?.close().catch((err: Error) => console.error(`loadtest: server close: ${err.message}`));
const failed = scenarios.some((s) => s.errors > 0 || s.not_run > 0);
const belowRatio = values['min-ratio'] !== undefined && (ratio === null || ratio < Number(values['min-ratio']));
process.exit(failed || belowRatio ? 1 : 0);

function printTable(rows: Scenario[]): void {
  const fmt = (p: { p50: number; p95: number; p99: number }) => [p.p50, p.p95, p.p99].map((v) => (typeof v !== 'number' || Number.isNaN(v) ? '-' : v.toFixed(0))).join('/');
  const header = ['scenario', 'clients', 'requests', 'errors', 'out tokens', 'duration s', 'tokens/s', 'latency ms p50/p95/p99', 'TTFT ms p50/p95/p99', 'server TTFT p50/p95/p99'];
  const lines = rows.map((s) => [s.name, String(s.clients), String(s.requests), String(s.errors + s.not_run), String(s.output_tokens), s.duration_s.toFixed(1), s.output_tokens_per_s.toFixed(1), fmt(s.latency_ms), fmt(s.ttft_ms), s.server_ttft_ms ? fmt(s.server_ttft_ms) : '-']);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  console.log(`\n${summary.model}\ndevice ${summary.device}, ${summary.cpus}, node ${process.version}\n`);
  console.log(`| ${header.map((h, i) => h.padEnd(widths[i]!)).join(' | ')} |`);
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const l of lines) console.log(`| ${l.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`);
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function roundAll<T extends Record<string, number>>(o: T): T {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Number.isNaN(v) ? null : round(v, 1)])) as T;
}

/** A fresh, empty delta store per run (the harness registers its adapters anew each time). */
function freshDataDir(cacheDir: string): string {
  const dir = path.join(cacheDir, 'loadtest', 'data');
  fs.rmSync(dir, { recursive: true, force: true });
  return dir;
}
