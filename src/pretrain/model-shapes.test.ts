import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../model/families/index.js';
import { backboneParams } from '../deltas/kinds/full-training.js';
import { describeArchitecture } from '../model/families/registry.js';
import { generationConfig, llamaConfig } from '../model/llama-config.js';
import { MODEL_SHAPES, parameterCount } from './model-shapes.js';

const ids = { endOfText: 256, imEnd: 258 };

test('each size is a Llama whose tensors add up to parameterCount', () => {
  for (const [name, shape] of Object.entries(MODEL_SHAPES)) {
    const config = llamaConfig(shape, 4096, ids, 128);
    const arch = describeArchitecture(config, new Set(['model.embed_tokens.weight']), `${name}/config.json`);
    assert.equal(arch.lmHead, arch.embedTokens, `${name}: tied`);
    const counted = backboneParams(arch).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
    assert.equal(parameterCount(shape, 4096), counted, name);
  }
});

test('the largest size stores in F16 within the 8 MB the repository allows', () => {
  const largest = Math.max(...Object.values(MODEL_SHAPES).map((s) => parameterCount(s, 4096)));
  assert.ok(largest * 2 <= 8e6, `${largest} parameters`);
});

test('config and generation config name the tokenizer special ids', () => {
  const config = llamaConfig(MODEL_SHAPES.xs!, 4096, ids, 256);
  assert.equal(config.bos_token_id, 256);
  assert.equal(config.eos_token_id, 258);
  assert.equal(config.pad_token_id, 256);
  assert.equal(config.max_position_embeddings, 256);
  assert.deepEqual(generationConfig(ids).eos_token_id, [258, 256]);
});
