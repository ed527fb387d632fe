import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { DeltaFileBytes } from '../deltas/training.js';

/** The base's files a trained model does not take over: its weights (any layout) and config, which the result replaces. */
const REPLACED = /^(config\.json|.*\.safetensors|model\.safetensors\.index\.json|pytorch_model.*\.bin|.*\.onnx(_data)?)$/;

/**
 * Writes a fully fine-tuned model as a Hugging Face model directory `dir`: the base's config.json
 * with the keys of `files.config` (a JSON object) set over it, `files.weights` as
 * model.safetensors, and every other top-level file of the base (tokenizer, chat template,
 * generation config) copied, so the directory serves with `--model dir`. The directory appears
 * whole or not at all (written beside it, then renamed); one already there is replaced (a job
 * resumed after it published once publishes the same weights again).
 *
 * @example writeModelDirectory('/models/SmolLM2-135M', '/data/models/ftjob-…', fullTraining.write(arch, layout, params, meta))
 */
export function writeModelDirectory(baseDir: string, dir: string, files: DeltaFileBytes): void {
  const staging = `${dir}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  fs.mkdirSync(staging, { recursive: true });
  try {
    for (const entry of fs.readdirSync(baseDir, { withFileTypes: true })) {
      if (!entry.isFile() || REPLACED.test(entry.name)) continue;
      fs.copyFileSync(path.join(baseDir, entry.name), path.join(staging, entry.name));
    }
    const config = { ...JSON.parse(fs.readFileSync(path.join(baseDir, 'config.json'), 'utf8')), ...JSON.parse(files.config) };
    fs.writeFileSync(path.join(staging, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
    fs.writeFileSync(path.join(staging, 'model.safetensors'), files.weights);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(staging, dir);
  } catch (err) {
    fs.rmSync(staging, { recursive: true, force: true });
    throw err;
  }
}
