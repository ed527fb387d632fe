/**
 * The corpus recipe end to end: read and verify the pinned sources, normalise and split the KJV,
 * train the byte-level BPE tokenizer on the training text, check it round-trips, build the study
 * tasks, and write everything into one directory with a summary. Deterministic: the same sources
 * and options give byte-identical files.
 */
import fs from 'node:fs';
import path from 'node:path';
import { TextTokenizer } from '../model/tokenizer.js';
import { countPieces } from './byte-level.js';
import { trainBpe, type BpeModel } from './bpe-trainer.js';
import { loadKjv } from './kjv.js';
import { KJV_SOURCE, sha256, WEB_SOURCE } from './sources.js';
import { splitChapters, verbatimOverlap, type CorpusSplit } from './split.js';
import { buildClassify, CLASSIFY_INFO } from './tasks/classify.js';
import { buildReverse, REVERSE_INFO } from './tasks/reverse.js';
import { buildStyle, STYLE_INFO } from './tasks/style.js';
import { DEFAULT_TASK_SIZES, taskHeldoutChapters, toJsonl, versePools, type TaskInfo, type TaskSizes, type TaskSplit } from './tasks/task.js';
import { SPECIAL_TOKENS, tokenizerConfigJson, tokenizerJson, writeTokenizerFiles } from './tokenizer-files.js';
import { chaptersOf, layoutChapters, reference, type Chapter, type Verse } from './verses.js';
import { loadWeb } from './web.js';

/** Directory name under the cache; bump the version whenever any written byte changes. */
export const CORPUS_DIRNAME = 'corpus-v1';

export interface PrepareOptions {
  outDir: string;
  /** Prefix of the installed package paths (default '/'); see `readPinned`. */
  sourceRoot?: string;
  /** Vocabulary of the tokenizer written to tokenizer/ (default 4096). */
  vocabSize?: number;
  /** Further vocabulary sizes to train only to report their compression (default none). */
  compareVocabSizes?: number[];
  taskSizes?: TaskSizes;
  /** Seed of the task sampling (default 1). */
  seed?: number;
}

export interface TokenizerReport {
  vocabSize: number;
  merges: number;
  trainSeconds: number;
  trainTokens: number;
  heldoutTokens: number;
  heldoutBytesPerToken: number;
}

export interface CorpusSummary {
  sources: { package: string; version: string; licence: string; files: { path: string; sha256: string }[] }[];
  kjv: {
    verses: number;
    chapters: number;
    trainBytes: number;
    heldoutBytes: number;
    heldoutShare: number;
    heldoutChapters: string[];
    heldoutVersesAlsoInTrain: number;
    trainSha256: string;
    heldoutSha256: string;
  };
  web: { verses: number };
  tokenizers: TokenizerReport[];
  tasks: { name: string; metric: TaskInfo['metric']; train: number; heldout: number }[];
}

/**
 * Builds the corpus into `options.outDir` (replaced whole; written in a temporary sibling and
 * renamed, so an interrupted run leaves no half directory) and returns its summary. Throws a
 * SourceError when a package is missing or differs from the pinned one.
 *
 * @example
 * const summary = prepareCorpus({ outDir: '.cache/deltaserve/corpus-v1', compareVocabSizes: [1024, 2048] });
 * summary.tokenizers[0].heldoutBytesPerToken; // ~3.9 at 4096
 */
export function prepareCorpus(options: PrepareOptions): CorpusSummary {
  const root = options.sourceRoot ?? '/';
  const vocabSize = options.vocabSize ?? 4096;
  const kjv = loadKjv(root);
  const web = loadWeb(root);
  const chapters = chaptersOf(kjv);
  const split = splitChapters(chapters);
  const trainText = layoutChapters(split.train);
  const heldoutText = layoutChapters(split.heldout);
  // Non-ASCII text (curly quotes, dashes) for the round-trip check, which the KJV lacks.
  const webCheckText = layoutChapters(chaptersOf(web).slice(0, 50));

  return intoFreshDirectory(options.outDir, (dir) => {
    const write = (file: string, content: string) => {
      fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
      fs.writeFileSync(path.join(dir, file), content);
    };
    write('kjv/train.txt', trainText);
    write('kjv/heldout.txt', heldoutText);

    const pieces = countPieces([trainText]);
    const sizes = [vocabSize, ...(options.compareVocabSizes ?? []).filter((v) => v !== vocabSize)];
    const tokenizers = sizes.map((size) => {
      const { model, report } = trainAndCheck(pieces, size, trainText, [heldoutText, webCheckText]);
      if (size === vocabSize) writeTokenizerFiles(path.join(dir, 'tokenizer'), model);
      return report;
    });

    const tasks = buildTasks(kjv, web, chapters, split.heldout, options.taskSizes ?? DEFAULT_TASK_SIZES, options.seed ?? 1);
    for (const { info, rows } of tasks) {
      write(`tasks/${info.name}/train.jsonl`, toJsonl(rows.train));
      write(`tasks/${info.name}/heldout.jsonl`, toJsonl(rows.heldout));
      write(`tasks/${info.name}/task.json`, `${JSON.stringify(info, null, 2)}\n`);
    }

    const summary: CorpusSummary = {
      sources: [KJV_SOURCE, WEB_SOURCE].map((s) => ({ package: s.package, version: s.version, licence: s.licence, files: s.files.map((f) => ({ ...f })) })),
      kjv: kjvSummary(kjv.length, chapters.length, split, trainText, heldoutText),
      web: { verses: web.length },
      tokenizers,
      tasks: tasks.map(({ info, rows }) => ({ name: info.name, metric: info.metric, train: rows.train.length, heldout: rows.heldout.length })),
    };
    // Timings differ run to run, so the file keeps them out and stays byte-identical.
    const stable = { ...summary, tokenizers: tokenizers.map(({ trainSeconds: _, ...rest }) => rest) };
    write('summary.json', `${JSON.stringify(stable, null, 2)}\n`);
    return summary;
  });
}

