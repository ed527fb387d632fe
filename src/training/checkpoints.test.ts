import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { tempDir } from '../../test/helpers.js';
import { FilesystemObjects } from '../deltas/store/objects-fs.js';
import { loadTrainerState, saveTrainerState } from './checkpoints.js';

test('a saved trainer state loads back bit for bit, and replaces the previous one atomically', async () => {
  const dir = tempDir();
  const objects = new FilesystemObjects(dir);
  const key = 'job-checkpoints/ftjob-1/trainer-state.safetensors';
  assert.equal(await loadTrainerState(objects, key), undefined);
  const state = (step: number, x: number) => ({
    step,
    params: new Map([['l.q.lora_A', Float32Array.of(x, -0, 1e-30)], ['l.q.lora_B', Float32Array.of(2)]]),
    m: new Map([['l.q.lora_A', Float32Array.of(0.5, 0, 0)], ['l.q.lora_B', Float32Array.of(0)]]),
    v: new Map([['l.q.lora_A', Float32Array.of(1e-8, 0, 0)], ['l.q.lora_B', Float32Array.of(3)]]),
  });
  await saveTrainerState(objects, key, state(3, 0.25));
  await saveTrainerState(objects, key, state(7, 0.125));
  // Another replica opening the same store reads the same state.
  assert.deepEqual(await loadTrainerState(new FilesystemObjects(dir), key), state(7, 0.125));
  assert.deepEqual(fs.readdirSync(path.join(dir, 'job-checkpoints', 'ftjob-1')), ['trainer-state.safetensors']);
});
