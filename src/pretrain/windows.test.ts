import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lineUnits, packUnits, targetTokens } from './windows.js';

test('lines keep their newline and a chapter break stays with the line before it', () => {
  assert.deepEqual(lineUnits('a\nb\n\nc\n'), ['a\n', 'b\n\n', 'c\n']);
  assert.deepEqual(lineUnits('only'), ['only']);
  assert.equal(lineUnits('x\ny\n\nz\n').join(''), 'x\ny\n\nz\n');
});

test('rows start with bos and hold whole units while they fit', () => {
  const rows = packUnits([[5, 6], [7], [8, 9]], 4, 256);
  assert.deepEqual(rows.map((r) => r.inputIds), [[256, 5, 6, 7], [256, 8, 9]]);
  for (const r of rows) assert.deepEqual(r.labels, r.inputIds);
  assert.equal(targetTokens(rows), 5);
});

test('every unit token lands in exactly one row, in order, none longer than seqLen', () => {
  const units = Array.from({ length: 200 }, (_, i) => Array.from({ length: 1 + ((i * 37) % 23) }, (_, j) => i * 100 + j));
  for (const seqLen of [2, 8, 24, 64]) {
    const rows = packUnits(units, seqLen, -1);
    assert.ok(rows.every((r) => r.inputIds.length <= seqLen && r.inputIds[0] === -1 && r.inputIds.length > 1));
    assert.deepEqual(rows.flatMap((r) => r.inputIds.slice(1)), units.flat());
    assert.equal(targetTokens(rows), units.flat().length);
  }
});

test('a unit longer than a row is cut into row-sized pieces', () => {
  const rows = packUnits([[1, 2, 3, 4, 5, 6, 7]], 3, 0);
  assert.deepEqual(rows.map((r) => r.inputIds), [[0, 1, 2], [0, 3, 4], [0, 5, 6], [0, 7]]);
});

test('a row needs room for bos and one token', () => {
  assert.throws(() => packUnits([[1]], 1, 0), /seqLen must be an integer of at least 2, got 1/);
});
