/**
 * Generation in a second style: continue a verse of the World English Bible, modern English
 * ("you", "Yahweh", curly quotes), where pretraining saw only the KJV ("thee", "the LORD"). The
 * prompt is the previous verse of the chapter (when there is one) and the first half of the verse,
 * the completion the second half; a study scores bits per byte of the completion, or samples.
 */
import type { Verse } from '../verses.js';
import { checkSizes, shuffled, takeDistinct, type TaskInfo, type TaskRow, type TaskSizes, type TaskSplit } from './task.js';

export const STYLE_INFO: TaskInfo = {
  name: 'style',
  description: 'Continue a World English Bible verse (modern English) given the previous verse and its first half',
  metric: 'bits-per-byte',
};

/** Verses shorter than this many words give too little to continue from. */
const MIN_WORDS = 8;

/**
 * The row for `verse`, or undefined when it is too short. The cut is at the middle word; the
 * completion starts with the space, as the byte-level tokenizer attaches spaces to the next word.
 *
 * @example
 * styleRow(genesis1v3, genesis1v2);
 * // { prompt: 'The earth was formless and empty. ...\nGod said, “Let there', completion: ' be light,” and there was light.' }
 */
export function styleRow(verse: Verse, previous: Verse | undefined): TaskRow | undefined {
  const words = verse.text.split(' ');
  if (words.length < MIN_WORDS) return undefined;
  const cut = Math.floor(words.length / 2);
  const context = previous && previous.book === verse.book && previous.chapter === verse.chapter ? `${previous.text}\n` : '';
  return { prompt: context + words.slice(0, cut).join(' '), completion: ` ${words.slice(cut).join(' ')}` };
}

/**
 * Train and held-out rows from WEB verse pools (each pool in canonical order, so a verse's
 * predecessor is the one before it).
 *
 * @example
 * const { train, heldout } = buildStyle(webPools, { train: 2000, heldout: 200 }, 1);
 */
export function buildStyle(pools: { train: Verse[]; heldout: Verse[] }, sizes: TaskSizes, seed: number): TaskSplit {
  checkSizes(sizes);
  const seen = new Set<string>();
  const rows = (pool: Verse[], n: number, salt: number, what: string): TaskRow[] =>
    takeDistinct(shuffled(pool.map((v, i) => styleRow(v, pool[i - 1])), seed * 37 + salt), n, seen, what);
  const train = rows(pools.train, sizes.train, 1, 'style train');
  return { train, heldout: rows(pools.heldout, sizes.heldout, 2, 'style held-out') };
}
