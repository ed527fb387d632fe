/**
 * One method of `npm run bench:train` (bench/train.ts runs this once per method, each in its own
 * process, so the peak RSS it reports — process.resourceUsage().maxRSS, the engine worker thread
 * included — is that method's alone):
 *
 *   node --import tsx bench/train-method.ts --method KIND [--options JSON] [--device cpu|webgpu] [--steps N] [--threads N] [--micro-batch ROWS] [--serve-seconds S]
 *
 * Trains KIND on the engine's device, on a SmolLM2-135M-shaped Llama (random weights), with the
 * method's options (--options, else BENCH_OPTIONS, else the kind's defaults); one step = 8 rows x
 * 128 tokens split into micro-batches. Reports:
 *   - training alone: median step ms, training tokens/s, the device ms of each step;
 *   - the trainable-parameter count and the bytes the kind's writer writes (its delta, or for full
 *     fine-tuning the model's config changes and weights);
 *   - peak RSS once the engine serves (before training) and after training;
 *   - with --serve-seconds S > 0: decode inter-token gaps (p50/p95/max) of 4 concurrent greedy
 *     streams, without a training job and while one steps continuously.
 * The last line of stdout is `RESULT <json>`, which bench/train.ts reads.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startEngine } from '../src/engine/client.js';
import '../src/deltas/kinds/index.js';
import { trainableKind, type TrainingBackbone } from '../src/deltas/training.js';
import { freshTrainerState, type AdamWHyperparameters } from '../src/engine/trainer.js';
import type { Device } from '../src/engine/model-runtime.js';
import { greedyRequest } from '../src/engine/types.js';
import { openCheckpoint } from '../src/model/checkpoint.js';
import { mulberry32 } from '../src/model/random.js';
import { readCheckpointRows, readCheckpointWeight } from '../src/model/weight-data.js';
import { microBatches } from '../src/training/batches.js';
import { ensureSyntheticCheckpoint, SMOLLM2_135M_CONFIG } from './synthetic.js';

const { values } = parseArgs({
  options: {
    method: { type: 'string', default: 'lora' },
    options: { type: 'string' },
    device: { type: 'string', default: 'cpu' },
    steps: { type: 'string', default: '2' },
    threads: { type: 'string' },
    'micro-batch': { type: 'string', default: '1' },
    'serve-seconds': { type: 'string', default: '0' },
  },
});
const device = values.device as Device;
const STEPS = Number(values.steps);
const MICRO = Number(values['micro-batch']);
const SERVE_MS = Number(values['serve-seconds']) * 1000;
const ROWS = 8;
const SEQ = 128;
const STREAMS = 4;
const PROMPT = 128;
const NEW_TOKENS = 64;
if (ROWS % MICRO) throw new Error(`--micro-batch must divide the batch of ${ROWS} rows`);
const cacheRoot = path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'deltaserve');
const modelDir = ensureSyntheticCheckpoint(path.join(cacheRoot, 'bench', 'smollm2-135m-shape'), SMOLLM2_135M_CONFIG);
const ckpt = openCheckpoint(modelDir);
const arch = ckpt.arch;
/** Options that make a method comparable to the LoRA the serving benches use; other kinds train with their defaults. */
// The virtual-token methods have no default length (PEFT requires num_virtual_tokens): 20, as PEFT's examples use.
const BENCH_OPTIONS: Record<string, unknown> = {
  lora: { r: 16, alpha: 32, target_modules: 'all-linear' },
  dora: { r: 16, alpha: 32 },
  prompt_tuning: { num_virtual_tokens: 20 },
  p_tuning: { num_virtual_tokens: 20 },
  prefix_tuning: { num_virtual_tokens: 20 },
};
const method = values.method!;
const trainable = trainableKind(method);
const limits = { maxRank: 16, maxVirtualTokens: 64, maxBottleneck: 64 };
const backbone: TrainingBackbone = { weight: (name) => readCheckpointWeight(ckpt, name), weightRows: (name, rows) => readCheckpointRows(ckpt, name, rows) };
const requested = values.options ? JSON.parse(values.options) : (BENCH_OPTIONS[method] ?? {});
const resolved = trainable.resolve(arch, trainable.options.parse(requested), limits, backbone);
const params = trainable.params(arch, resolved);
const paramCount = params.reduce((n, p) => n + p.shape.reduce((a, d) => a * d, 1), 0);
const hyper: AdamWHyperparameters = { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 };
const maxRssKiB = () => process.resourceUsage().maxRSS;

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-train-bench-'));
const engine = await startEngine({
  modelDir,
  cacheDir: cacheRoot,
  device,
  maxRows: 8,
  maxContext: 512,
  deltaSlots: 8,
  maxRank: 16,
  maxVirtualTokens: 64,
  maxBottleneck: 64,
  prefillChunk: 256,
  maxQueue: 4096,
  threads: values.threads ? Number(values.threads) : undefined,
  store: path.join(scratch, 'store'),
  hostCacheBytes: 2 ** 31,
  diskCacheDir: path.join(scratch, 'disk'),
  diskCacheMaxBytes: 2 ** 34,
  trainingShare: 0.25,
});

