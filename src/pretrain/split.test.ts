import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BOOKS } from './books.js';
import { splitChapters, verbatimOverlap } from './split.js';
import { layoutChapters, type Chapter } from './verses.js';

/** `n` chapters of varied length with distinct text, all in Genesis for simplicity. */
function chapters(n: number): Chapter[] {
  const book = BOOKS[0]!;
  return Array.from({ length: n }, (_, i) => ({
    book,
    chapter: i + 1,
    verses: Array.from({ length: 5 + ((i * 7) % 13) }, (_, j) => ({ book, chapter: i + 1, verse: j + 1, text: `chapter ${i} verse ${j} ${'word '.repeat(j % 9)}end` })),
  }));
}

const bytes = (cs: readonly Chapter[]) => Buffer.byteLength(layoutChapters(cs));

test('held-out is whole chapters, disjoint from train, in a few runs, near the fraction', () => {
  const all = chapters(1000);
  const split = splitChapters(all, { fraction: 0.01, runs: 8 });
  assert.equal(split.train.length + split.heldout.length, all.length);
  const held = new Set(split.heldout);
  assert.ok(split.train.every((c) => !held.has(c)));
  assert.deepEqual([...split.train, ...split.heldout].sort((a, b) => a.chapter - b.chapter), all, 'nothing lost or duplicated');
  const share = bytes(split.heldout) / bytes(all);
  assert.ok(share > 0.008 && share < 0.012, `share ${share}`);
  const starts = split.heldout.filter((c, i) => i === 0 || split.heldout[i - 1]!.chapter !== c.chapter - 1);
  assert.ok(starts.length <= 8, `${starts.length} runs`);
  assert.ok(starts[0]!.chapter > 1 && split.heldout.at(-1)!.chapter < 1000, 'runs are spread, not at the ends');
});

test('the split is a function of the chapters alone', () => {
  assert.deepEqual(splitChapters(chapters(300)), splitChapters(chapters(300)));
  const a = splitChapters(chapters(300), { runs: 4 }).heldout.map((c) => c.chapter);
  const b = splitChapters(chapters(300), { runs: 5 }).heldout.map((c) => c.chapter);
  assert.notDeepEqual(a, b);
});

test('bad options are refused', () => {
  assert.throws(() => splitChapters(chapters(10), { fraction: 0.7 }), /fraction must be in/);
  assert.throws(() => splitChapters(chapters(10), { runs: 0 }), /runs must be a positive integer/);
});

test('verbatimOverlap counts held-out verses that also occur in train', () => {
  const all = chapters(100);
  const split = splitChapters(all, { fraction: 0.05, runs: 2 });
  assert.deepEqual(verbatimOverlap(split), { verses: 0, share: 0 });
  const copied = split.heldout[0]!.verses[0]!;
  split.train[0]!.verses.push({ ...copied });
  assert.equal(verbatimOverlap(split).verses, 1);
});
