/**
 * The fixture's training trajectory on the WebGPU execution provider (`npm run test:webgpu`):
 * the same step graph, forward + loss + gradients + AdamW, run by a plain InferenceSession.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { checkFixtureTrajectory } from '../training-fixture.js';

test('webgpu: 10 AdamW steps from lora_all_r8 match PEFT + PyTorch', async () => {
  await checkFixtureTrajectory('webgpu');
});

test('webgpu: every node of the training step runs on the device (no CPU fallback for the loss)', () => {
  const probe = fileURLToPath(new URL('./placement-probe.ts', import.meta.url));
  const run = spawnSync(process.execPath, ['--import', 'tsx', probe], { encoding: 'utf8', env: process.env });
  assert.equal(run.status, 0, run.stderr.slice(-2000));
  assert.match(run.stdout + run.stderr, /All nodes placed on \[WebGpuExecutionProvider\]/);
});
