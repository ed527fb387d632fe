/**
 * npm run bench:train [-- --method KIND[,KIND...]] [--steps N] [--options JSON] [--device cpu|webgpu] [--threads N] [--micro-batch ROWS] [--serve-seconds S] [--out FILE]
 *
 * Training memory and speed per method on the SmolLM2-135M-shaped model, batch 8 x 128 tokens:
 * every registered trainable kind (the `method.type`s the API accepts), or those named by
 * --method. Each runs in its own process (bench/train-method.ts), so each peak RSS is that
 * method's alone, engine worker thread included. Prints one row per method — trainable
 * parameters, the bytes its writer writes, training tokens/s, peak RSS while serving before
 * training and after training — and writes every child's full report as JSON (--out).
 * --options takes per-method options, e.g. '{"prompt_tuning": {"num_virtual_tokens": 20}}';
 * a method whose options do not resolve, or whose run fails, gets its error in the table.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import '../src/deltas/kinds/index.js';
import { trainableKinds } from '../src/deltas/training.js';

const { values } = parseArgs({
  options: {
    method: { type: 'string' },
    options: { type: 'string' },
    steps: { type: 'string', default: '2' },
    device: { type: 'string', default: 'cpu' },
    threads: { type: 'string' },
    'micro-batch': { type: 'string', default: '1' },
    'serve-seconds': { type: 'string', default: '0' },
    out: { type: 'string' },
  },
});
const registered = trainableKinds().map((k) => k.name);
const methods = values.method ? values.method.split(',').map((m) => m.trim()).filter(Boolean) : registered;
const unknown = methods.filter((m) => !registered.includes(m));
if (unknown.length) throw new Error(`--method ${unknown.join(', ')}: not a trainable kind (registered: ${registered.join(', ')})`);
const perMethod = values.options ? (JSON.parse(values.options) as Record<string, unknown>) : {};
const child = fileURLToPath(new URL('./train-method.ts', import.meta.url));

interface Row {
  method: string;
  report?: Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  error?: string;
}

/** One method in a fresh process; its report is the `RESULT` line it prints last. */
function run(method: string): Row {
  const args = ['--import', 'tsx', child, '--method', method, '--steps', values.steps!, '--device', values.device!, '--micro-batch', values['micro-batch']!, '--serve-seconds', values['serve-seconds']!];
  if (values.threads) args.push('--threads', values.threads);
  if (perMethod[method] !== undefined) args.push('--options', JSON.stringify(perMethod[method]));
  console.log(`\n== ${method}`);
  const result = spawnSync(process.execPath, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 });
  const lines = result.stdout.split('\n');
  process.stdout.write(lines.filter((l) => !l.startsWith('RESULT ')).join('\n'));
  const line = lines.find((l) => l.startsWith('RESULT '));
  if (line) return { method, report: JSON.parse(line.slice('RESULT '.length)) };
  const error = ([...result.stderr.trim().split('\n')].reverse().find((l) => /Error|error/.test(l)) ?? `exit ${result.status ?? result.signal}`).trim();
  process.stderr.write(result.stderr.slice(-4000));
  return { method, error };
}

const rows = methods.map(run);
const mib = (value: number) => value.toFixed(0);
const bytes = (n: number) => (n >= 1024 ** 2 ? `${(n / 1024 ** 2).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`);
console.log(`\ntraining per method: SmolLM2-135M-shaped Llama, batch 8 x 128 tokens, micro-batches of ${values['micro-batch']} row(s), ${values.steps} timed steps after a warm-up step, device ${values.device}\n`);
console.log('| method | trainable params | written (delta or model) | tokens/s | median step s | peak RSS serving, MiB | peak RSS after training, MiB |');
console.log('|---|---|---|---|---|---|---|');
for (const { method, report: r, error } of rows) {
  if (!r) console.log(`| ${method} | failed: ${error} | | | | | |`);
  else console.log(`| ${method} | ${r.trainable_params.toLocaleString('en-US')} | ${bytes(r.written_bytes)} | ${r.training_alone.tokens_per_s.toFixed(1)} | ${(r.training_alone.median_step_ms / 1000).toFixed(2)} | ${mib(r.memory.peak_rss_before_training_mib)} | ${mib(r.memory.peak_rss_after_training_mib)} |`);
}
const outFile = values.out ?? path.join('bench-results', `train-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
fs.mkdirSync(path.dirname(path.resolve(outFile)), { recursive: true });
fs.writeFileSync(outFile, JSON.stringify({ methods: rows }, null, 2));
console.log(`\nwrote ${outFile}`);
