/**
 * npm run bench:train [-- --device cpu|webgpu] [--out FILE] [--steps N] [--threads N] [--micro-batch ROWS] [--serve-seconds S]
 *
 * LoRA training on the engine's device, on a SmolLM2-135M-shaped Llama (random weights): rank 16,
 * alpha 32, all 210 linear modules; one step = 8 rows x 128 tokens split into micro-batches.
 * Reports:
 *   - training alone: median step ms, training tokens/s, the device ms of each step;
 *   - peak RSS before training began and after (the engine worker shares the process), and the
 *     bytes of the parameters plus AdamW moments;
 *   - decode inter-token gaps (p50/p95/max) of 4 concurrent greedy streams, without a training
 *     job and while one steps continuously, and the training rate achieved while serving.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startEngine } from '../src/engine/client.js';
import '../src/deltas/kinds/index.js';
import type { LoraLayout } from '../src/deltas/kinds/lora-training.js';
import { trainableKind } from '../src/deltas/training.js';
import { freshTrainerState, type AdamWHyperparameters } from '../src/engine/trainer.js';
import type { Device } from '../src/engine/model-runtime.js';
import { greedyRequest } from '../src/engine/types.js';
import { openCheckpoint } from '../src/model/checkpoint.js';
import { mulberry32 } from '../src/model/random.js';
import { microBatches } from '../src/training/batches.js';
import { ensureSyntheticCheckpoint, SMOLLM2_135M_CONFIG } from './synthetic.js';

const { values } = parseArgs({
  options: {
    device: { type: 'string', default: 'cpu' },
    out: { type: 'string' },
    steps: { type: 'string', default: '5' },
    threads: { type: 'string' },
    'micro-batch': { type: 'string', default: '1' },
    'serve-seconds': { type: 'string', default: '60' },
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
const arch = openCheckpoint(modelDir).arch;
const trainable = trainableKind('lora');
const lora: LoraLayout = trainable.resolve(arch, trainable.options.parse({ r: 16, alpha: 32, target_modules: 'all-linear' }), { maxRank: 16, maxVirtualTokens: 64, maxBottleneck: 64 });
const params = trainable.params(arch, lora);
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

// Decode alone first, so the RSS "before training" includes serving's own peak.
for (let i = 0; i < 2; i++) for await (const event of engine.generate(greedyRequest(`w${nextId++}`, promptIds, [], 4))) void event;
const alone = await serve(SERVE_MS);
const rssBefore = maxRssKiB();

// Fixed seeds: every run trains on the same batch from the same start (PEFT's init: A uniform, B zero).
const state = freshTrainerState(trainable.init(arch, lora, 1234));
const rand = mulberry32(1234);
const ids = Array.from({ length: ROWS }, () => Array.from({ length: SEQ }, () => Math.floor(rand() * arch.vocabSize)));
// Labels are every position (the causal shift leaves each row's last position without a target).
const { batches } = microBatches(ids.map((row) => ({ inputIds: row, labels: row })), MICRO, SEQ, 0);

// 1. Training alone: the first step also pays for building (or loading) the step graph's session.
const jobId = 'bench-train';
const beginStarted = performance.now();
await engine.trainBegin({ jobId, kind: 'lora', options: lora, rows: MICRO, seqLen: SEQ, state });
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
let serving = true;
let servedSteps = 0;
let servedDeviceMs = 0;
const trainLoop = (async () => {
  while (serving) {
    const r = await engine.trainStep(jobId, batches, hyper);
    if (serving) (servedSteps++, (servedDeviceMs += r.deviceMs));
  }
})();
const withTraining = await serve(SERVE_MS);
serving = false;
await trainLoop;
const rssAfter = maxRssKiB();
const final = await engine.trainEnd(jobId);
await engine.close();
fs.rmSync(scratch, { recursive: true, force: true });

const cpus = os.cpus();
const report = {
  model: 'SmolLM2-135M-shaped Llama (random weights): hidden 576, 30 layers, 9 heads, 3 KV heads, vocab 49152, tied',
  device,
  machine: { cpu: cpus[0]?.model ?? 'unknown', cores: cpus.length, total_memory_gib: os.totalmem() / 1024 ** 3 },
  node: process.version,
  config: { lora: { rank: lora.r, alpha: lora.alpha, modules: lora.modules.length }, batch_rows: ROWS, seq_len: SEQ, micro_batch_rows: MICRO, steps: STEPS, hyper, training_share: 0.25, threads: values.threads ? Number(values.threads) : null, streams: STREAMS, prompt_tokens: PROMPT, new_tokens: NEW_TOKENS, serve_seconds: SERVE_MS / 1000 },
  training_alone: { train_begin_ms: beginMs, warmup_step_ms: warmMs, warmup_loss: warm.loss, median_step_ms: stepMs, tokens_per_s: (ROWS * SEQ * 1000) / stepMs, steps, final_step: final.step },
  memory: { trainable_params: paramCount, param_and_optimizer_bytes: paramCount * 3 * 4, peak_rss_before_training_mib: rssBefore / 1024, peak_rss_after_training_mib: rssAfter / 1024, training_increase_mib: (rssAfter - rssBefore) / 1024 },
  decode_alone: alone,
  decode_with_training: { ...withTraining, training_steps: servedSteps, training_steps_per_s: servedSteps / withTraining.seconds, training_tokens_per_s: (servedSteps * ROWS * SEQ) / withTraining.seconds, completed_steps_device_share: servedDeviceMs / (withTraining.seconds * 1000) },
  ratios: { decode_p95_with_training_vs_alone: withTraining.p95_ms / alone.p95_ms, decode_p50_with_training_vs_alone: withTraining.p50_ms / alone.p50_ms, decode_tokens_per_s_with_training_vs_alone: withTraining.tokens_per_s / alone.tokens_per_s },
};

const f = (x: number, d = 1, w = 9) => x.toFixed(d).padStart(w);
console.log(`\n${report.model}\ndevice ${device}, ${cpus.length} x ${report.machine.cpu}, node ${process.version}`);
console.log(`LoRA r16 a32 on ${lora.modules.length} modules (${(paramCount / 1e6).toFixed(2)} M params); step = ${ROWS} x ${SEQ} tokens in micro-batches of ${MICRO} rows\n`);
console.log('training alone');
console.log(`  trainBegin ${beginMs.toFixed(0)} ms, warm-up step ${warmMs.toFixed(0)} ms (loss ${warm.loss.toFixed(3)})`);
console.log(`  median step ms ${f(stepMs)}   tokens/s ${f(report.training_alone.tokens_per_s)}`);
console.log('  step        ms  device ms      loss  grad norm');
steps.forEach((s, i) => console.log(`  ${String(i + 1).padStart(4)} ${f(s.ms)} ${f(s.device_ms, 1, 10)} ${f(s.loss, 4)} ${f(s.grad_norm, 4, 10)}`));
console.log('\nmemory (peak RSS, MiB)');
console.log(`  before training ${f(rssBefore / 1024)}   after ${f(rssAfter / 1024)}   increase ${f((rssAfter - rssBefore) / 1024)}   params+AdamW ${f((paramCount * 12) / 2 ** 20)}`);
console.log(`\ndecode, ${STREAMS} concurrent streams of ${PROMPT}+${NEW_TOKENS} tokens for ${SERVE_MS / 1000} s; inter-token gaps`);
console.log('  run               gaps   p50 ms   p95 ms   max ms  gaps>1s  tokens/s  TTFT ms');
for (const [label, r] of [['alone', alone], ['with training', withTraining]] as const) {
  console.log(`  ${label.padEnd(14)} ${String(r.gaps).padStart(6)} ${f(r.p50_ms, 1, 8)} ${f(r.p95_ms, 1, 8)} ${f(r.max_ms, 1, 8)} ${String(r.gaps_over_1s).padStart(7)} ${f(r.tokens_per_s)} ${f(r.median_ttft_ms, 0, 8)}`);
}
const w = report.decode_with_training;
console.log(`  training while serving: ${servedSteps} steps, ${w.training_steps_per_s.toFixed(3)} steps/s, ${w.training_tokens_per_s.toFixed(1)} tokens/s, ${(100 * w.completed_steps_device_share).toFixed(0)}% device time in completed steps`);
console.log(`  ratio p95 with training / alone ${report.ratios.decode_p95_with_training_vs_alone.toFixed(2)}`);
const outFile = values.out ?? path.join('bench-results', `train-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
fs.mkdirSync(path.dirname(path.resolve(outFile)), { recursive: true });
fs.writeFileSync(outFile, JSON.stringify(report, null, 2));
console.log(`wrote ${outFile}`);
