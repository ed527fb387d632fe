/**
 * npm run bench:swap [-- --deltas N] [--requests N] [--out FILE] [--threads N]
 *
 * Delta swapping through the cache tiers on a SmolLM2-135M-shaped Llama (random weights): N
 * rank-16 all-linear PEFT adapters (F32, ~19.5 MB each) stored in an S3 store served by an
 * in-process s3rver on loopback (written once, reused by later runs), 16 resident slots.
 * Reports, per request of one token:
 *   - warm: time to first token with the delta resident (the baseline);
 *   - host hit: with the delta in the host-memory tier only (TTFT minus the warm baseline: the
 *     slot write);
 *   - cold: with the delta only in S3 (TTFT, and TTFT minus the warm baseline: get + read +
 *     verify + parse + slot write);
 * and the throughput of a Zipf-popular request stream (s = 1) over all N deltas, relative to the
 * same stream when every delta it uses is resident (its deltas folded onto 16 prefetched ones):
 * once on a fresh engine (every tier cold) and once after a warm-up stream of the same length
 * from the same distribution (another seed), as a running server would be.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import { openDeltaStore } from '../src/deltas/store/index.js';
import { startEngine, type Engine } from '../src/engine/client.js';
import type { EngineOptions } from '../src/engine/protocol.js';
import { greedyRequest, type GenerateRequest } from '../src/engine/types.js';
import { mulberry32 } from '../src/model/random.js';
import { writeRandomPeftAdapter } from './peft-adapter.js';
import { ensureSyntheticCheckpoint, SMOLLM2_135M_CONFIG } from './synthetic.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const { values } = parseArgs({
  options: {
    deltas: { type: 'string', default: '1000' },
    requests: { type: 'string', default: '192' },
    'max-tokens': { type: 'string', default: '16' },
    'host-cache-bytes': { type: 'string', default: String(2 * 1024 ** 3) },
    threads: { type: 'string' },
    out: { type: 'string' },
  },
});
const N = Number(values.deltas);
const REQUESTS = Number(values.requests);
const MAX_TOKENS = Number(values['max-tokens']);
const SLOTS = 16;
const RANK = 16;
const OWNER = 'bench';
const cacheRoot = path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'deltaserve');
const modelDir = ensureSyntheticCheckpoint(path.join(cacheRoot, 'bench', 'smollm2-135m-shape'), SMOLLM2_135M_CONFIG);

// The S3 store: s3rver on loopback over a persistent directory, so the adapters are written once.
const s3Dir = path.join(cacheRoot, 'bench', 's3rver');
fs.mkdirSync(s3Dir, { recursive: true });
const s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: s3Dir });
const { port } = await s3.run();
Object.assign(process.env, { AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${port}`, AWS_S3_FORCE_PATH_STYLE: 'true', AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' });
const admin = new S3Client({ endpoint: `http://127.0.0.1:${port}`, forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
await admin.send(new CreateBucketCommand({ Bucket: 'bench' })).catch(() => undefined);
admin.destroy();
const STORE = 's3://bench/swap-r16';
const store = openDeltaStore(STORE);

const name = (i: number) => `d${i}`;
const key = (i: number) => `${OWNER}/${name(i)}@1`;
const writeStarted = performance.now();
let written = 0;
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-swap-'));
for (let i = 0; i < N; i++) {
  if (await store.get(OWNER, name(i), 1)) continue;
  const dir = writeRandomPeftAdapter(path.join(scratch, name(i)), SMOLLM2_135M_CONFIG, { rank: RANK, alpha: 2 * RANK, seed: 1000 + i });
  const files = { config: fs.readFileSync(path.join(dir, 'adapter_config.json')), weights: fs.readFileSync(path.join(dir, 'adapter_model.safetensors')) };
  await store.put({ owner: OWNER, name: name(i), public: false, kind: 'lora', summary: { rank: RANK, modules: 210 }, virtualTokens: 0 }, files);
  fs.rmSync(dir, { recursive: true, force: true });
  written++;
  if (written % 25 === 0) console.log(`wrote ${written} adapters to ${STORE}`);
}
fs.rmSync(scratch, { recursive: true, force: true });
const deltaBytes = (await store.get(OWNER, name(0), 1))!.size;
console.log(`${N} adapters in ${STORE} (${written} written now in ${((performance.now() - writeStarted) / 1000).toFixed(1)} s), ${(deltaBytes / 1e6).toFixed(1)} MB each`);

const diskDirs: string[] = [];
const freshDiskDir = () => {
  diskDirs.push(fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-swap-disk-')));
  return diskDirs.at(-1)!;
};
const engineOptions = (): EngineOptions => ({
  modelDir,
  cacheDir: cacheRoot,
  device: 'cpu',
  maxRows: SLOTS,
  maxContext: 256,
  deltaSlots: SLOTS,
  maxRank: RANK,
  maxVirtualTokens: 64,
  maxBottleneck: 64,
  prefillChunk: 256,
  maxQueue: 4096,
  threads: values.threads ? Number(values.threads) : undefined,
  store: STORE,
  trainingShare: 0.25,
    hostCacheBytes: Number(values['host-cache-bytes']),
  // A fresh disk tier per engine: "cold" means from S3.
  diskCacheDir: freshDiskDir(),
  diskCacheMaxBytes: 2 ** 34,
});

const prompt = Array.from({ length: 16 }, (_, i) => (i * 7919 + 11) % 49152);
let nextId = 0;
const req = (delta: string | null, maxTokens: number): GenerateRequest => greedyRequest(`r${nextId++}`, prompt, delta === null ? [] : [delta], maxTokens);

/** Time to the first token and the tokens generated. */
async function generate(engine: Engine, delta: string | null, maxTokens: number): Promise<{ ttft: number; tokens: number }> {
  const started = performance.now();
  let ttft = NaN;
  let tokens = 0;
  for await (const event of engine.generate(req(delta, maxTokens))) {
    if (event.type === 'token') {
      if (!tokens) ttft = performance.now() - started;
      tokens++;
    }
  }
  return { ttft, tokens };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

// 1. Latencies: warm baseline, host-memory hit, cold from S3 (5 deltas each, one at a time).
const samples = Math.min(9, Math.floor((N - 1) / 2));
let engine = await startEngine(engineOptions());
await engine.prefetchDelta(key(0));
for (let i = 0; i < 2; i++) await generate(engine, key(0), 1);
const warm: number[] = [];
for (let i = 0; i < 7; i++) warm.push((await generate(engine, key(0), 1)).ttft);
const warmMs = median(warm);
const host: number[] = [];
// register puts a delta in host memory and out of any slot: its next request writes a slot. All
// samples are registered first, and a few warm requests run before measuring, so the garbage of
// parsing them (and the GC it triggers) is not charged to the hits.
for (let i = 1; i <= samples; i++) await engine.registerPeft(key(i), await store.read((await store.get(OWNER, name(i), 1))!));
for (let i = 0; i < 3; i++) await generate(engine, key(0), 1);
for (let i = 1; i <= samples; i++) host.push((await generate(engine, key(i), 1)).ttft);
const cold: number[] = [];
for (let i = samples + 1; i <= 2 * samples; i++) cold.push((await generate(engine, key(i), 1)).ttft);
const latencyStats = await engine.stats();
await engine.close();

// 2. Throughput: a Zipf stream over all N deltas with 16 slots, vs every delta resident. The tiered
// stream runs twice: on a fresh engine (every tier cold), and after a warm-up stream drawn from the
// same distribution with another seed (the tiers hold what a running server has seen: the disk
// tier every delta it loaded, host memory the most recent ~2 GB; deltas the warm-up missed still
// come from S3).
const zipfStream = (seed: number) => {
  const random = mulberry32(seed);
  const weights = Array.from({ length: N }, (_, i) => 1 / (i + 1));
  const total = weights.reduce((a, b) => a + b, 0);
  return Array.from({ length: REQUESTS }, () => {
    let u = random() * total;
    for (let i = 0; i < N; i++) if ((u -= weights[i]!) <= 0) return i;
    return N - 1;
  });
};
const stream = zipfStream(7);

async function runStream(e: Engine, deltas: string[]): Promise<{ tokens: number; ttfts: number[] }> {
  let tokens = 0;
  let cursor = 0;
  const ttfts: number[] = [];
  const worker = async () => {
    while (cursor < deltas.length) {
      const r = await generate(e, deltas[cursor++]!, MAX_TOKENS);
      tokens += r.tokens;
      ttfts.push(r.ttft);
    }
  };
  await Promise.all(Array.from({ length: SLOTS }, worker));
  return { tokens, ttfts };
}

async function throughput(deltaOf: (i: number) => string, prefetch: string[], warmup?: number[]) {
  const e = await startEngine(engineOptions());
  for (const k of prefetch) await e.prefetchDelta(k);
  await generate(e, null, 2);
  if (warmup) await runStream(e, warmup.map(deltaOf));
  const before = await e.stats();
  const started = performance.now();
  const { tokens, ttfts } = await runStream(e, stream.map(deltaOf));
  const seconds = (performance.now() - started) / 1000;
  const after = await e.stats();
  await e.close();
  const counters = Object.fromEntries(
    (['hostHits', 'hostMisses', 'diskHits', 'diskMisses', 'storeLoads', 'loads'] as const).map((k) => [k, after[k] - before[k]]),
  ) as Record<'hostHits' | 'hostMisses' | 'diskHits' | 'diskMisses' | 'storeLoads' | 'loads', number>;
  const loadMs = after.avgLoadMs * after.loads - before.avgLoadMs * before.loads;
  return { tokens_per_s: tokens / seconds, seconds, tokens, median_ttft_ms: median(ttfts), distinct_deltas: new Set(stream.map(deltaOf)).size, counters: { ...counters, avgLoadMs: counters.loads ? loadMs / counters.loads : 0 } };
}
const resident = await throughput((i) => key(i % SLOTS), Array.from({ length: Math.min(SLOTS, N) }, (_, i) => key(i)));
const tiered = await throughput((i) => key(i), []);
const warmed = await throughput((i) => key(i), [], zipfStream(11));
await s3.close();
for (const dir of diskDirs) fs.rmSync(dir, { recursive: true, force: true });

const report = {
  model: 'SmolLM2-135M-shaped Llama (random weights), cpu',
  cpus: `${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown'}`,
  node: process.version,
  deltas: N,
  delta_mb: deltaBytes / 1e6,
  slots: SLOTS,
  host_cache_bytes: Number(values['host-cache-bytes']),
  store: 's3rver on loopback',
  latency_ms: {
    warm_ttft: warmMs,
    host_hit_ttft: median(host),
    host_hit_load: median(host) - warmMs,
    cold_s3_ttft: median(cold),
    cold_s3_load: median(cold) - warmMs,
    engine_avg_load_ms: latencyStats.avgLoadMs,
  },
  throughput: {
    requests: REQUESTS,
    max_tokens: MAX_TOKENS,
    concurrency: SLOTS,
    all_resident: resident,
    tiered_cold: tiered,
    tiered_warmed: warmed,
    relative_cold: tiered.tokens_per_s / resident.tokens_per_s,
    relative_warmed: warmed.tokens_per_s / resident.tokens_per_s,
  },
};

console.log(`\n${report.model}; ${report.cpus}; ${N} deltas of ${report.delta_mb.toFixed(1)} MB in ${report.store}; ${SLOTS} slots`);
console.log('\nlatency (median, one-token requests)        ms');
console.log(`  warm (resident) time to first token  ${warmMs.toFixed(1).padStart(8)}`);
console.log(`  host-memory hit: TTFT − warm          ${(median(host) - warmMs).toFixed(1).padStart(8)}   (TTFT ${median(host).toFixed(1)})`);
console.log(`  cold from S3: time to first token     ${median(cold).toFixed(1).padStart(8)}   (TTFT − warm ${(median(cold) - warmMs).toFixed(1)})`);
console.log(`\nthroughput: ${REQUESTS} requests × ${MAX_TOKENS} tokens, ${SLOTS} concurrent, Zipf(1) over ${N} deltas`);
console.log('  run                 distinct  tokens/s  median TTFT ms');
for (const [label, r] of [['all resident', resident], ['tiered, cold start', tiered], ['tiered, warmed', warmed]] as const) {
  console.log(`  ${label.padEnd(18)} ${String(r.distinct_deltas).padStart(9)} ${r.tokens_per_s.toFixed(1).padStart(9)} ${r.median_ttft_ms.toFixed(1).padStart(15)}`);
}
console.log(`  relative throughput: cold start ${report.throughput.relative_cold.toFixed(2)}, warmed ${report.throughput.relative_warmed.toFixed(2)}`);
for (const [label, r] of [['cold start', tiered], ['warmed', warmed]] as const) {
  const c = r.counters;
  console.log(`  ${label} loads: host ${c.hostHits} hits / ${c.hostMisses} misses, disk ${c.diskHits} / ${c.diskMisses}, store ${c.storeLoads}, avg ${c.avgLoadMs.toFixed(1)} ms`);
}
if (values.out) {
  fs.mkdirSync(path.dirname(path.resolve(values.out)), { recursive: true });
  fs.writeFileSync(values.out, JSON.stringify(report, null, 2));
  console.log(`wrote ${values.out}`);
}
