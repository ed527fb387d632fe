/**
 * One delta of every kind for the bench-shaped model, written once in each kind's on-disk format
 * (PEFT's, or the adapters library's for the bottleneck) by the test suite's writers, then
 * validated and laid out as the server would: the bench's rows then run exactly what a tenant's
 * uploads would.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ParsedDelta } from '../src/deltas/kind.js';
import { readDeltaDirectory } from '../src/deltas/parse.js';
import { deltaLimits, type ModelRuntime } from '../src/engine/model-runtime.js';
import { readCheckpointWeight } from '../src/model/weight-data.js';
import { writeTinyLora } from '../test/oracle/checkpoints.js';
import { writeTinyBitfit } from '../test/oracle/kinds/bitfit.js';
import { writeTinyBottleneck } from '../test/oracle/kinds/bottleneck-checkpoint.js';
import { writeTinyDora } from '../test/oracle/kinds/dora.js';
import { writeTinyIa3 } from '../test/oracle/kinds/ia3.js';
import { writeTinyLnTuning } from '../test/oracle/kinds/ln-tuning.js';
import { writeTinyPrefixTuning } from '../test/oracle/kinds/prefix-tuning.js';
import { writeTinyPromptTuning } from '../test/oracle/kinds/prompt-tuning.js';

const ALL_LINEAR = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
export const VIRTUAL_TOKENS = 16;

/** Writers by delta name: each a realistic configuration of its kind. */
const WRITERS: Record<string, (dir: string, modelDir: string, hidden: number) => void> = {
  lora: (dir, baseDir) => writeTinyLora(dir, 'llama', { seed: 1, r: 16, alpha: 32, targetModules: ALL_LINEAR, baseDir }),
  dora: (dir, baseDir) => writeTinyDora(dir, 'llama', { seed: 2, r: 16, alpha: 32, targetModules: ALL_LINEAR, baseDir }),
  ia3: (dir, baseDir) => void writeTinyIa3(dir, { baseDir, seed: 3 }),
  bitfit: (dir, baseDir) => void writeTinyBitfit(dir, 'llama', { baseDir, seed: 4 }),
  ln_tuning: (dir, baseDir) => void writeTinyLnTuning(dir, 'llama', { baseDir, seed: 5 }),
  prompt_tuning: (dir, _baseDir, hidden) => void writeTinyPromptTuning(dir, { peftType: 'PROMPT_TUNING', numVirtualTokens: VIRTUAL_TOKENS, tokenDim: hidden, seed: 6 }),
  prefix_tuning: (dir, baseDir) => void writeTinyPrefixTuning(dir, { numVirtualTokens: VIRTUAL_TOKENS, baseDir, seed: 7 }),
  bottleneck: (dir, baseDir) => void writeTinyBottleneck(dir, { baseDir, preset: 'seq_bn', config: { reduction_factor: 16 }, seed: 8 }),
};

/** The deltas, by name, for the kinds the runtime serves (written under `dir` on first use). */
export function kindDeltas(rt: ModelRuntime, modelDir: string, dir: string): Map<string, ParsedDelta> {
  const out = new Map<string, ParsedDelta>();
  for (const [name, write] of Object.entries(WRITERS)) {
    const kind = name === 'dora' ? 'lora' : name;
    if (!rt.servesKind(kind)) continue;
    const target = path.join(dir, name);
    if (!fs.existsSync(path.join(target, 'adapter_config.json'))) {
      fs.mkdirSync(target, { recursive: true });
      write(target, modelDir, rt.arch.hiddenSize);
    }
    out.set(`kind-${name}`, readDeltaDirectory(target, `kind-${name}`, rt.arch, deltaLimits(rt.options), (w) => readCheckpointWeight(rt.checkpoint, w)));
  }
  return out;
}
