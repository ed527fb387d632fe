/**
 * `npm run corpus`: builds the pretraining corpus, the tokenizer and the study tasks from the
 * pinned Debian packages (see docs/pretraining.md) and prints a summary.
 *
 *   npm run corpus -- [--out DIR] [--source-root DIR] [--vocab 4096] [--compare 1024,2048]
 *                     [--quick] [--task-train N] [--task-heldout N] [--seed 1]
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigSchema } from '../src/config.js';
import { CORPUS_DIRNAME, prepareCorpus, type CorpusSummary } from '../src/pretrain/prepare.js';
import { SourceError } from '../src/pretrain/sources.js';
import { DEFAULT_TASK_SIZES, QUICK_TASK_SIZES } from '../src/pretrain/tasks/task.js';

const { values } = parseArgs({
  options: {
    out: { type: 'string' },
    'source-root': { type: 'string', default: '/' },
    vocab: { type: 'string', default: '4096' },
    compare: { type: 'string', default: '1024,2048' },
    quick: { type: 'boolean', default: false },
    'task-train': { type: 'string' },
    'task-heldout': { type: 'string' },
    seed: { type: 'string', default: '1' },
    help: { type: 'boolean', default: false },
  },
});

if (values.help) {
  console.log('usage: npm run corpus -- [--out DIR] [--source-root DIR] [--vocab N] [--compare N,N] [--quick] [--task-train N] [--task-heldout N] [--seed N]');
  process.exit(0);
}

const int = (name: string, text: string) => {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${JSON.stringify(text)}`);
  return n;
};

const base = values.quick ? QUICK_TASK_SIZES : DEFAULT_TASK_SIZES;
const outDir = values.out ?? path.join(ConfigSchema.shape.cacheDir.parse(undefined), CORPUS_DIRNAME);
const started = performance.now();
try {
  const summary = prepareCorpus({
    outDir,
    sourceRoot: values['source-root'],
    vocabSize: int('vocab', values.vocab),
    compareVocabSizes: values.quick || values.compare === '' ? [] : values.compare.split(',').map((v) => int('compare', v)),
    taskSizes: {
      train: values['task-train'] ? int('task-train', values['task-train']) : base.train,
      heldout: values['task-heldout'] ? int('task-heldout', values['task-heldout']) : base.heldout,
    },
    seed: int('seed', values.seed),
  });
  print(summary, outDir, (performance.now() - started) / 1000);
} catch (err) {
  if (err instanceof SourceError) {
    console.error(`corpus: ${err.message}`);
    process.exit(2);
  }
  throw err;
}

function print(s: CorpusSummary, dir: string, seconds: number): void {
  console.log(`corpus written to ${dir} in ${seconds.toFixed(1)} s\n`);
  table(['source', 'version', 'file', 'SHA-256 (verified)'], s.sources.flatMap((src) => src.files.map((f) => [src.package, src.version, path.basename(f.path), f.sha256])));
  const k = s.kjv;
  table(['text', 'verses', 'chapters', 'bytes', 'share', 'SHA-256'], [
    ['KJV train', '', String(k.chapters - k.heldoutChapters.length), String(k.trainBytes), (1 - k.heldoutShare).toFixed(4), k.trainSha256],
    ['KJV held-out', '', String(k.heldoutChapters.length), String(k.heldoutBytes), k.heldoutShare.toFixed(4), k.heldoutSha256],
    ['KJV all', String(k.verses), String(k.chapters), String(k.trainBytes + k.heldoutBytes), '1', ''],
    ['WEB (style task)', String(s.web.verses), '', '', '', ''],
  ]);
  console.log(`held-out chapters: ${k.heldoutChapters.join(', ')}; held-out verses also in train verbatim: ${k.heldoutVersesAlsoInTrain}\n`);
  table(['vocab', 'merges', 'train s', 'train tokens', 'held-out tokens', 'held-out bytes/token'], s.tokenizers.map((t) => [
    String(t.vocabSize), String(t.merges), t.trainSeconds.toFixed(1), String(t.trainTokens), String(t.heldoutTokens), t.heldoutBytesPerToken.toFixed(3),
  ]));
  console.log(`tokenizer/ has vocab ${s.tokenizers[0]!.vocabSize}; every size round-trips the held-out text exactly\n`);
  table(['task', 'metric', 'train rows', 'held-out rows'], s.tasks.map((t) => [t.name, t.metric, String(t.train), String(t.heldout)]));
}

function table(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  console.log([line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n') + '\n');
}
