/**
 * npm run bench [-- --device cpu|webgpu] [--out FILE]
 * Prefill and decode throughput of a SmolLM2-135M-shaped Llama (random weights, generated locally),
 * base-only vs every row a different rank-16 all-linear LoRA, plus a replica's cold start.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ModelRuntime, type Device, type RowSlots } from '../src/engine/model-runtime.js';
import { Scheduler } from '../src/engine/scheduler.js';
import { greedyRequest, type GenerateEvent } from '../src/engine/types.js';
import { kindDeltas, VIRTUAL_TOKENS } from './kind-deltas.js';
import { ensureSyntheticCheckpoint, randomLora, SMOLLM2_135M_CONFIG } from './synthetic.js';

const { values } = parseArgs({ options: { device: { type: 'string', default: 'cpu' }, out: { type: 'string' }, steps: { type: 'string', default: '15' }, threads: { type: 'string' }, 'skip-cold-start': { type: 'boolean' }, 'delta-kinds': { type: 'string' } } });
const deltaKinds = values['delta-kinds']?.split(',');
const started = performance.now();
/** Where the run is, on stderr: the whole bench takes minutes and its table prints only at the end. */
const progress = (what: string) => process.stderr.write(`[${((performance.now() - started) / 1000).toFixed(0)} s] ${what}\n`);
const device = values.device as Device;
const steps = Number(values.steps);
const cacheRoot = path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'deltaserve');
const modelDir = ensureSyntheticCheckpoint(path.join(cacheRoot, 'bench', 'smollm2-135m-shape'), SMOLLM2_135M_CONFIG);

/**
 * ms_per_step is the median step; tokens_per_s follows from it. deltas: none, a different LoRA per
 * row (mixed), or a different kind per row (kinds). hooked: the kinds hooked into the graph — LoRA
 * only (the server's start) or every kind (once deltas of every kind were asked for).
 */
interface Row { phase: 'prefill' | 'decode'; batch: number; deltas: 'none' | 'mixed' | 'kinds' | 'prompt_tuning' | 'prefix_tuning'; hooked: 'lora' | 'all'; tokens_per_s: number; ms_per_step: number }

progress('cold start');
const coldStart = values['skip-cold-start'] ? { first_ms: NaN, cached_ms: NaN, engine_load_ms: NaN } : measureColdStart();
const threads = values.threads ? Number(values.threads) : undefined;
// As the server starts: LoRA hooked in, the other kinds when first asked for (below).
const rt = await ModelRuntime.create({ modelDir, cacheDir: cacheRoot, device, maxRows: 32, maxContext: 1024, deltaSlots: 32, maxRank: 16, threads, deltaKinds, initialKinds: ['lora'] });
const deltaPool = new Map(Array.from({ length: 32 }, (_, s) => [`bench-${s}`, randomLora(rt.arch, `bench-${s}`, 16, s + 1)]));
rt.stacks.get('lora')!.write(0, deltaPool.get('bench-0')!);
progress('runtime ready; writing and loading one delta of every kind');
const kinds = kindDeltas(rt, modelDir, path.join(cacheRoot, 'bench', 'kind-deltas'));
for (const [name, delta] of kinds) deltaPool.set(name, delta);
const deltaSource = { lookup: (name: string) => deltaPool.get(name) };
const rows: Row[] = [];
const promptLength = 128;
// Room for the warm-up and timed steps, and within the context with a delta's virtual tokens added
// (the engine refuses a request whose virtual tokens, prompt and max tokens overrun the context).
const DECODE_MAX_TOKENS = 512;
const prompt = Array.from({ length: promptLength }, (_, i) => (i * 7919) % rt.arch.vocabSize);

for (const deltas of ['none', 'mixed'] as const) {
  const slot: RowSlots = deltas === 'none' ? {} : { lora: 0 };
  for (let i = 0; i < 2; i++) await rt.forward({ firstRow: 0, tokens: [prompt], pastLengths: [0], slots: [slot], logits: 'last' });
  const times: number[] = [];
  for (let i = 0; i < 7; i++) {
    const t = performance.now();
    await rt.forward({ firstRow: 0, tokens: [prompt], pastLengths: [0], slots: [slot], logits: 'last' });
    times.push(performance.now() - t);
  }
  const ms = median(times);
  rows.push({ phase: 'prefill', batch: 1, deltas, hooked: 'lora', tokens_per_s: (promptLength * 1000) / ms, ms_per_step: ms });
}
for (const batch of [1, 8, 32]) {
  for (const deltas of ['none', 'mixed'] as const) {
    const ms = await decodeStepMs(batch, deltas);
    rows.push({ phase: 'decode', batch, deltas, hooked: 'lora', tokens_per_s: (batch * 1000) / ms, ms_per_step: ms });
  }
}