/**
 * Runs `build` on a temporary sibling of `outDir`, then replaces `outDir` with it, so an
 * interrupted run leaves no half-written directory; the temporary one is removed on failure.
 */
function intoFreshDirectory<T>(outDir: string, build: (dir: string) => T): T {
  const parent = path.dirname(path.resolve(outDir));
  fs.mkdirSync(parent, { recursive: true });
  const temp = fs.mkdtempSync(path.join(parent, `.${path.basename(outDir)}.tmp-`));
  try {
    const result = build(temp);
    fs.rmSync(outDir, { recursive: true, force: true });
    fs.renameSync(temp, outDir);
    return result;
  } catch (err) {
    fs.rmSync(temp, { recursive: true, force: true });
    throw err;
  }
}

function kjvSummary(verses: number, chapters: number, split: CorpusSplit, trainText: string, heldoutText: string): CorpusSummary['kjv'] {
  const trainBytes = Buffer.byteLength(trainText);
  const heldoutBytes = Buffer.byteLength(heldoutText);
  return {
    verses,
    chapters,
    trainBytes,
    heldoutBytes,
    heldoutShare: heldoutBytes / (trainBytes + heldoutBytes),
    heldoutChapters: split.heldout.map((c) => reference(c)),
    heldoutVersesAlsoInTrain: verbatimOverlap(split).verses,
    trainSha256: sha256(trainText),
    heldoutSha256: sha256(heldoutText),
  };
}

/**
 * Trains one vocabulary size, loads the result through src/model/tokenizer.ts, and checks that
 * it reproduces the trainer's token count on the training text and round-trips every check text
 * exactly. Throws if not: a tokenizer that fails either is broken, not merely worse.
 */
function trainAndCheck(pieces: Map<string, number>, vocabSize: number, trainText: string, checkTexts: string[]): { model: BpeModel; report: TokenizerReport } {
  const started = performance.now();
  const model = trainBpe(pieces, { vocabSize, specialTokens: SPECIAL_TOKENS });
  const trainSeconds = (performance.now() - started) / 1000;
  const tok = new TextTokenizer({ tokenizer: tokenizerJson(model), config: tokenizerConfigJson() });
  const trainTokens = tok.encode(trainText).length;
  if (trainTokens !== model.trainingTokens) {
    throw new Error(`tokenizer ${vocabSize}: the runtime encodes the training text to ${trainTokens} tokens, the trainer counted ${model.trainingTokens}`);
  }
  const [heldoutText] = checkTexts;
  let heldoutTokens = 0;
  for (const text of checkTexts) {
    const ids = tok.encode(text);
    if (tok.decode(ids) !== text) throw new Error(`tokenizer ${vocabSize}: decode(encode(text)) differs from the text`);
    if (text === heldoutText) heldoutTokens = ids.length;
  }
  const report = {
    vocabSize: model.vocab.length,
    merges: model.merges.length,
    trainSeconds,
    trainTokens,
    heldoutTokens,
    heldoutBytesPerToken: Buffer.byteLength(heldoutText ?? '') / heldoutTokens,
  };
  return { model, report };
}

function buildTasks(kjv: Verse[], web: Verse[], chapters: Chapter[], corpusHeldout: Chapter[], sizes: TaskSizes, seed: number): { info: TaskInfo; rows: TaskSplit }[] {
  const held = taskHeldoutChapters(chapters, corpusHeldout);
  const kjvPools = versePools(kjv, held);
  return [
    { info: CLASSIFY_INFO, rows: buildClassify(kjvPools, sizes, seed) },
    { info: STYLE_INFO, rows: buildStyle(versePools(web, held), sizes, seed) },
    { info: REVERSE_INFO, rows: buildReverse(kjvPools, sizes, seed) },
  ];
}
