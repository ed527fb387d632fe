import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openCheckpoint } from './checkpoint.js';
import { ChatTemplate, DEFAULT_CHAT_TEMPLATE } from './chat-template.js';
import { EMBEDDED_MODEL_DIRNAME, byteLevelAlphabet, ensureEmbeddedModel, writeEmbeddedModel } from './embedded.js';
import { seededNormal } from './random.js';
import { readSafetensorsHeader, readTensorF32 } from './safetensors.js';
import { IncrementalDecoder, TextTokenizer } from './tokenizer.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-embedded-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
const dir = path.join(root, 'a');
writeEmbeddedModel(dir);
const tok = TextTokenizer.fromDirectory(dir);
const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));

test('two writes produce byte-identical files', () => {
  const again = path.join(root, 'b');
  writeEmbeddedModel(again);
  const names = fs.readdirSync(dir).sort();
  assert.deepEqual(names, ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  assert.deepEqual(fs.readdirSync(again).sort(), names);
  for (const name of names) {
    assert.ok(fs.readFileSync(path.join(dir, name)).equals(fs.readFileSync(path.join(again, name))), name);
  }
});

// The cache directory is keyed by EMBEDDED_MODEL_DIRNAME only, so caches written by an older
// build would silently be reused: any change here must come with a new directory version.
test('bytes match the pinned v1 digests (same on every machine)', () => {
  const pinned: Record<string, string> = {
    'config.json': 'b23cb7555d06328f8c58c0f6e0c36ad5891416638e6e2e3f72b3aa5a797c374c',
    'generation_config.json': 'c869a39a71be0d90ca4c59817a8d56b1429fb8de791263adcfd38fdc54a5e6a8',
    'model.safetensors': 'b9d623e43da0d95acc1d1cb1025bf78db868679676414721ce51b57a242e594c',
    'tokenizer.json': '9bd8c3bbae53094931071e07e1436c97a398b37eb5209c34256be6366b55b509',
    'tokenizer_config.json': '254a46176cd7c767f2206239d651568c59728d7138b30a1667664ea9ec49aa85',
  };
  assert.equal(EMBEDDED_MODEL_DIRNAME, 'embedded-llama-v1', 'update the digests together with the version');
  for (const [name, digest] of Object.entries(pinned)) {
    const actual = createHash('sha256').update(fs.readFileSync(path.join(dir, name))).digest('hex');
    assert.equal(actual, digest, `${name} changed: bump EMBEDDED_MODEL_DIRNAME and update this digest`);
  }
});

test('tokenizer round-trips UTF-8 with special tokens as single ids', () => {
  const text = 'héllo 🚀 <|im_start|>user';
  const ids = tok.encode(text);
  assert.equal(ids.filter((id) => id === tok.tokenId('<|im_start|>')).length, 1);
  assert.equal(ids.length, [...new TextEncoder().encode('héllo 🚀 ')].length + 1 + 'user'.length);
  assert.equal(tok.decode(ids), text);
  const stream = new IncrementalDecoder(tok);
  assert.equal(ids.map((id) => stream.push(id)).join('') + stream.flush(), text);
});

test('every byte is one token, so any string round-trips', () => {
  const samples = ['', ' ', '\u0000\t\r\n\u007f', '日本語のテキスト', '👩‍👩‍👧 family, 🇫🇷 flag', 'a\uD7FF\uE000\uFFFD z'];
  for (const text of samples) {
    const ids = tok.encode(text);
    assert.equal(ids.length, new TextEncoder().encode(text).length, JSON.stringify(text));
    assert.equal(tok.decode(ids), text);
  }
});

test('byte tokens follow GPT-2 bytes_to_unicode order', () => {
  const alphabet = byteLevelAlphabet();
  assert.equal(new Set(alphabet.map((a) => a.byte)).size, 256);
  assert.deepEqual(alphabet.slice(0, 2), [{ byte: 33, symbol: '!' }, { byte: 34, symbol: '"' }]);
  assert.deepEqual(alphabet[188], { byte: 0, symbol: '\u0100' });
  assert.equal(tok.tokenId('Ġ'), alphabet.findIndex((a) => a.byte === 0x20));
});

test('special-token roles, chat template and config agree', () => {
  const [endoftext, imStart, imEnd] = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'].map((t) => tok.tokenId(t));
  assert.deepEqual([endoftext, imStart, imEnd], [256, 257, 258]);
  assert.equal(tok.bosTokenId, config.bos_token_id);
  assert.deepEqual(tok.eosTokenIds, [imEnd, endoftext]);
  assert.equal(tok.eosTokenIds[0], config.eos_token_id);
  assert.equal(tok.padTokenId, config.pad_token_id);
  assert.ok(tok.vocabSize <= config.vocab_size);
  assert.equal(ChatTemplate.fromDirectory(dir)?.source, DEFAULT_CHAT_TEMPLATE);
});

test('config fields are consistent with tensor shapes', () => {
  const header = readSafetensorsHeader(path.join(dir, 'model.safetensors'));
  const shape = (name: string) => header.tensors.get(name)?.shape;
  const { hidden_size: h, intermediate_size: m, num_attention_heads: nh, num_key_value_heads: nkv, head_dim: hd } = config;
  assert.equal(config.architectures[0], 'LlamaForCausalLM');
  assert.equal(config.tie_word_embeddings, true);
  assert.deepEqual(shape('model.embed_tokens.weight'), [config.vocab_size, h]);
  assert.equal(shape('lm_head.weight'), undefined);
  assert.deepEqual(shape('model.norm.weight'), [h]);
  for (let i = 0; i < config.num_hidden_layers; i++) {
    const p = `model.layers.${i}`;
    assert.deepEqual(shape(`${p}.self_attn.q_proj.weight`), [nh * hd, h]);
    assert.deepEqual(shape(`${p}.self_attn.k_proj.weight`), [nkv * hd, h]);
    assert.deepEqual(shape(`${p}.self_attn.v_proj.weight`), [nkv * hd, h]);
    assert.deepEqual(shape(`${p}.self_attn.o_proj.weight`), [h, nh * hd]);
    assert.deepEqual(shape(`${p}.mlp.gate_proj.weight`), [m, h]);
    assert.deepEqual(shape(`${p}.mlp.up_proj.weight`), [m, h]);
    assert.deepEqual(shape(`${p}.mlp.down_proj.weight`), [h, m]);
    assert.deepEqual(shape(`${p}.input_layernorm.weight`), [h]);
    assert.deepEqual(shape(`${p}.post_attention_layernorm.weight`), [h]);
  }
  assert.equal(header.tensors.size, 2 + 9 * config.num_hidden_layers);
  assert.deepEqual(header.metadata, { format: 'pt' });
});

test('weights: norms are 1, projections ~N(0, 0.02) and distinct per tensor', () => {
  const header = readSafetensorsHeader(path.join(dir, 'model.safetensors'));
  assert.ok(readTensorF32(header, 'model.layers.0.input_layernorm.weight').every((x) => x === 1));
  const q = readTensorF32(header, 'model.layers.0.self_attn.q_proj.weight');
  const mean = q.reduce((a, b) => a + b, 0) / q.length;
  const std = Math.sqrt(q.reduce((a, b) => a + (b - mean) ** 2, 0) / q.length);
  assert.ok(Math.abs(mean) < 1e-3, `mean ${mean}`);
  assert.ok(Math.abs(std - 0.02) < 1e-3, `std ${std}`);
  const k = readTensorF32(header, 'model.layers.0.self_attn.k_proj.weight');
  assert.notEqual(q[0], k[0]);
});

test('openCheckpoint accepts the embedded model', () => {
  const ckpt = openCheckpoint(dir);
  assert.equal(ckpt.arch.numLayers, 4);
  assert.equal(ckpt.arch.lmHead, 'model.embed_tokens.weight');
});

test('ensureEmbeddedModel writes once, atomically, and reuses the result', () => {
  const cache = path.join(root, 'cache');
  const first = ensureEmbeddedModel(cache);
  assert.equal(first, path.join(cache, EMBEDDED_MODEL_DIRNAME));
  assert.deepEqual(fs.readdirSync(cache), [EMBEDDED_MODEL_DIRNAME], 'no temp directory left behind');
  const stamp = fs.statSync(path.join(first, 'model.safetensors')).mtimeMs;
  assert.equal(ensureEmbeddedModel(cache), first);
  assert.equal(fs.statSync(path.join(first, 'model.safetensors')).mtimeMs, stamp);
  assert.ok(fs.readFileSync(path.join(first, 'model.safetensors')).equals(fs.readFileSync(path.join(dir, 'model.safetensors'))));
});

test('seededNormal is reproducible and standard normal', () => {
  const a = seededNormal(7);
  const b = seededNormal(7);
  const xs = Array.from({ length: 20_000 }, () => a());
  assert.deepEqual(xs.slice(0, 10), Array.from({ length: 10 }, () => b()));
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  const variance = xs.reduce((s, x) => s + (x - mean) ** 2, 0) / xs.length;
  assert.ok(Math.abs(mean) < 0.03 && Math.abs(variance - 1) < 0.05, `mean ${mean}, variance ${variance}`);
  assert.notEqual(seededNormal(8)(), seededNormal(7)());
});
