import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { lzwDecode, lzwHeader } from './lzw.js';

// Made with ncompress 4.2.4.6 (`compress -b N -c kjv-sample.txt`); its -b 9 output is corrupt
// (its own uncompress rejects it), so the narrowest width tested is 10.
const FIXTURES = fileURLToPath(new URL('../../test/fixtures/pretrain/', import.meta.url));
const sample = fs.readFileSync(`${FIXTURES}kjv-sample.txt`);

function decodeFile(name: string): Buffer {
  const file = fs.readFileSync(`${FIXTURES}${name}`);
  return Buffer.from(lzwDecode(file.subarray(3), lzwHeader(file)));
}

test('decodes compress output at 10 and 12 bits, where the table fills and is cleared', () => {
  // At these widths the table fills within a few kilobytes, so both streams carry CLEAR codes
  // and several width changes, the two places where the group-skipping rule matters.
  assert.deepEqual(decodeFile('kjv-sample.b10.Z'), sample);
  assert.deepEqual(decodeFile('kjv-sample.b12.Z'), sample);
});

test('decodes a 16-bit stream (the width the BRS data file uses)', () => {
  assert.deepEqual(decodeFile('kjv-sample.chunk0.Z'), sample.subarray(0, 16384));
});

test('reads the header flags and rejects what is not a .Z stream', () => {
  assert.deepEqual(lzwHeader(Uint8Array.of(0x1f, 0x9d, 0x90)), { maxBits: 16, blockMode: true });
  assert.deepEqual(lzwHeader(Uint8Array.of(0x1f, 0x9d, 0x0c)), { maxBits: 12, blockMode: false });
  assert.throws(() => lzwHeader(Uint8Array.of(0x1f, 0x8b, 0x08)), /not a compress/);
  assert.throws(() => lzwHeader(Uint8Array.of(0x1f, 0x9d, 0x98)), /maximum code width 24/);
});

test('a code past the table is an error, not garbage output', () => {
  // 9-bit codes, LSB first: 'A' (65), then 300 while the next free entry is 257.
  const codes = [65, 300];
  let bits = 0n;
  codes.forEach((c, i) => (bits |= BigInt(c) << BigInt(9 * i)));
  const bytes = Uint8Array.from({ length: 3 }, (_, i) => Number((bits >> BigInt(8 * i)) & 0xffn));
  assert.throws(() => lzwDecode(bytes, { maxBits: 16, blockMode: true }), /code 300 is beyond the table \(257\)/);
});
