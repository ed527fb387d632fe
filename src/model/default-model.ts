/**
 * The model `npm start` serves without --model: deltaserve-kjv, a small Llama pretrained from
 * scratch by `npm run pretrain` on the King James Bible and committed under models/ in F16
 * (docs/pretraining.md). It is found beside package.json, so the same lookup works from src/
 * (through tsx) and from dist/ (the build, and the container image, which copies models/).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ModelLoadError } from './errors.js';

export const DEFAULT_MODEL_NAME = 'deltaserve-kjv';

/** The nearest directory at or above `from` holding deltaserve's package.json. */
function packageRoot(from: string): string | undefined {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const manifest = path.join(dir, 'package.json');
    if (fs.existsSync(manifest)) {
      try {
        if (JSON.parse(fs.readFileSync(manifest, 'utf8')).name === 'deltaserve') return dir;
      } catch {
        // not ours; keep looking
      }
    }
    if (path.dirname(dir) === dir) return undefined;
  }
}

/**
 * The default model's directory; a clear error when the installation lacks it.
 *
 * @example defaultModelDir() // '/app/models/deltaserve-kjv'
 */
export function defaultModelDir(): string {
  const root = packageRoot(path.dirname(fileURLToPath(import.meta.url)));
  const dir = root && path.join(root, 'models', DEFAULT_MODEL_NAME);
  if (!dir || !fs.existsSync(path.join(dir, 'config.json'))) {
    throw new ModelLoadError(`the default model (models/${DEFAULT_MODEL_NAME}) is not in this installation; pass --model DIR, or rebuild it with npm run pretrain`);
  }
  return dir;
}
