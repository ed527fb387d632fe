/**
 * Classification with a verbalizer: which part of the Bible (law, history, wisdom, prophets,
 * gospels, letters) a KJV verse comes from. The label set is in the prompt, the answer is one
 * word, and the classes are balanced, so chance is 1/6 and a study scores accuracy by comparing
 * the six completions' likelihoods.
 */
import { SECTIONS } from '../books.js';
import type { Verse } from '../verses.js';
import { checkSizes, shuffled, takeDistinct, type TaskInfo, type TaskRow, type TaskSizes, type TaskSplit } from './task.js';

export const CLASSIFY_INFO: TaskInfo = {
  name: 'classify',
  description: 'Which part of the Bible a KJV verse is from (6 balanced classes, chance 1/6)',
  metric: 'labels',
  labels: SECTIONS.map((s) => ` ${s}`),
};

/**
 * The prompt and completion for one verse.
 *
 * @example
 * classifyRow(genesis1v1);
 * // { prompt: 'Verse: In the beginning ...\nPart (law, history, wisdom, prophets, gospels, letters):', completion: ' law' }
 */
export function classifyRow(verse: Verse): TaskRow {
  return { prompt: `Verse: ${verse.text}\nPart (${SECTIONS.join(', ')}):`, completion: ` ${verse.book.section}` };
}

/**
 * Balanced train and held-out rows from the two verse pools (see `versePools`).
 *
 * @example
 * const { train, heldout } = buildClassify(pools, { train: 600, heldout: 60 }, 1); // 100 and 10 per class
 */
export function buildClassify(pools: { train: Verse[]; heldout: Verse[] }, sizes: TaskSizes, seed: number): TaskSplit {
  checkSizes(sizes);
  const seen = new Set<string>();
  const balanced = (pool: Verse[], n: number, salt: number): TaskRow[] => {
    const rows: TaskRow[] = [];
    SECTIONS.forEach((section, k) => {
      const quota = Math.floor(n / SECTIONS.length) + (k < n % SECTIONS.length ? 1 : 0);
      const candidates = shuffled(pool.filter((v) => v.book.section === section), seed * 31 + salt * 7 + k).map(classifyRow);
      rows.push(...takeDistinct(candidates, quota, seen, `classify ${section} (${salt === 1 ? 'train' : 'held-out'})`));
    });
    // Interleave the classes, so a prefix of the file is balanced too.
    return shuffled(rows, seed * 31 + salt);
  };
  const train = balanced(pools.train, sizes.train, 1);
  return { train, heldout: balanced(pools.heldout, sizes.heldout, 2) };
}
