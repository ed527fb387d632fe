import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Tokenizer } from '@huggingface/tokenizers';
import { byteLevelSpelling, countPieces, preTokenize } from './byte-level.js';
import { trainBpe } from './bpe-trainer.js';
import { tokenizerJson } from './tokenizer-files.js';

// The pre-tokenizer the runtime builds from the tokenizer.json this project writes.
const runtime = new Tokenizer(tokenizerJson(trainBpe(new Map(), { vocabSize: 256, specialTokens: [] })), {}).pre_tokenizer!;

test('pieces match the runtime ByteLevel pre-tokenizer on any text', () => {
  const samples = ['And God said,\nLet there be light:  and there was\tlight.\n\n', "they'll've 1611 “quoted” — 🚀 naïve\r\n  ", ''];
  for (const text of samples) assert.deepEqual(preTokenize(text), runtime.pre_tokenize_text(text), JSON.stringify(text));
  fc.assert(
    fc.property(fc.string({ unit: 'grapheme', maxLength: 40 }), (text) => {
      assert.deepEqual(preTokenize(text), runtime.pre_tokenize_text(text));
    }),
    { numRuns: 300 },
  );
});

test('byte-level spelling: printable ASCII as is, space Ġ, newline Ċ, other bytes past U+00FF', () => {
  assert.equal(byteLevelSpelling(' light'), 'Ġlight');
  assert.equal(byteLevelSpelling('\n'), 'Ċ');
  assert.equal(byteLevelSpelling('é'), 'Ã©');
  assert.deepEqual(preTokenize('And God said,\nLet'), ['And', 'ĠGod', 'Ġsaid', ',', 'Ċ', 'Let']);
});

test('countPieces counts every occurrence across texts', () => {
  const counts = countPieces(['the end', 'the', ' the']);
  assert.equal(counts.get('the'), 2);
  assert.equal(counts.get('Ġthe'), 1);
  assert.equal(counts.get('Ġend'), 1);
  assert.equal([...counts.values()].reduce((a, b) => a + b, 0), 4);
});
