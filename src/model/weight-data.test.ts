import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { tempDir } from '../../test/helpers.js';
import { loadWeightsF32, writeTinyCheckpoint, type TinyDtype } from '../../test/oracle/checkpoints.js';
import { openCheckpoint } from './checkpoint.js';
import { readCheckpointWeight } from './weight-data.js';

describe('readCheckpointWeight', () => {
  for (const dtype of ['F32', 'BF16', 'F16'] as TinyDtype[]) {
    it(`reads one frozen weight as float32 (${dtype}, sharded), equal to the oracle's independent reader`, () => {
      const dir = path.join(tempDir(), 'model');
      writeTinyCheckpoint(dir, 'qwen2', { seed: 3, dtype, sharded: true });
      const ckpt = openCheckpoint(dir);
      const oracle = loadWeightsF32(dir);
      for (const name of ['model.layers.1.self_attn.q_proj.weight', 'model.layers.0.self_attn.k_proj.bias', 'model.layers.1.mlp.down_proj.weight']) {
        assert.deepEqual(readCheckpointWeight(ckpt, name), oracle.get(name)!.data, name);
      }
      assert.throws(() => readCheckpointWeight(ckpt, 'model.layers.9.nothing.weight'), /checkpoint has no weight model\.layers\.9\.nothing\.weight/);
    });
  }
});
