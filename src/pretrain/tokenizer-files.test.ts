import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChatTemplate } from '../model/chat-template.js';
import { TextTokenizer } from '../model/tokenizer.js';
import { countPieces } from './byte-level.js';
import { trainBpe } from './bpe-trainer.js';
import { SPECIAL_TOKENS, tokenizerConfigJson, writeTokenizerFiles } from './tokenizer-files.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/pretrain/', import.meta.url));
const sample = fs.readFileSync(`${FIXTURES}kjv-sample.txt`, 'utf8');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-tokfiles-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('the written directory loads like a model\'s, with the embedded model\'s roles and ChatML', () => {
  const model = trainBpe(countPieces([sample]), { vocabSize: 700, specialTokens: SPECIAL_TOKENS });
  writeTokenizerFiles(dir, model);
  const tok = TextTokenizer.fromDirectory(dir);
  assert.equal(tok.vocabSize, 700);
  assert.equal(tok.bosTokenId, tok.tokenId('<|endoftext|>'));
  assert.equal(tok.padTokenId, 256);
  assert.deepEqual(tok.eosTokenIds, [258]);
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  assert.deepEqual(config, tokenizerConfigJson());
  const prompt = new ChatTemplate(config.chat_template as string).render([{ role: 'user', content: 'Who begat Enos?' }], { addGenerationPrompt: true });
  const ids = tok.encode(prompt);
  assert.equal(ids[0], 257);
  assert.equal(tok.decode(ids), prompt);
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), 'user\nWho begat Enos?\nassistant\n');
});

test('no special tokens are added around a plain text', () => {
  const model = trainBpe(countPieces([sample]), { vocabSize: 300, specialTokens: SPECIAL_TOKENS });
  writeTokenizerFiles(dir, model);
  const tok = TextTokenizer.fromDirectory(dir);
  assert.deepEqual(tok.encode('In the beginning'), tok.encode('In the beginning', { addSpecialTokens: false }));
  assert.ok(!tok.encode('In the beginning').some((id) => tok.isSpecial(id)));
});
