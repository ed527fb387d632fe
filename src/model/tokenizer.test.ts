import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { IncrementalDecoder, TextTokenizer } from './tokenizer.js';

const FIXTURE = fileURLToPath(new URL('../../test/fixtures/hf-tiny-llama/', import.meta.url));
const reference = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'reference.json'), 'utf8')) as {
  tokenizer_samples: { text: string; ids: number[] }[];
};
const tok = TextTokenizer.fromDirectory(path.join(FIXTURE, 'base'));

const dirs: string[] = [];
after(() => dirs.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-tok-'));
  dirs.push(dir);
  return dir;
}

function streamDecode(ids: number[], skipSpecialTokens = false): string {
  const stream = new IncrementalDecoder(tok, { skipSpecialTokens });
  return ids.map((id) => stream.push(id)).join('') + stream.flush();
}

test('encode matches transformers ids for every reference sample', () => {
  for (const sample of reference.tokenizer_samples) {
    assert.deepEqual(tok.encode(sample.text), sample.ids, sample.text);
  }
});

test('decode round-trips every reference sample', () => {
  for (const sample of reference.tokenizer_samples) {
    assert.equal(tok.decode(sample.ids), sample.text);
  }
});

test('incremental decoding concatenates to decode(), emoji included', () => {
  for (const sample of reference.tokenizer_samples) {
    assert.equal(streamDecode(sample.ids), tok.decode(sample.ids), sample.text);
    assert.equal(streamDecode(sample.ids, true), tok.decode(sample.ids, { skipSpecialTokens: true }), sample.text);
  }
});

test('incremental decoding holds back a partial UTF-8 sequence', () => {
  const rocket = tok.encode('🚀');
  assert.ok(rocket.length > 1, 'the fixture splits the emoji into byte tokens');
  const stream = new IncrementalDecoder(tok);
  const pieces = rocket.map((id) => stream.push(id));
  assert.deepEqual(pieces.slice(0, -1), rocket.slice(0, -1).map(() => ''));
  assert.equal(pieces.at(-1), '🚀');
  assert.equal(stream.flush(), '');
});

test('flush emits a sequence that never completes', () => {
  const [first] = tok.encode('🚀');
  const stream = new IncrementalDecoder(tok);
  assert.equal(stream.push(first!), '');
  assert.equal(stream.flush(), '\uFFFD');
});

test('special tokens: encode ids, skip on decode, optional addition', () => {
  const ids = tok.encode('<|im_start|>user\nhi<|im_end|>');
  assert.equal(ids[0], tok.tokenId('<|im_start|>'));
  assert.equal(ids.at(-1), tok.tokenId('<|im_end|>'));
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), 'user\nhi');
  // The fixture's TemplateProcessing adds nothing, so both settings agree.
  assert.deepEqual(tok.encode('hi', { addSpecialTokens: false }), tok.encode('hi'));
});

test('special-token roles and vocabulary size', () => {
  assert.equal(tok.vocabSize, 512);
  assert.equal(tok.bosTokenId, 0);
  assert.deepEqual(tok.eosTokenIds, [0]);
  assert.equal(tok.padTokenId, 0);
  assert.equal(tok.tokenId('<|im_end|>'), 2);
  assert.equal(tok.tokenId('not-a-token'), undefined);
});

test('decode drops ids past the vocabulary and accepts an empty list', () => {
  assert.equal(tok.decode([]), '');
  assert.equal(tok.decode([42, 100_000, 71]), tok.decode([42, 71]));
});

test('special tokens may be {content} objects and eos may come from generation_config', () => {
  const dir = tempDir();
  fs.copyFileSync(path.join(FIXTURE, 'base', 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
  const config = { bos_token: { content: '<|im_start|>' }, eos_token: { content: '<|im_end|>', special: true } };
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [2, 0] }));
  const custom = TextTokenizer.fromDirectory(dir);
  assert.equal(custom.bosTokenId, 1);
  assert.deepEqual(custom.eosTokenIds, [2, 0]);
  assert.equal(custom.padTokenId, undefined);
  fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: 0 }));
  assert.deepEqual(TextTokenizer.fromDirectory(dir).eosTokenIds, [2, 0]);
});

test('a missing or malformed tokenizer.json is reported by file name', () => {
  const dir = tempDir();
  const file = path.join(dir, 'tokenizer.json');
  assert.throws(() => TextTokenizer.fromDirectory(dir), (err: Error) => err.message.includes(file));
  fs.writeFileSync(file, '{ not json');
  assert.throws(() => TextTokenizer.fromDirectory(dir), (err: Error) => err.message.includes(file) && /malformed/.test(err.message));
  fs.writeFileSync(file, JSON.stringify({ model: null }));
  assert.throws(() => TextTokenizer.fromDirectory(dir), (err: Error) => err.message.includes(file));
});
