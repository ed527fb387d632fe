import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { TextTokenizer } from '../model/tokenizer.js';
import { countPieces } from './byte-level.js';
import { trainBpe, type BpeModel } from './bpe-trainer.js';
import { SPECIAL_TOKENS, tokenizerConfigJson, tokenizerJson } from './tokenizer-files.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/pretrain/', import.meta.url));
const sample = fs.readFileSync(`${FIXTURES}kjv-sample.txt`, 'utf8');

/**
 * The oracle: plain BPE that recounts every pair of every piece before each merge, with the same
 * tie rule (tokens compared as strings). Slow, and too simple to get the incremental update wrong.
 */
function naiveMerges(pieces: ReadonlyMap<string, number>, count: number): [string, string][] {
  const words = [...pieces].map(([piece, freq]) => ({ symbols: Array.from(piece), freq }));
  const merges: [string, string][] = [];
  while (merges.length < count) {
    const counts = new Map<string, { pair: [string, string]; n: number }>();
    for (const { symbols, freq } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = JSON.stringify([symbols[i], symbols[i + 1]]);
        const entry = counts.get(key) ?? { pair: [symbols[i]!, symbols[i + 1]!], n: 0 };
        entry.n += freq;
        counts.set(key, entry);
      }
    }
    const best = [...counts.values()].sort((a, b) => b.n - a.n || (a.pair[0] < b.pair[0] ? -1 : a.pair[0] > b.pair[0] ? 1 : a.pair[1] < b.pair[1] ? -1 : a.pair[1] > b.pair[1] ? 1 : 0))[0]!;
    merges.push(best.pair);
    for (const word of words) {
      const out: string[] = [];
      for (let i = 0; i < word.symbols.length; i++) {
        if (word.symbols[i] === best.pair[0] && word.symbols[i + 1] === best.pair[1]) out.push(best.pair[0] + best.pair[1]), i++;
        else out.push(word.symbols[i]!);
      }
      word.symbols = out;
    }
  }
  return merges;
}

const load = (model: BpeModel) => new TextTokenizer({ tokenizer: tokenizerJson(model), config: tokenizerConfigJson() });

test('merges the most frequent pair first and stops below the minimum frequency', () => {
  // Pieces: "ab", " ab" twice, " abc". (a,b) occurs 4 times, then ( ,ab) 3 times; (ab,c) once.
  const model = trainBpe(countPieces(['ab ab ab abc']), { vocabSize: 1000, specialTokens: ['<|endoftext|>'] });
  assert.deepEqual(model.merges, [['a', 'b'], ['Ġ', 'ab']]);
  assert.deepEqual(model.vocab.slice(256), ['<|endoftext|>', 'ab', 'Ġab']);
  assert.equal(model.trainingTokens, 1 + 2 + 2);
});

test('ties go to the pair whose tokens sort first, whatever the input order', () => {
  const options = { vocabSize: 1000, specialTokens: [] };
  const a = trainBpe(new Map([['cd', 2], ['ab', 2]]), options);
  const b = trainBpe(new Map([['ab', 2], ['cd', 2]]), options);
  assert.deepEqual(a.merges, [['a', 'b'], ['c', 'd']]);
  assert.deepEqual(a, b);
});

test('repeated symbols merge left to right, as the runtime applies merges', () => {
  const model = trainBpe(new Map([['aaa', 2]]), { vocabSize: 257, specialTokens: [] });
  assert.deepEqual(model.merges, [['a', 'a']]);
  assert.equal(model.trainingTokens, 4, '"aaa" becomes "aa" + "a"');
  assert.deepEqual(load(model).encode('aaa').map((id) => model.vocab[id]), ['aa', 'a']);
});

test('on real text: deterministic, within the vocabulary bound, and the runtime reproduces it', () => {
  const pieces = countPieces([sample]);
  const model = trainBpe(pieces, { vocabSize: 600, specialTokens: SPECIAL_TOKENS });
  assert.deepEqual(trainBpe(pieces, { vocabSize: 600, specialTokens: SPECIAL_TOKENS }), model);
  assert.equal(model.vocab.length, 600);
  assert.equal(new Set(model.vocab).size, 600, 'no token twice');
  assert.deepEqual(model.merges, naiveMerges(pieces, model.merges.length), 'same merges as recounting everything each step');
  const tok = load(model);
  assert.equal(tok.vocabSize, 600);
  // Equal counts mean the runtime split every piece exactly as training did.
  assert.equal(tok.encode(sample).length, model.trainingTokens);
  assert.ok(model.trainingTokens < Buffer.byteLength(sample) / 2.5, `compression: ${Buffer.byteLength(sample) / model.trainingTokens} bytes/token`);
});

test('encode then decode gives back any text exactly, untrained characters included', () => {
  const tok = load(trainBpe(countPieces([sample]), { vocabSize: 512, specialTokens: SPECIAL_TOKENS }));
  const texts = [sample, 'Tabs\tand  double spaces, trailing space \n\n\nCRLF\r\n', '“Curly” ‘quotes’ — 🚀 naïve 日本語 ﬁ', ' leading', ''];
  for (const text of texts) assert.equal(tok.decode(tok.encode(text)), text, JSON.stringify(text.slice(0, 30)));
});

test('special tokens follow the byte symbols and encode as one id', () => {
  const model = trainBpe(countPieces([sample]), { vocabSize: 400, specialTokens: SPECIAL_TOKENS });
  assert.deepEqual(model.specialIds, [256, 257, 258]);
  const tok = load(model);
  assert.deepEqual(tok.encode('<|im_start|>'), [257]);
  assert.equal(tok.bosTokenId, 256);
  assert.deepEqual(tok.eosTokenIds, [258]);
  assert.ok(tok.isSpecial(258));
});

test('a vocabulary too small for the bytes and special tokens, or a repeated special token, is refused', () => {
  assert.throws(() => trainBpe(new Map(), { vocabSize: 258, specialTokens: SPECIAL_TOKENS }), /smaller than the 259/);
  assert.throws(() => trainBpe(new Map(), { vocabSize: 300, specialTokens: ['<s>', '<s>'] }), /listed twice/);
  assert.throws(() => trainBpe(new Map([['a b', 1]]), { vocabSize: 300, specialTokens: [] }), /not in byte-level spelling/);
});
