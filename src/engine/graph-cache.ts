import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Checkpoint } from '../model/checkpoint.js';
import { lowerInferenceGraph } from '../model/lower-inference.js';
import { serializeModel } from '../graph/onnx/serialize.js';

/** Bump when the lowering changes so cached graphs from older builds are not reused. */
const LOWERING_VERSION = 3;

/**
 * Builds (or reuses) the ONNX inference graph for a checkpoint in a cache directory.
 * ORT only reads external data from files inside the model's own directory, so each checkpoint
 * file is hard-linked there (copied when links cross filesystems); the graph itself stays small.
 * The cache key covers the files' identity, the lowering version and the cache length.
 */
export function prepareInferenceGraph(ckpt: Checkpoint, cacheDir: string, maxCacheLength: number): string {
  const key = graphKey(ckpt, maxCacheLength);
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
  const graph = lowerInferenceGraph(ckpt, { weightFile: (file) => names.get(file)!, maxCacheLength });
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

function graphKey(ckpt: Checkpoint, maxCacheLength: number): string {
  const hash = crypto.createHash('sha256');
  hash.update(JSON.stringify({ v: LOWERING_VERSION, maxCacheLength, config: ckpt.config }));
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
