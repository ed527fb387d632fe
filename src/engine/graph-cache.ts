import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Checkpoint } from '../model/checkpoint.js';
import type { Graph } from '../graph/ir.js';
import type { DeltaLimits } from '../deltas/kind.js';
import { trainableKind, type TrainingTarget } from '../deltas/training.js';
import type { DeltaLowering } from '../model/delta-hooks.js';
import { lowerInferenceGraph, type AttentionKernel } from '../model/lower-inference.js';
import { lowerTrainingGraph } from '../model/lower-training.js';
import { serializeModel } from '../graph/onnx/serialize.js';

/** Bump when a lowering changes so cached graphs from older builds are not reused. */
// 7: the lora kind's hook also applies DoRA's per-slot gain (a dora_gain.<module> input per projection).
const LOWERING_VERSION = 7;
// 3: the training step is the shared block (model/transformer.ts) with a trainable kind's hooks.
const TRAINING_LOWERING_VERSION = 3;

/** What an inference graph is built for; every field is part of the cache key. */
export interface InferenceGraphKey {
  maxCacheLength: number;
  attention: AttentionKernel;
  kvCache: 'host' | 'device';
  /** The delta kinds hooked in, and the limits their slots are laid out for. */
  deltas: { kinds: string[]; limits: DeltaLimits };
}

/** The inference graph for a checkpoint and key, with the kinds' hooks (see prepareGraph). */
export function prepareInferenceGraph(ckpt: Checkpoint, cacheDir: string, key: InferenceGraphKey, deltas: readonly DeltaLowering[]): string {
  const { maxCacheLength, attention, kvCache } = key;
  return prepareGraph(ckpt, cacheDir, { v: LOWERING_VERSION, ...key }, (weightFile) => lowerInferenceGraph(ckpt, { weightFile, maxCacheLength, attention, kvCache, deltas }));
}

/** The training-step graph for a micro-batch shape and a trainable kind with its resolved options (see prepareGraph). */
export function prepareTrainingGraph(ckpt: Checkpoint, cacheDir: string, shape: { rows: number; seqLen: number }, target: TrainingTarget): string {
  const trainable = trainableKind(target.kind);
  const key = { training: TRAINING_LOWERING_VERSION, ...shape, kind: target.kind, kindVersion: trainable.graphVersion, options: target.options };
  const { arch } = ckpt;
  return prepareGraph(ckpt, cacheDir, key, (weightFile) => lowerTrainingGraph(ckpt, { weightFile, ...shape, params: trainable.params(arch, target.options), hooks: trainable.hooks(arch, target.options) }));
}

/**
 * Builds (or reuses) an ONNX graph for a checkpoint in a cache directory.
 * ORT only reads external data from files inside the model's own directory, so each checkpoint
 * file is hard-linked there (copied when links cross filesystems); the graph itself stays small.
 * The cache key covers the files' identity and what the lowering depends on.
 */
function prepareGraph(ckpt: Checkpoint, cacheDir: string, lowering: object, lower: (weightFile: (file: string) => string) => Graph): string {
  const key = graphKey(ckpt, lowering);
  const dir = path.join(cacheDir, 'graphs', key);
  const modelPath = path.join(dir, 'model.onnx');
  if (fs.existsSync(modelPath)) return modelPath;
  const staging = `${dir}.tmp-${process.pid}-${Date.now()}`;
  fs.mkdirSync(staging, { recursive: true });
  const names = new Map<string, string>();
  ckpt.files.forEach((file, i) => {
    const name = `weights-${i}.safetensors`;
    linkOrCopy(file, path.join(staging, name));
    names.set(file, name);
  });
  const graph = lower((file) => names.get(file)!);
  fs.writeFileSync(path.join(staging, 'model.onnx'), serializeModel(graph));
  try {
    fs.renameSync(staging, dir);
  } catch (err) {
    // Another process finished the same graph first; use theirs.
    fs.rmSync(staging, { recursive: true, force: true });
    if (!fs.existsSync(modelPath)) throw err;
  }
  return modelPath;
}

function graphKey(ckpt: Checkpoint, lowering: object): string {
  const hash = crypto.createHash('sha256');
  hash.update(JSON.stringify({ lowering, config: ckpt.config }));
  for (const file of ckpt.files) {
    const stat = fs.statSync(file);
    hash.update(`${fs.realpathSync(file)}:${stat.size}:${stat.mtimeMs}:${stat.ino}`);
  }
  return hash.digest('hex').slice(0, 24);
}

function linkOrCopy(source: string, target: string): void {
  try {
    fs.linkSync(fs.realpathSync(source), target);
  } catch {
    fs.copyFileSync(source, target);
  }
}