const percentile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))] ?? NaN;
/** The middle of the sorted times: this VM's steps have outliers (page reclaim, neighbours) that a mean would absorb. */
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};
const promptIds = Array.from({ length: PROMPT }, (_, i) => (i * 7919 + 11) % arch.vocabSize);
let nextId = 0;

/**
 * STREAMS clients, each issuing back-to-back requests until `ms` has passed; the gaps between a
 * stream's successive token events are what a user of a streaming endpoint sees.
 */
async function serve(ms: number) {
  const gaps: number[] = [];
  const ttfts: number[] = [];
  let tokens = 0;
  const started = performance.now();
  const client = async () => {
    while (performance.now() - started < ms) {
      const sent = performance.now();
      let last = NaN;
      for await (const event of engine.generate(greedyRequest(`g${nextId++}`, promptIds, [], NEW_TOKENS))) {
        if (event.type !== 'token') continue;
        const now = performance.now();
        if (Number.isNaN(last)) ttfts.push(now - sent);
        else gaps.push(now - last);
        last = now;
        tokens++;
      }
    }
  };
  await Promise.all(Array.from({ length: STREAMS }, client));
  const seconds = (performance.now() - started) / 1000;
  return { seconds, tokens, tokens_per_s: tokens / seconds, gaps: gaps.length, p50_ms: percentile(gaps, 0.5), p95_ms: percentile(gaps, 0.95), max_ms: Math.max(...gaps), gaps_over_1s: gaps.filter((g) => g > 1000).length, median_ttft_ms: median(ttfts) };
}

// Decode first, so the RSS "before training" includes serving's own peak (the engine serves as a server's does).
for (let i = 0; i < 2; i++) for await (const event of engine.generate(greedyRequest(`w${nextId++}`, promptIds, [], 4))) void event;
const alone = SERVE_MS > 0 ? await serve(SERVE_MS) : undefined;
const rssBefore = maxRssKiB();

// Fixed seeds: every run trains on the same batch from the same start (the kind's own initialisation).
const state = freshTrainerState(trainable.init(arch, resolved, 1234, backbone));
const rand = mulberry32(1234);
const ids = Array.from({ length: ROWS }, () => Array.from({ length: SEQ }, () => Math.floor(rand() * arch.vocabSize)));
// Labels are every position (the causal shift leaves each row's last position without a target).
const { batches } = microBatches(ids.map((row) => ({ inputIds: row, labels: row })), MICRO, SEQ, 0);

// 1. Training alone: the first step also pays for building (or loading) the step graph's session.
const jobId = 'bench-train';
const beginStarted = performance.now();
await engine.trainBegin({ jobId, kind: method, options: resolved, rows: MICRO, seqLen: SEQ, state });
const beginMs = performance.now() - beginStarted;
const warmStarted = performance.now();
const warm = await engine.trainStep(jobId, batches, hyper);
const warmMs = performance.now() - warmStarted;
const steps: { ms: number; device_ms: number; loss: number; grad_norm: number }[] = [];
for (let i = 0; i < STEPS; i++) {
  const t = performance.now();
  const r = await engine.trainStep(jobId, batches, hyper);
  steps.push({ ms: performance.now() - t, device_ms: r.deviceMs, loss: r.loss, grad_norm: r.gradNorm });
}
const stepMs = median(steps.map((s) => s.ms));

// 2. Decode while a training job steps back to back; only steps that finish while serving count.
let withTraining: Awaited<ReturnType<typeof serve>> | undefined;
let servedSteps = 0;
let servedDeviceMs = 0;
if (SERVE_MS > 0) {
  let serving = true;
  const trainLoop = (async () => {
    while (serving) {
      const r = await engine.trainStep(jobId, batches, hyper);
      if (serving) (servedSteps++, (servedDeviceMs += r.deviceMs));
    }
  })();
  withTraining = await serve(SERVE_MS);
  serving = false;
  await trainLoop;
}
const rssAfter = maxRssKiB();
const final = await engine.trainEnd(jobId);
await engine.close();
fs.rmSync(scratch, { recursive: true, force: true });
// What the kind's writer writes for the trained parameters (after the RSS reading: the encoding's copy is not training's).
const written = trainable.write(arch, resolved, final.params, { baseModel: 'smollm2-135m-shape' });
const writtenBytes = new TextEncoder().encode(written.config).length + written.weights.byteLength;

