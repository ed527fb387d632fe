import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { readZText } from './sword-ztext.js';
import { reference } from './verses.js';
import { versesFromEntries } from './web.js';

/** A zText testament holding `entries`, two per compressed block. */
function ztext(entries: string[]): { bzs: Uint8Array; bzv: Uint8Array; bzz: Uint8Array } {
  const bzs: number[] = [];
  const bzv = Buffer.alloc(entries.length * 10);
  const blocks: Buffer[] = [];
  let offset = 0;
  for (let b = 0; b * 2 < entries.length; b++) {
    const texts = entries.slice(b * 2, b * 2 + 2).map((e) => Buffer.from(e));
    let at = 0;
    texts.forEach((t, k) => {
      const e = b * 2 + k;
      bzv.writeUInt32LE(t.length === 0 ? 0 : b, e * 10);
      bzv.writeUInt32LE(t.length === 0 ? 0 : at, e * 10 + 4);
      bzv.writeUInt16LE(t.length, e * 10 + 8);
      at += t.length;
    });
    const raw = Buffer.concat(texts);
    const packed = zlib.deflateSync(raw);
    blocks.push(packed);
    bzs.push(offset, packed.length, raw.length);
    offset += packed.length;
  }
  const index = Buffer.alloc(bzs.length * 4);
  bzs.forEach((n, i) => index.writeUInt32LE(n, i * 4));
  return { bzs: index, bzv, bzz: Buffer.concat(blocks) };
}

const ENTRIES = [
  '',
  '<milestone type="x-importer"/>',
  '<div type="front" sID="a"/> Preface <div type="book" osisID="Gen" sID="b"/><title>Genesis</title>',
  '<chapter n="1" osisID="Gen.1" sID="Gen.1"/>',
  '<w>In</w> <w>the</w> beginning,',
  '',
  'God said, “Let there be light.” <chapter eID="Gen.1"/>',
  '<chapter n="2" osisID="Gen.2" sID="Gen.2"/>',
  'The heavens were finished. <div eID="b" type="book"/> <div type="glossary" sID="g"/> Glossary text',
  '<div type="book" osisID="Tob" sID="t"/>',
  '<chapter n="1" osisID="Tob.1" sID="Tob.1"/>',
  'Tobit verse',
  '<div type="book" osisID="Matt" sID="m"/>',
  '<chapter n="1" osisID="Matt.1" sID="Matt.1"/>',
  'The book of the genealogy',
];

test('reads every entry back from the compressed blocks', () => {
  assert.deepEqual(readZText(ztext(ENTRIES)), ENTRIES);
});

test('verses get book, chapter and verse from the headings; empty slots count, other books and back matter do not', () => {
  const verses = versesFromEntries(readZText(ztext(ENTRIES)));
  assert.deepEqual(verses.map((v) => [reference(v), v.text]), [
    ['Genesis 1:1', 'In the beginning,'],
    ['Genesis 1:3', 'God said, “Let there be light.”'],
    ['Genesis 2:1', 'The heavens were finished.'],
    ['Matthew 1:1', 'The book of the genealogy'],
  ]);
});

test('a damaged index is an error', () => {
  const files = ztext(ENTRIES);
  assert.throws(() => readZText({ ...files, bzv: files.bzv.subarray(0, 15) }), /not multiples of 12 and 10/);
  const bzv = Buffer.from(files.bzv);
  bzv.writeUInt16LE(60000, 4 * 10 + 8);
  assert.throws(() => readZText({ ...files, bzv }), /entry 4 .* runs past its block/);
});
