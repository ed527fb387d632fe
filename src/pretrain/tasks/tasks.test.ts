import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ChatTemplate, DEFAULT_CHAT_TEMPLATE } from '../../model/chat-template.js';
import { TextTokenizer } from '../../model/tokenizer.js';
import { parseTrainingJsonl } from '../../training/dataset.js';
import { SECTIONS } from '../books.js';
import { countPieces } from '../byte-level.js';
import { trainBpe } from '../bpe-trainer.js';
import { parseBrsText } from '../kjv.js';
import { SPECIAL_TOKENS, tokenizerConfigJson, tokenizerJson } from '../tokenizer-files.js';
import { chaptersOf, type Verse } from '../verses.js';
import { buildClassify, CLASSIFY_INFO } from './classify.js';
import { buildReverse, plainWords } from './reverse.js';
import { buildStyle, styleRow } from './style.js';
import { chapterKey, shuffled, takeDistinct, taskHeldoutChapters, toJsonl, versePools, type TaskSplit } from './task.js';

const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/pretrain/', import.meta.url));
const sampleText = fs.readFileSync(`${FIXTURES}kjv-sample.txt`, 'utf8');
const verses = parseBrsText(sampleText);
// Every section in both pools: every third verse is held out (the real split is by chapter).
const pools = { train: verses.filter((v) => v.verse % 3 !== 0), heldout: verses.filter((v) => v.verse % 3 === 0) };
const sizes = { train: 24, heldout: 12 };

function assertShape(split: TaskSplit, expected: { train: number; heldout: number }): void {
  assert.equal(split.train.length, expected.train);
  assert.equal(split.heldout.length, expected.heldout);
  for (const row of [...split.train, ...split.heldout]) {
    assert.deepEqual(Object.keys(row), ['prompt', 'completion']);
    assert.ok(row.prompt.length > 0 && row.completion.length > 1);
    assert.ok(row.completion.startsWith(' ') && !row.completion.startsWith('  '), 'one leading space, as the tokenizer attaches it');
  }
  const train = new Set(split.train.map((r) => r.prompt));
  assert.equal(train.size, split.train.length, 'no repeated training prompt');
  assert.ok(split.heldout.every((r) => !train.has(r.prompt)), 'no held-out prompt among the training prompts');
}

test('classification: balanced classes answered by the verbalizer words', () => {
  const split = buildClassify(pools, sizes, 1);
  assertShape(split, sizes);
  for (const rows of [split.train, split.heldout]) {
    const perLabel = new Map<string, number>();
    for (const r of rows) perLabel.set(r.completion, (perLabel.get(r.completion) ?? 0) + 1);
    assert.deepEqual([...perLabel.keys()].sort(), [...CLASSIFY_INFO.labels!].sort());
    assert.deepEqual(new Set(perLabel.values()).size, 1, `balanced: ${[...perLabel.values()]}`);
  }
  const row = split.train[0]!;
  const verse = verses.find((v) => row.prompt === `Verse: ${v.text}\nPart (${SECTIONS.join(', ')}):`);
  assert.ok(verse, 'the prompt is a verse and the label set');
  assert.equal(row.completion, ` ${verse.book.section}`);
});

test('style: the prompt ends with the first half of a verse, the completion is the rest', () => {
  const split = buildStyle(pools, sizes, 1);
  assertShape(split, sizes);
  const texts = new Set(verses.map((v) => v.text));
  for (const row of split.train) {
    const lines = row.prompt.split('\n');
    assert.ok(lines.length <= 2);
    assert.ok(texts.has(lines.at(-1)! + row.completion), 'head + completion is the whole verse');
    if (lines.length === 2) assert.ok(texts.has(lines[0]!), 'the context line is the previous verse');
  }
  const [a, b] = verses as [Verse, Verse];
  assert.equal(styleRow(b, a)?.prompt.split('\n')[0], a.text);
  assert.equal(styleRow({ ...a, text: 'Too short to continue.' }, undefined), undefined);
});

test('reverse: the completion is the prompt\'s words backwards', () => {
  const split = buildReverse(pools, sizes, 1);
  assertShape(split, sizes);
  for (const row of split.heldout) {
    const words = /^Reverse the words: (.*)\nReversed:$/.exec(row.prompt)![1]!.split(' ');
    assert.ok(words.length >= 4 && words.length <= 8, `${words.length} words`);
    assert.equal(row.completion, ` ${[...words].reverse().join(' ')}`);
  }
  assert.deepEqual(plainWords('And God said, Let there be light: and (so) it was.'), ['And', 'God', 'said', 'Let', 'there', 'be', 'light', 'and', 'so', 'it', 'was']);
});

test('builders are deterministic per seed', () => {
  for (const build of [buildClassify, buildStyle, buildReverse]) {
    assert.deepEqual(build(pools, sizes, 7), build(pools, sizes, 7));
    assert.notDeepEqual(build(pools, sizes, 7), build(pools, sizes, 8));
  }
  assert.deepEqual(shuffled([1, 2, 3, 4, 5], 3), shuffled([1, 2, 3, 4, 5], 3));
  assert.deepEqual(shuffled([1, 2, 3, 4, 5], 3).sort(), [1, 2, 3, 4, 5]);
});

test('asking for more rows than the pool holds, or for no rows, is an error', () => {
  assert.throws(() => buildStyle(pools, { train: 5000, heldout: 1 }, 1), /style train: only \d+ distinct rows available, 5000 wanted/);
  assert.throws(() => buildReverse(pools, { train: 0, heldout: 1 }, 1), /task size 'train' must be a positive integer/);
  assert.throws(() => takeDistinct([{ prompt: 'a', completion: ' b' }, { prompt: 'a', completion: ' c' }], 2, new Set(), 'x'), /x: only 1 distinct rows/);
});

test('task held-out pools are whole chapters: every tenth, plus the corpus held-out ones', () => {
  const chapters = chaptersOf(verses);
  const held = taskHeldoutChapters(chapters, [chapters[0]!]);
  assert.deepEqual([...held].sort(), [chapterKey(chapters[0]!), chapterKey(chapters[5]!)].sort());
  const split = versePools(verses, held);
  assert.equal(split.train.length + split.heldout.length, verses.length);
  assert.ok(split.heldout.every((v) => held.has(chapterKey(v))) && split.train.every((v) => !held.has(chapterKey(v))));
});

test('the JSONL is accepted by the fine-tuning API\'s parser, loss on the completion only', () => {
  const model = trainBpe(countPieces([sampleText]), { vocabSize: 512, specialTokens: SPECIAL_TOKENS });
  const tokenizer = new TextTokenizer({ tokenizer: tokenizerJson(model), config: tokenizerConfigJson() });
  const chatTemplate = new ChatTemplate(DEFAULT_CHAT_TEMPLATE);
  for (const build of [buildClassify, buildStyle, buildReverse]) {
    const { train } = build(pools, sizes, 1);
    const jsonl = toJsonl(train);
    assert.equal(jsonl.split('\n').length, train.length + 1);
    const rows = parseTrainingJsonl(jsonl, { tokenizer, chatTemplate, vocabSize: 512, maxLength: 512 });
    assert.equal(rows.length, train.length);
    rows.forEach((row, i) => {
      const learned = row.labels.filter((l) => l !== -100);
      assert.deepEqual(learned, [...tokenizer.encode(train[i]!.completion), 258], 'completion then <|im_end|>');
    });
  }
});
