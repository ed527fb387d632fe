/**
 * `npm run pretrain`: trains the default model from scratch (docs/pretraining.md) and writes it as
 * a Hugging Face directory in F16, with pretrain.json (the run's measurements) beside it.
 *
 *   npm run pretrain -- [--size xs|s|m] [--steps N] [--rows 16] [--micro-rows 8] [--seq 128]
 *                       [--lr 2e-3] [--warmup N] [--weight-decay 0.1] [--seed 1] [--eval-every N]
 *                       [--corpus DIR] [--out DIR] [--threads N]
 *
 * Builds the corpus first (`npm run corpus`'s recipe) when --corpus is not given and the cache has none.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigSchema } from '../src/config.js';
import { MODEL_SHAPES } from '../src/pretrain/model-shapes.js';
import { CORPUS_DIRNAME, prepareCorpus } from '../src/pretrain/prepare.js';
import { pretrain } from '../src/pretrain/recipe.js';
import { SourceError } from '../src/pretrain/sources.js';
import { DEFAULT_MODEL_DIR, DEFAULT_RECIPE } from '../src/pretrain/default-recipe.js';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: DEFAULT_RECIPE.size },
    steps: { type: 'string', default: String(DEFAULT_RECIPE.steps) },
    rows: { type: 'string', default: String(DEFAULT_RECIPE.rowsPerStep) },
    'micro-rows': { type: 'string', default: String(DEFAULT_RECIPE.microRows) },
    seq: { type: 'string', default: String(DEFAULT_RECIPE.seqLen) },
    lr: { type: 'string', default: String(DEFAULT_RECIPE.lr) },
    warmup: { type: 'string' },
    'weight-decay': { type: 'string', default: String(DEFAULT_RECIPE.weightDecay) },
    seed: { type: 'string', default: String(DEFAULT_RECIPE.seed) },
    'eval-every': { type: 'string' },
    corpus: { type: 'string' },
    out: { type: 'string', default: DEFAULT_MODEL_DIR },
    threads: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log('usage: npm run pretrain -- [--size xs|s|m] [--steps N] [--rows N] [--micro-rows N] [--seq N] [--lr X] [--warmup N] [--weight-decay X] [--seed N] [--eval-every N] [--corpus DIR] [--out DIR] [--threads N]');
  process.exit(0);
}

function number(name: string, text: string, integer: boolean): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) {
    console.error(`pretrain: --${name} must be a non-negative ${integer ? 'integer' : 'number'}, got ${JSON.stringify(text)}`);
    process.exit(2);
  }
  return n;
}

const shape = MODEL_SHAPES[values.size!];
if (!shape) {
  console.error(`pretrain: --size must be one of ${Object.keys(MODEL_SHAPES).join(', ')}, got ${JSON.stringify(values.size)}`);
  process.exit(2);
}
const steps = number('steps', values.steps!, true);

let corpusDir = values.corpus;
if (!corpusDir) {
  corpusDir = path.join(ConfigSchema.shape.cacheDir.parse(undefined), CORPUS_DIRNAME);
  if (!fs.existsSync(path.join(corpusDir, 'kjv', 'train.txt'))) {
    console.log(`building the corpus into ${corpusDir}`);
    try {
      prepareCorpus({ outDir: corpusDir });
    } catch (err) {
      if (!(err instanceof SourceError)) throw err;
      console.error(`pretrain: ${err.message}`);
      process.exit(2);
    }
  }
}

const report = await pretrain({
  corpusDir,
  outDir: values.out!,
  size: values.size!,
  shape,
  steps,
  rowsPerStep: number('rows', values.rows!, true),
  microRows: number('micro-rows', values['micro-rows']!, true),
  seqLen: number('seq', values.seq!, true),
  lr: number('lr', values.lr!, false),
  warmup: values.warmup ? number('warmup', values.warmup, true) : Math.round(steps * DEFAULT_RECIPE.warmupShare),
  weightDecay: number('weight-decay', values['weight-decay']!, false),
  seed: number('seed', values.seed!, true),
  evalEvery: values['eval-every'] ? number('eval-every', values['eval-every'], true) : Math.max(1, Math.round(steps / 20)),
  threads: values.threads ? number('threads', values.threads, true) : undefined,
  log: (line) => console.log(line),
});
console.log(`\nwrote ${values.out}: ${report.parameters.toLocaleString('en')} parameters, ${(report.weightsBytes / 2 ** 20).toFixed(2)} MiB of F16 weights`);
console.log(`held-out: ${report.heldoutBitsPerByte.toFixed(3)} bits/byte (float32), ${report.heldoutBitsPerByteF16.toFixed(3)} (F16 as written)`);
console.log(`${report.tokensSeen.toLocaleString('en')} tokens (${report.epochs.toFixed(2)} epochs) in ${(report.trainSeconds / 60).toFixed(1)} min, ${report.tokensPerSecond.toFixed(0)} tokens/s`);
