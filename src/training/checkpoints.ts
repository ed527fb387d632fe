import fs from 'node:fs';
import path from 'node:path';
import type { TrainerState } from '../engine/trainer.js';
import { replaceFileAtomically } from '../deltas/store/durable.js';
import { encodeSafetensors, parseSafetensors } from '../model/safetensors.js';

const FILE = 'trainer-state.safetensors';
const KINDS = ['param', 'm', 'v'] as const;
/**
 * Parameter names are PEFT's keys without `base_model.model.` (`<module>.lora_A.weight`).
 * Checkpoints written before trainable kinds (LoRA only) have no `names` metadata and dropped the
 * trailing `.weight`; they load under today's names, so jobs interrupted then still resume.
 */
const NAMES = 'peft';

/**
 * Saves a trainer state (parameters and AdamW moments, F32, with the step in the metadata) so a
 * restarted server resumes the job exactly. Written to a temporary file, fsynced and renamed:
 * a crash leaves the previous checkpoint intact.
 *
 * @example await saveTrainerState(jobDir, await engine.trainState(jobId));
 */
export async function saveTrainerState(dir: string, state: TrainerState): Promise<void> {
  const tensors: Parameters<typeof encodeSafetensors>[0] = {};
  for (const kind of KINDS) {
    const values = kind === 'param' ? state.params : state[kind];
    for (const [name, data] of values) tensors[`${kind}.${name}`] = { dtype: 'F32', shape: [data.length], data };
  }
  const bytes = encodeSafetensors(tensors, { step: String(state.step), names: NAMES });
  await fs.promises.mkdir(dir, { recursive: true });
  await replaceFileAtomically(path.join(dir, FILE), bytes);
}

/** The last saved state, or undefined when the job never reached a checkpoint. */
export function loadTrainerState(dir: string): TrainerState | undefined {
  const file = path.join(dir, FILE);
  if (!fs.existsSync(file)) return undefined;
  const { header, tensor } = parseSafetensors(fs.readFileSync(file), file);
  const step = Number(header.metadata?.['step']);
  if (!Number.isInteger(step) || step < 0) throw new Error(`${file}: metadata has no valid step`);
  const rename = header.metadata?.['names'] === NAMES ? (name: string) => name : (name: string) => `${name}.weight`;
  const state: TrainerState = { step, params: new Map(), m: new Map(), v: new Map() };
  for (const key of header.tensors.keys()) {
    const dot = key.indexOf('.');
    const kind = key.slice(0, dot) as (typeof KINDS)[number];
    const target = kind === 'param' ? state.params : kind === 'm' ? state.m : kind === 'v' ? state.v : undefined;
    if (!target) throw new Error(`${file}: unexpected tensor ${key}`);
    target.set(rename(key.slice(dot + 1)), tensor(key));
  }
  return state;
}
