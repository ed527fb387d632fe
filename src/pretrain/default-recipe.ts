/**
 * The committed default model and the settings that made it: `npm run pretrain` with no options
 * rebuilds it (docs/pretraining.md gives the size sweep behind these choices).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_MODEL_NAME } from '../model/default-model.js';

/** Where `npm run pretrain` writes by default: the committed model (run from a checkout, src/pretrain). */
export const DEFAULT_MODEL_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'models', DEFAULT_MODEL_NAME);

export const DEFAULT_RECIPE = {
  size: 's',
  steps: 2400,
  rowsPerStep: 8,
  microRows: 4,
  seqLen: 256,
  lr: 2e-3,
  warmupShare: 0.05,
  weightDecay: 0.1,
  seed: 1,
} as const;
