import type { TrainerState } from '../engine/trainer.js';
import type { ObjectStore } from '../deltas/store/objects.js';
import { encodeSafetensors, parseSafetensors } from '../model/safetensors.js';

const KINDS = ['param', 'm', 'v'] as const;
/**
 * Parameter names are PEFT's keys without `base_model.model.` (`<module>.lora_A.weight`).
 * Checkpoints written before trainable kinds (LoRA only) have no `names` metadata and dropped the
 * trailing `.weight`; they load under today's names, so jobs interrupted then still resume.
 */
const NAMES = 'peft';

/**
 * Saves a trainer state (parameters and AdamW moments, F32, with the step in the metadata) under
 * `key` in the store every replica shares, so a restarted server, or another replica that takes
 * the job over, resumes it exactly. The store replaces the object whole: a crash leaves the
 * previous checkpoint intact.
 *
 * @example await saveTrainerState(records, 'job-checkpoints/ftjob-1/trainer-state.safetensors', await engine.trainState(jobId));
 */
export async function saveTrainerState(objects: ObjectStore, key: string, state: TrainerState): Promise<void> {
  const tensors: Parameters<typeof encodeSafetensors>[0] = {};
  for (const kind of KINDS) {
    const values = kind === 'param' ? state.params : state[kind];
    for (const [name, data] of values) tensors[`${kind}.${name}`] = { dtype: 'F32', shape: [data.length], data };
  }
  await objects.put(key, encodeSafetensors(tensors, { step: String(state.step), names: NAMES }));
}

/**
 * The last saved state, or undefined when the job never reached a checkpoint.
 *
 * @example const resumed = await loadTrainerState(records, key) ?? freshState;
 */
export async function loadTrainerState(objects: ObjectStore, key: string): Promise<TrainerState | undefined> {
  const bytes = await objects.get(key);
  if (!bytes) return undefined;
  const where = `${objects.location}/${key}`;
  const { header, tensor } = parseSafetensors(bytes, where);
  const step = Number(header.metadata?.['step']);
  if (!Number.isInteger(step) || step < 0) throw new Error(`${where}: metadata has no valid step`);
  const rename = header.metadata?.['names'] === NAMES ? (name: string) => name : (name: string) => `${name}.weight`;
  const state: TrainerState = { step, params: new Map(), m: new Map(), v: new Map() };
  for (const name of header.tensors.keys()) {
    const dot = name.indexOf('.');
    const kind = name.slice(0, dot) as (typeof KINDS)[number];
    const target = kind === 'param' ? state.params : kind === 'm' ? state.m : kind === 'v' ? state.v : undefined;
    if (!target) throw new Error(`${where}: unexpected tensor ${name}`);
    target.set(rename(name.slice(dot + 1)), tensor(name));
  }
  return state;
}