const cpus = os.cpus();
const report = {
  method,
  options: requested,
  model: 'SmolLM2-135M-shaped Llama (random weights): hidden 576, 30 layers, 9 heads, 3 KV heads, vocab 49152, tied',
  device,
  machine: { cpu: cpus[0]?.model ?? 'unknown', cores: cpus.length, total_memory_gib: os.totalmem() / 1024 ** 3 },
  node: process.version,
  config: { batch_rows: ROWS, seq_len: SEQ, micro_batch_rows: MICRO, steps: STEPS, hyper, training_share: 0.25, threads: values.threads ? Number(values.threads) : null, serve_seconds: SERVE_MS / 1000 },
  trainable_params: paramCount,
  written_bytes: writtenBytes,
  training_alone: { train_begin_ms: beginMs, warmup_step_ms: warmMs, warmup_loss: warm.loss, median_step_ms: stepMs, tokens_per_s: (ROWS * SEQ * 1000) / stepMs, steps, final_step: final.step },
  memory: { param_and_optimizer_bytes: paramCount * 3 * 4, peak_rss_before_training_mib: rssBefore / 1024, peak_rss_after_training_mib: rssAfter / 1024, training_increase_mib: (rssAfter - rssBefore) / 1024 },
  ...(alone && withTraining
    ? {
        decode_alone: alone,
        decode_with_training: { ...withTraining, training_steps: servedSteps, training_steps_per_s: servedSteps / withTraining.seconds, training_tokens_per_s: (servedSteps * ROWS * SEQ) / withTraining.seconds, completed_steps_device_share: servedDeviceMs / (withTraining.seconds * 1000) },
        ratios: { decode_p95_with_training_vs_alone: withTraining.p95_ms / alone.p95_ms, decode_p50_with_training_vs_alone: withTraining.p50_ms / alone.p50_ms, decode_tokens_per_s_with_training_vs_alone: withTraining.tokens_per_s / alone.tokens_per_s },
      }
    : {}),
};

const f = (x: number, d = 1, w = 9) => x.toFixed(d).padStart(w);
console.log(`\n${method} ${JSON.stringify(requested)}: ${(paramCount / 1e6).toFixed(3)} M trainable parameters, writes ${writtenBytes} bytes; step = ${ROWS} x ${SEQ} tokens in micro-batches of ${MICRO} rows`);
console.log(`  trainBegin ${beginMs.toFixed(0)} ms, warm-up step ${warmMs.toFixed(0)} ms (loss ${warm.loss.toFixed(3)})`);
console.log(`  median step ms ${f(stepMs)}   tokens/s ${f(report.training_alone.tokens_per_s)}`);
console.log('  step        ms  device ms      loss  grad norm');
steps.forEach((s, i) => console.log(`  ${String(i + 1).padStart(4)} ${f(s.ms)} ${f(s.device_ms, 1, 10)} ${f(s.loss, 4)} ${f(s.grad_norm, 4, 10)}`));
console.log(`  peak RSS MiB: serving, before training ${f(rssBefore / 1024)}   after training ${f(rssAfter / 1024)}   params+AdamW ${f((paramCount * 12) / 2 ** 20)}`);
if (alone && withTraining) {
  console.log(`  decode, ${STREAMS} concurrent streams of ${PROMPT}+${NEW_TOKENS} tokens for ${SERVE_MS / 1000} s; inter-token gaps`);
  console.log('  run               gaps   p50 ms   p95 ms   max ms  gaps>1s  tokens/s  TTFT ms');
  for (const [label, r] of [['alone', alone], ['with training', withTraining]] as const) {
    console.log(`  ${label.padEnd(14)} ${String(r.gaps).padStart(6)} ${f(r.p50_ms, 1, 8)} ${f(r.p95_ms, 1, 8)} ${f(r.max_ms, 1, 8)} ${String(r.gaps_over_1s).padStart(7)} ${f(r.tokens_per_s)} ${f(r.median_ttft_ms, 0, 8)}`);
  }
  console.log(`  training while serving: ${servedSteps} steps, ${(servedSteps / withTraining.seconds).toFixed(3)} steps/s`);
}
console.log(`RESULT ${JSON.stringify(report)}`);
