import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseBrsText } from './kjv.js';
import { chaptersOf, layoutChapters, normaliseVerse, reference } from './verses.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/pretrain/', import.meta.url));
// Eleven chapters of the decoded BRS text, title line included (Genesis 1-2, Joshua 7, Psalms 23
// and 117, Isaiah 53, Matthew 5, Mark 10, John 1, Revelation 19 and 22).
const sampleText = fs.readFileSync(`${FIXTURES}kjv-sample.txt`, 'utf8');

test('parses every verse line, dropping the title and the markers', () => {
  const verses = parseBrsText(sampleText);
  assert.equal(verses.length, sampleText.trimEnd().split('\n').length - 1);
  assert.equal(reference(verses[0]!), 'Genesis 1:1');
  assert.equal(verses[0]!.text, 'In the beginning God created the heaven and the earth.');
  assert.equal(reference(verses.at(-1)!), 'Revelation 22:21');
  assert.deepEqual(chaptersOf(verses).map((c) => reference(c)), [
    'Genesis 1', 'Genesis 2', 'Joshua 7', 'Psalms 23', 'Psalms 117', 'Isaiah 53', 'Matthew 5', 'Mark 10', 'John 1', 'Revelation 19', 'Revelation 22',
  ]);
  assert.ok(verses.every((v) => !/^\d|\s\s|^\s|\s$|\n/.test(v.text)), 'no marker, double space or edge space is left');
});

test('normalises the source\'s stray whitespace: Joshua 7:2, Mark 10:19, Revelation 19:3', () => {
  const verses = parseBrsText(sampleText);
  const find = (ref: string) => verses.find((v) => reference(v) === ref)!.text;
  assert.match(find('Joshua 7:2'), /the country\. And the men/);
  assert.match(find('Mark 10:19'), /thy father and mother\.$/);
  assert.match(find('Revelation 19:3'), /Alleluia\. And her smoke/);
});

test('CRLF input parses to the same verses', () => {
  assert.deepEqual(parseBrsText(sampleText.replace(/\n/g, '\r\n')), parseBrsText(sampleText));
});

test('a line that is not a verse, an unknown book or books out of order is an error naming the line', () => {
  assert.throws(() => parseBrsText('title\nGe1:1 In the beginning\nnot a verse\n'), /line 3: not "<book><chapter>:<verse> <text>"/);
  assert.throws(() => parseBrsText('title\nTob1:1 Tobit\n'), /line 2: .*known book/);
  assert.throws(() => parseBrsText('title\nExo1:1 Now these\nGe1:1 In the beginning\n'), /line 3: Genesis after Exodus/);
});

test('normaliseVerse and the chapter layout', () => {
  assert.equal(normaliseVerse(' And God\r\nsaid,\t Let there be light. '), 'And God said, Let there be light.');
  assert.equal(normaliseVerse('cafe\u0301'), 'café', 'NFC');
  const verses = parseBrsText('t\nGe1:1 a\nGe1:2 b\nGe2:1 c\n');
  assert.equal(layoutChapters(chaptersOf(verses)), 'a\nb\n\nc\n');
});
