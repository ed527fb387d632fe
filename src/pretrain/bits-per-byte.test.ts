import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { bitsPerByte, natsFromLogprobs, piecesForScoring, utf8Bytes } from './bits-per-byte.js';

test('bits per byte is nats / ln 2 / UTF-8 bytes', () => {
  assert.equal(bitsPerByte(Math.LN2 * 8, 4), 2);
  assert.equal(bitsPerByte(0, 10), 0);
  // A uniform guess over 256 byte values costs exactly 8 bits per byte.
  const text = 'In the beginning';
  assert.ok(Math.abs(bitsPerByte(utf8Bytes(text) * Math.log(256), utf8Bytes(text)) - 8) < 1e-12);
  assert.throws(() => bitsPerByte(1, 0), /positive whole number of bytes/);
  assert.throws(() => bitsPerByte(-1, 5), /non-negative loss/);
  assert.throws(() => bitsPerByte(Number.NaN, 5), /non-negative loss/);
});

test('bytes are UTF-8 bytes, not characters', () => {
  assert.equal(utf8Bytes('“Amen.”'), 11);
  assert.equal(utf8Bytes('🚀'), 4);
  assert.equal(utf8Bytes(''), 0);
});

test('natsFromLogprobs skips the unconditioned first token and sums the rest', () => {
  assert.equal(natsFromLogprobs([null, -0.5, -1.25]), 1.75);
  assert.equal(natsFromLogprobs([null]), 0);
  assert.throws(() => natsFromLogprobs([null, -1, null]), /token 2: expected a log-probability/);
  assert.throws(() => natsFromLogprobs([null, 0.5]), /token 1/);
});

test('pieces for scoring: line-aligned, within the bound, concatenating to the text', () => {
  assert.deepEqual(piecesForScoring('a\nbb\nccc\n', 5), ['a\nbb\n', 'ccc\n']);
  assert.deepEqual(piecesForScoring('abcdefgh', 4), ['abcd', 'efgh'], 'a long line is cut');
  assert.deepEqual(piecesForScoring('', 8), []);
  fc.assert(
    fc.property(fc.string({ unit: 'grapheme', maxLength: 200 }), fc.integer({ min: 4, max: 64 }), (text, max) => {
      const pieces = piecesForScoring(text, max);
      assert.equal(pieces.join(''), text);
      for (const piece of pieces) assert.ok(utf8Bytes(piece) <= max && piece !== '');
    }),
    { numRuns: 300 },
  );
  assert.throws(() => piecesForScoring('x', 3), /maxBytes/);
});
