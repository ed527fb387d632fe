/**
 * node --import tsx bench/dora-load.ts [--rank 16] [--repeats 3]
 * What DoRA adds to a delta's load on the bench model (SmolLM2-135M shape, random weights):
 * parse + slot layout of a rank-r all-linear adapter as plain LoRA and as DoRA (same factors plus
 * magnitudes), and the DoRA part split into reading the frozen weights and computing
 * ‖W + s·B·A‖. Single thread, as the loader thread runs it.
 */
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { parseDelta } from '../src/deltas/parse.js';
import { combinedRowNorms } from '../src/deltas/peft-dora.js';
import { allProjections } from '../src/model/architecture.js';
import { openCheckpoint } from '../src/model/checkpoint.js';
import { mulberry32 } from '../src/model/random.js';
import { encodeSafetensors } from '../src/model/safetensors.js';
import { readCheckpointWeight } from '../src/model/weight-data.js';
import { ensureSyntheticCheckpoint, SMOLLM2_135M_CONFIG } from './synthetic.js';

const { values } = parseArgs({ options: { rank: { type: 'string', default: '16' }, repeats: { type: 'string', default: '3' } } });
const rank = Number(values.rank);
const repeats = Number(values.repeats);
const cacheRoot = path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'deltaserve');
const ckpt = openCheckpoint(ensureSyntheticCheckpoint(path.join(cacheRoot, 'bench', 'smollm2-135m-shape'), SMOLLM2_135M_CONFIG));
const projections = allProjections(ckpt.arch).flat();
const limits = { maxRank: rank, maxVirtualTokens: 64, maxBottleneck: 256 };

const random = mulberry32(3);
const fill = (n: number, scale: number, offset = 0) => Float32Array.from({ length: n }, () => offset + (random() - 0.5) * scale);
const tensors: Parameters<typeof encodeSafetensors>[0] = {};
for (const p of projections) {
  const key = `base_model.model.${p.modulePath}`;
  tensors[`${key}.lora_A.weight`] = { dtype: 'F32', shape: [rank, p.inFeatures], data: fill(rank * p.inFeatures, 0.05) };
  tensors[`${key}.lora_B.weight`] = { dtype: 'F32', shape: [p.outFeatures, rank], data: fill(p.outFeatures * rank, 0.05) };
  tensors[`${key}.lora_magnitude_vector`] = { dtype: 'F32', shape: [p.outFeatures], data: fill(p.outFeatures, 0.2, 1) };
}
const weights = encodeSafetensors(tensors, { format: 'pt' });
const config = (useDora: boolean) => JSON.stringify({ peft_type: 'LORA', r: rank, lora_alpha: 2 * rank, target_modules: 'all-linear', use_dora: useDora });
const reader = (name: string) => readCheckpointWeight(ckpt, name);

const time = (run: () => void) => {
  const ms: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t = performance.now();
    run();
    ms.push(performance.now() - t);
  }
  return Math.round(ms.sort((a, b) => a - b)[Math.floor(ms.length / 2)]!);
};

const lora = time(() => parseDelta('lora', { config: config(false), weights }, ckpt.arch, limits, reader));
const dora = time(() => parseDelta('dora', { config: config(true), weights }, ckpt.arch, limits, reader));
const read = time(() => projections.forEach((p) => reader(p.weight)));
const frozen = new Map(projections.map((p) => [p.modulePath, reader(p.weight)]));
const norms = time(() => {
  for (const p of projections) {
    const key = `base_model.model.${p.modulePath}`;
    const module = { a: tensors[`${key}.lora_A.weight`]!.data as Float32Array, b: tensors[`${key}.lora_B.weight`]!.data as Float32Array, rank, scale: 2 };
    combinedRowNorms(p, frozen.get(p.modulePath)!, module);
  }
});
const frozenMB = [...frozen.values()].reduce((n, w) => n + w.byteLength, 0) / 2 ** 20;
console.log(JSON.stringify({ rank, modules: projections.length, adapter_mb: +(weights.byteLength / 2 ** 20).toFixed(1), frozen_weights_read_mb: +frozenMB.toFixed(1), parse_lora_ms: lora, parse_dora_ms: dora, dora_extra_ms: dora - lora, of_which_read_ms: read, of_which_norms_ms: norms }, null, 2));
