/**
 * What the study tasks share: rows in the fine-tuning API's `{"prompt", "completion"}` shape,
 * split by chapter, sampled with a seed, written as JSONL.
 *
 * Task rows are split by chapter, not by verse: a held-out row never sits in the same chapter as
 * a training row, so its neighbours cannot give its answer away. The pretraining held-out
 * chapters are always on the held-out side, so no fine-tuning row trains on them either.
 */
import { mulberry32 } from '../../model/random.js';
import type { Chapter, Verse } from '../verses.js';

/** One line of a fine-tuning file (docs/api.md: loss on the completion and an end-of-sequence token). */
export interface TaskRow {
  prompt: string;
  completion: string;
}

export interface TaskSizes {
  train: number;
  heldout: number;
}

export interface TaskSplit {
  train: TaskRow[];
  heldout: TaskRow[];
}

/** What a study needs to know besides the rows: how to score them. */
export interface TaskInfo {
  name: string;
  description: string;
  /** `labels`: pick the most likely of `labels` as completion (accuracy); `exact`: greedy decode equals the completion; `bits-per-byte`: of the completion. */
  metric: 'labels' | 'exact' | 'bits-per-byte';
  /** The verbalizer's completions, for `labels`. */
  labels?: string[];
}

export const DEFAULT_TASK_SIZES: TaskSizes = { train: 2000, heldout: 200 };
/** For CI and smoke runs (`--quick`). */
export const QUICK_TASK_SIZES: TaskSizes = { train: 64, heldout: 32 };

/** Every tenth chapter (from the sixth) is a task held-out chapter, besides the corpus held-out ones. */
const HELDOUT_STRIDE = 10;
const HELDOUT_PHASE = 5;

/** Chapter identity across texts: the KJV and WEB agree on book and chapter numbers. */
export function chapterKey(c: { book: { index: number }; chapter: number }): string {
  return `${c.book.index}.${c.chapter}`;
}

/**
 * The chapters whose verses feed task held-out rows: every tenth chapter of `chapters` (the KJV's,
 * in canonical order) and every chapter of the corpus held-out split.
 *
 * @example
 * const held = taskHeldoutChapters(chaptersOf(kjv), split.heldout); // ~130 of 1189 chapters
 */
export function taskHeldoutChapters(chapters: readonly Chapter[], corpusHeldout: readonly Chapter[]): Set<string> {
  const keys = new Set(corpusHeldout.map(chapterKey));
  chapters.forEach((c, i) => {
    if (i % HELDOUT_STRIDE === HELDOUT_PHASE) keys.add(chapterKey(c));
  });
  return keys;
}

/**
 * Verses split into the pools task rows are drawn from.
 *
 * @example
 * const { train, heldout } = versePools(kjv, held);
 */
export function versePools(verses: readonly Verse[], heldoutChapters: ReadonlySet<string>): { train: Verse[]; heldout: Verse[] } {
  return {
    train: verses.filter((v) => !heldoutChapters.has(chapterKey(v))),
    heldout: verses.filter((v) => heldoutChapters.has(chapterKey(v))),
  };
}

/**
 * A seeded Fisher–Yates shuffle (a copy): the same seed gives the same order on every machine.
 *
 * @example
 * shuffled([1, 2, 3, 4], 7); // a fixed permutation
 */
export function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  const next = mulberry32(seed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/**
 * The first `n` candidates whose prompts are not in `seen` (and not repeated), adding them to
 * `seen`. Building the training rows first and the held-out rows with the same `seen` keeps every
 * held-out prompt out of the training rows (short phrases and whole verses recur in the Bible),
 * so held-out scores measure generalisation. Throws when the candidates run out, naming `what`.
 *
 * @example
 * const seen = new Set<string>();
 * const train = takeDistinct(trainCandidates, 100, seen, 'style train');
 * const heldout = takeDistinct(heldoutCandidates, 10, seen, 'style held-out');
 */
export function takeDistinct(candidates: Iterable<TaskRow | undefined>, n: number, seen: Set<string>, what: string): TaskRow[] {
  const rows: TaskRow[] = [];
  for (const row of candidates) {
    if (rows.length === n) break;
    if (!row || seen.has(row.prompt)) continue;
    seen.add(row.prompt);
    rows.push(row);
  }
  if (rows.length < n) throw new Error(`${what}: only ${rows.length} distinct rows available, ${n} wanted`);
  return rows;
}

/**
 * Rows as JSONL, one object per line with exactly `prompt` and `completion`.
 *
 * @example
 * toJsonl([{ prompt: 'a', completion: ' b' }]); // '{"prompt":"a","completion":" b"}\n'
 */
export function toJsonl(rows: readonly TaskRow[]): string {
  return rows.map((r) => `${JSON.stringify({ prompt: r.prompt, completion: r.completion })}\n`).join('');
}

/** Checks sizes once, so every builder fails the same way on a bad request. */
export function checkSizes(sizes: TaskSizes): void {
  for (const [name, n] of Object.entries(sizes)) {
    if (!Number.isInteger(n) || n < 1) throw new Error(`task size '${name}' must be a positive integer, got ${n}`);
  }
}
