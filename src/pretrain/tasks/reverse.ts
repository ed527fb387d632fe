/**
 * A synthetic task with one right answer: reverse the order of 4 to 8 words taken from a KJV
 * verse (punctuation dropped, case kept). The rule is fixed and unseen in pretraining, so a study
 * measures how well each fine-tuning method learns a transformation, by exact match.
 */
import type { Verse } from '../verses.js';
import { mulberry32 } from '../../model/random.js';
import { checkSizes, shuffled, takeDistinct, type TaskInfo, type TaskRow, type TaskSizes, type TaskSplit } from './task.js';

export const REVERSE_INFO: TaskInfo = {
  name: 'reverse',
  description: 'Reverse the order of 4-8 words from a KJV verse (exact match)',
  metric: 'exact',
};

const MIN_WORDS = 4;
const MAX_WORDS = 8;

/**
 * The words of a verse without punctuation (letters, digits and inner apostrophes or hyphens kept).
 *
 * @example
 * plainWords("And God said, Let there be light: and there was light."); // ['And', 'God', 'said', 'Let', ...]
 */
export function plainWords(text: string): string[] {
  return text.split(' ').map((w) => w.replace(/^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu, '')).filter((w) => w !== '');
}

/**
 * The row for a phrase.
 *
 * @example
 * reverseRow(['let', 'there', 'be', 'light']);
 * // { prompt: 'Reverse the words: let there be light\nReversed:', completion: ' light be there let' }
 */
export function reverseRow(phrase: readonly string[]): TaskRow {
  return { prompt: `Reverse the words: ${phrase.join(' ')}\nReversed:`, completion: ` ${[...phrase].reverse().join(' ')}` };
}

/**
 * Train and held-out rows: each from a different verse of its pool, with a seeded length and start.
 *
 * @example
 * const { train, heldout } = buildReverse(pools, { train: 2000, heldout: 200 }, 1);
 */
export function buildReverse(pools: { train: Verse[]; heldout: Verse[] }, sizes: TaskSizes, seed: number): TaskSplit {
  checkSizes(sizes);
  const seen = new Set<string>();
  const rows = (pool: Verse[], n: number, salt: number, what: string): TaskRow[] => {
    const next = mulberry32(seed * 41 + salt);
    // A generator, so only as many verses are cut as the rows need.
    function* candidates(): Generator<TaskRow | undefined> {
      for (const verse of shuffled(pool, seed * 43 + salt)) {
        const words = plainWords(verse.text);
        if (words.length < MIN_WORDS) continue;
        const length = Math.min(words.length, MIN_WORDS + Math.floor(next() * (MAX_WORDS - MIN_WORDS + 1)));
        const start = Math.floor(next() * (words.length - length + 1));
        yield reverseRow(words.slice(start, start + length));
      }
    }
    return takeDistinct(candidates(), n, seen, what);
  };
  const train = rows(pools.train, sizes.train, 1, 'reverse train');
  return { train, heldout: rows(pools.heldout, sizes.heldout, 2, 'reverse held-out') };
}
