/**
 * Broken model directories must fail at startup with a ModelLoadError whose message names the
 * offending file and, where one is involved, the tensor — before any graph or session is built.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ModelRuntime } from '../../src/engine/model-runtime.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { ModelLoadError } from '../../src/model/errors.js';
import { encodeSafetensors, parseSafetensors } from '../../src/model/safetensors.js';
import { tempDir } from '../helpers.js';
import { writeTinyCheckpoint, type TinyCheckpointOptions, type TinyFamily } from '../oracle/checkpoints.js';

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** A regex matching `s` literally. */
const lit = (s: string) => new RegExp(escape(s));

function checkpointDir(family: TinyFamily = 'llama', options: TinyCheckpointOptions = {}): string {
  const dir = path.join(tempDir('deltaserve-broken-'), 'model');
  writeTinyCheckpoint(dir, family, options);
  return dir;
}

type Tensors = Parameters<typeof encodeSafetensors>[0];

/** Rewrites a safetensors file through `edit`, which may delete, reshape or add tensors (all re-encoded as F32). */
function rewriteSafetensors(file: string, edit: (tensors: Tensors) => void): void {
  const parsed = parseSafetensors(fs.readFileSync(file), file);
  const tensors: Tensors = {};
  for (const [name, entry] of parsed.header.tensors) tensors[name] = { dtype: 'F32', shape: entry.shape, data: parsed.tensor(name) };
  edit(tensors);
  fs.writeFileSync(file, encodeSafetensors(tensors, { format: 'pt' }));
}

/** Both entry points must fail, with a ModelLoadError whose message matches every pattern. */
async function assertStartupFails(dir: string, patterns: RegExp[]): Promise<void> {
  const check = (err: unknown) => {
    assert.ok(err instanceof ModelLoadError, `expected a ModelLoadError, got ${(err as Error)?.name}: ${(err as Error)?.message}`);
    assert.equal(err.code, 'model_load_error');
    for (const p of patterns) assert.match(err.message, p);
    return true;
  };
  assert.throws(() => openCheckpoint(dir), check);
  const cacheDir = tempDir('deltaserve-broken-cache-');
  await assert.rejects(ModelRuntime.create({ modelDir: dir, cacheDir, device: 'cpu', maxRows: 1, maxContext: 16, deltaSlots: 1, maxRank: 4, threads: 1 }), check);
  // Failing at startup means no graph was built either.
  assert.deepEqual(fs.readdirSync(cacheDir), []);
}