progress('hooking every kind into the graph');
await rt.enableKinds([...new Set([...kinds.values()].map((d) => d.kind))]);
// Prompt and prefix tuning add virtual tokens: a request after the delta's first pays only its own
// prefill. Compared with a base request through the same scheduler path.
const basePrefillMs = kinds.size ? await prefillMs([]) : NaN;
for (const name of ['prompt_tuning', 'prefix_tuning'] as const) {
  if (!kinds.has(`kind-${name}`)) continue;
  const ms = await prefillMs([`kind-${name}`]);
  rows.push({ phase: 'prefill', batch: 1, deltas: name, hooked: 'all', tokens_per_s: (promptLength * 1000) / ms, ms_per_step: ms });
}
for (const batch of [1, 8]) {
  for (const deltas of ['none', ...(batch === 8 && kinds.size ? ['kinds' as const] : [])] as const) {
    const ms = await decodeStepMs(batch, deltas);
    rows.push({ phase: 'decode', batch, deltas, hooked: 'all', tokens_per_s: (batch * 1000) / ms, ms_per_step: ms });
  }
}
const deltaKindsServed = [...rt.stacks.keys()];
await rt.release();

const rate = (phase: string, batch: number, deltas: string, hooked: 'lora' | 'all' = 'lora') => rows.find((r) => r.phase === phase && r.batch === batch && r.deltas === deltas && r.hooked === hooked)?.tokens_per_s ?? NaN;
const ratios = {
  kinds_vs_base_decode_b8: rate('decode', 8, 'kinds', 'all') / rate('decode', 8, 'none', 'all'),
  all_kinds_hooked_vs_lora_only_base_decode_b1: rate('decode', 1, 'none', 'all') / rate('decode', 1, 'none'),
  all_kinds_hooked_vs_lora_only_base_decode_b8: rate('decode', 8, 'none', 'all') / rate('decode', 8, 'none'),
  prompt_tuned_vs_base_prefill: rate('prefill', 1, 'prompt_tuning', 'all') / ((promptLength * 1000) / basePrefillMs),
  prefix_tuned_vs_base_prefill: rate('prefill', 1, 'prefix_tuning', 'all') / ((promptLength * 1000) / basePrefillMs),
  mixed_vs_base_decode_b8: rate('decode', 8, 'mixed') / rate('decode', 8, 'none'),
  mixed_vs_base_decode_b32: rate('decode', 32, 'mixed') / rate('decode', 32, 'none'),
  decode_b8_vs_b1_base: rate('decode', 8, 'none') / rate('decode', 1, 'none'),
  decode_b8_vs_b1_mixed: rate('decode', 8, 'mixed') / rate('decode', 1, 'mixed'),
};
const cpus = os.cpus();
const report = {
  model: 'SmolLM2-135M-shaped Llama (random weights): hidden 576, 30 layers, 9 heads, 3 KV heads, vocab 49152, tied',
  device,
  cpus: `${cpus.length} x ${cpus[0]?.model ?? 'unknown'}`,
  node: process.version,
  prompt_tokens: promptLength,
  lora: 'rank 16, all 7 projections, a different delta per row',
  kinds: `one row each of ${[...kinds.keys()].map((k) => k.slice('kind-'.length)).join(', ')} (rank-16 all-linear LoRA and DoRA, IA3 and LN tuning at PEFT's defaults, BitFit on every linear layer, ${VIRTUAL_TOKENS} virtual tokens, Pfeiffer bottleneck width 36)`,
  delta_kinds_served: deltaKindsServed,
  rows,
  ratios,
  cold_start: coldStart,
  targets: { mixed_vs_base_decode_b8: '>= 0.85', kinds_vs_base_decode_b8: '>= 0.85', prompt_tuned_vs_base_prefill: '~1 (no extra prefill after first use)', decode_b8_vs_b1_base: '>= 5', cold_start_ms: '<= 5000' },
};