describe('startup errors name the file and the tensor', () => {
  it('a good tiny checkpoint opens (control)', () => {
    const ckpt = openCheckpoint(checkpointDir());
    assert.equal(ckpt.arch.numLayers, 2);
  });

  it('unsupported architecture (model_type bert)', async () => {
    const dir = checkpointDir();
    const configPath = path.join(dir, 'config.json');
    const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
    fs.writeFileSync(configPath, JSON.stringify({ ...config, model_type: 'bert', architectures: ['BertForMaskedLM'] }));
    await assertStartupFails(dir, [lit(configPath), /model_type 'bert'/, /BertForMaskedLM/, /supported: .*gpt2.*llama/]);
  });

  it('missing config.json', async () => {
    const dir = checkpointDir();
    fs.rmSync(path.join(dir, 'config.json'));
    await assertStartupFails(dir, [lit(path.join(dir, 'config.json')), /not found/]);
  });

  it('config.json that is not JSON', async () => {
    const dir = checkpointDir();
    fs.writeFileSync(path.join(dir, 'config.json'), '{"model_type": "llama",');
    await assertStartupFails(dir, [lit(path.join(dir, 'config.json')), /not valid JSON/]);
  });

  for (const [family, tensor] of [
    ['llama', 'model.layers.1.mlp.up_proj.weight'],
    // tie_word_embeddings: false, so a missing lm_head must not silently fall back to the embedding
    ['llama', 'lm_head.weight'],
    ['qwen2', 'model.layers.0.self_attn.k_proj.bias'],
    ['gpt2', 'transformer.h.1.ln_2.bias'],
  ] as const) {
    it(`a missing weight (${family}: ${tensor})`, async () => {
      const dir = checkpointDir(family);
      const file = path.join(dir, 'model.safetensors');
      rewriteSafetensors(file, (t) => {
        assert.ok(t[tensor], `fixture has ${tensor}`);
        delete t[tensor];
      });
      // The message names the model directory (the tensor is in no file) and the tensor.
      await assertStartupFails(dir, [lit(dir), lit(`'${tensor}'`), /missing weight/, /expected shape \[/]);
    });
  }

  it('a weight with the wrong shape', async () => {
    const dir = checkpointDir();
    const file = path.join(dir, 'model.safetensors');
    const tensor = 'model.layers.0.self_attn.k_proj.weight'; // [kv_heads * head_dim, hidden] = [32, 64]
    rewriteSafetensors(file, (t) => {
      assert.deepEqual(t[tensor]!.shape, [32, 64]);
      t[tensor] = { dtype: 'F32', shape: [64, 64], data: new Float32Array(64 * 64) };
    });
    await assertStartupFails(dir, [lit(file), lit(`'${tensor}'`), /shape \[64,64\], expected \[32,64\]/]);
  });

  it('a weight with the wrong shape in a sharded checkpoint names its shard', async () => {
    const dir = checkpointDir('llama', { sharded: true });
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    const tensor = 'model.norm.weight';
    const file = path.join(dir, index.weight_map[tensor]);
    rewriteSafetensors(file, (t) => {
      t[tensor] = { dtype: 'F32', shape: [65], data: new Float32Array(65) };
    });
    await assertStartupFails(dir, [lit(file), lit(`'${tensor}'`), /shape \[65\], expected \[64\]/]);
  });

  it('a weight with an unsupported dtype', async () => {
    const dir = checkpointDir();
    const file = path.join(dir, 'model.safetensors');
    const tensor = 'model.norm.weight';
    rewriteSafetensors(file, (t) => {
      t[tensor] = { dtype: 'I32', shape: [64], data: new Int32Array(64) };
    });
    await assertStartupFails(dir, [lit(file), lit(`'${tensor}'`), /dtype I32/]);
  });

  it('a truncated model.safetensors (last 100 bytes cut)', async () => {
    const dir = checkpointDir();
    const file = path.join(dir, 'model.safetensors');
    const bytes = fs.readFileSync(file);
    fs.writeFileSync(file, bytes.subarray(0, bytes.length - 100));
    await assertStartupFails(dir, [lit(file), /truncated/, lit(`expected ${bytes.length} bytes, got ${bytes.length - 100}`)]);
  });

  it('a truncated model.safetensors (cut inside the header)', async () => {
    const dir = checkpointDir();
    const file = path.join(dir, 'model.safetensors');
    fs.writeFileSync(file, fs.readFileSync(file).subarray(0, 50));
    await assertStartupFails(dir, [lit(file), /truncated/]);
  });

  it('a malformed safetensors header (garbage JSON)', async () => {
    const dir = checkpointDir();
    const file = path.join(dir, 'model.safetensors');
    const json = Buffer.from('{"model.norm.weight": {"dtype": "F32", "shape": [64], garbage');
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(json.length));
    fs.writeFileSync(file, Buffer.concat([prefix, json, Buffer.alloc(256)]));
    await assertStartupFails(dir, [lit(file), /header is not valid UTF-8 JSON/]);
  });

  it('a header entry with a bad dtype names the tensor', async () => {
    const dir = checkpointDir();
    const file = path.join(dir, 'model.safetensors');
    const bytes = fs.readFileSync(file);
    const n = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
    header['model.norm.weight'].dtype = 'F8';
    const json = Buffer.from(JSON.stringify(header).padEnd(n, ' '));
    assert.equal(json.length, n, 'the edited header still fits');
    fs.writeFileSync(file, Buffer.concat([bytes.subarray(0, 8), json, bytes.subarray(8 + n)]));
    await assertStartupFails(dir, [lit(file), /tensor "model\.norm\.weight"/, /unknown dtype "F8"/]);
  });

  it('neither model.safetensors nor an index', async () => {
    const dir = checkpointDir();
    fs.rmSync(path.join(dir, 'model.safetensors'));
    await assertStartupFails(dir, [lit(dir), /no model\.safetensors or model\.safetensors\.index\.json/]);
  });

  it('a sharded index naming a missing shard', async () => {
    const dir = checkpointDir('llama', { sharded: true });
    const indexFile = path.join(dir, 'model.safetensors.index.json');
    const shard = 'model-00002-of-00002.safetensors';
    fs.rmSync(path.join(dir, shard));
    await assertStartupFails(dir, [lit(indexFile), lit(`listed shard "${shard}" is missing`)]);
  });

  it('a sharded index whose weight_map points outside the model directory names the tensor', async () => {
    const dir = checkpointDir('llama', { sharded: true });
    const indexFile = path.join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
    index.weight_map['model.norm.weight'] = '../elsewhere.safetensors';
    fs.writeFileSync(indexFile, JSON.stringify(index));
    await assertStartupFails(dir, [lit(indexFile), /tensor "model\.norm\.weight"/, /not a relative file name/]);
  });

  it('a tensor the index maps to a shard that lacks it is reported as missing', async () => {
    const dir = checkpointDir('llama', { sharded: true });
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    const tensor = 'lm_head.weight';
    rewriteSafetensors(path.join(dir, index.weight_map[tensor]), (t) => {
      delete t[tensor];
    });
    await assertStartupFails(dir, [lit(dir), lit(`'${tensor}'`), /missing weight/]);
  });
});