console.log(`\n${report.model}\ndevice ${device}, ${report.cpus}, node ${process.version}\n`);
console.log('phase    batch  deltas         hooked  tokens/s   ms/step');
for (const r of rows) console.log(`${r.phase.padEnd(8)} ${String(r.batch).padStart(5)}  ${r.deltas.padEnd(13)}  ${r.hooked.padEnd(6)} ${r.tokens_per_s.toFixed(1).padStart(9)} ${r.ms_per_step.toFixed(1).padStart(9)}`);
console.log('\nratios');
for (const [k, v] of Object.entries(ratios)) console.log(`  ${k.padEnd(44)} ${v.toFixed(2)}`);
console.log(`cold start: ${coldStart.first_ms.toFixed(0)} ms with an empty graph cache, ${coldStart.cached_ms.toFixed(0)} ms with the graph cached`);
if (values.out) {
  fs.mkdirSync(path.dirname(path.resolve(values.out)), { recursive: true });
  fs.writeFileSync(values.out, JSON.stringify(report, null, 2));
  console.log(`wrote ${values.out}`);
}

/**
 * Decode through the scheduler (sampling included): `batch` greedy sequences, each with its own
 * delta when mixed, prefilled first; then warm-up steps and timed steps of pure decode.
 */
async function decodeStepMs(batch: number, deltas: 'none' | 'mixed' | 'kinds'): Promise<number> {
  progress(`decode batch ${batch}, deltas ${deltas}`);
  const scheduler = new Scheduler(rt, deltaSource, failOnError, { prefillChunk: 256, maxQueue: 64 });
  const kindNames = [...kinds.keys()];
  const rowDeltas = (r: number) => (deltas === 'mixed' ? [`bench-${r}`] : deltas === 'kinds' ? [kindNames[r % kindNames.length]!] : []);
  for (let r = 0; r < batch; r++) scheduler.submit(greedyRequest(`${deltas}-${batch}-${r}`, prompt, rowDeltas(r), DECODE_MAX_TOKENS));
  while (scheduler.stats.decoding < batch) await scheduler.step();
  for (let i = 0; i < 4; i++) await scheduler.step();
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t = performance.now();
    await scheduler.step();
    times.push(performance.now() - t);
  }
  const ms = median(times);
  for (let r = 0; r < batch; r++) scheduler.cancel(`${deltas}-${batch}-${r}`);
  while (!scheduler.idle) await scheduler.step();
  return ms;
}

/**
 * Prefill of one request through the scheduler, after a first request of the same deltas (which
 * computes and caches any virtual tokens' keys/values): the median of 5, each to its first token.
 */
async function prefillMs(deltas: string[]): Promise<number> {
  progress(`prefill, deltas ${deltas.join(',') || 'none'}`);
  const scheduler = new Scheduler(rt, deltaSource, failOnError, { prefillChunk: 256, maxQueue: 64 });
  const once = async (id: string) => {
    scheduler.submit(greedyRequest(id, prompt, deltas, 1));
    const t = performance.now();
    while (!scheduler.idle) await scheduler.step();
    return performance.now() - t;
  };
  await once('first');
  const times: number[] = [];
  for (let i = 0; i < 5; i++) times.push(await once(`again-${i}`));
  return median(times);
}

/** A request that errors would never reach decode, and the bench would wait for it forever. */
function failOnError(event: GenerateEvent): void {
  if (event.type === 'error') throw new Error(`bench request ${event.id} failed: ${event.code}: ${event.message}`);
}

/** The middle of the sorted times: this VM's steps have outliers (page reclaim, neighbours) that a mean would absorb. */
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Two fresh processes: the first builds the graph into an empty cache, the second reuses it. */
function measureColdStart(): { first_ms: number; cached_ms: number; engine_load_ms: number } {
  const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-cold-'));
  const run = () => JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), 'cold-start.ts'), modelDir, cacheDir, device], { encoding: 'utf8' }).trim().split('\n').pop()!);
  const first = run();
  const cached = run();
  fs.rmSync(cacheDir, { recursive: true, force: true });
  return { first_ms: first.readyMs, cached_ms: cached.readyMs, engine_load_ms: cached.engineLoadMs };
}
