import os from 'node:os';
import path from 'node:path';
import { ModelRuntime } from '../src/engine/model-runtime.js';
import { ensureSyntheticCheckpoint, SMOLLM2_135M_CONFIG } from './synthetic.js';
const cacheRoot = path.join(os.homedir(), '.cache', 'deltaserve');
const modelDir = ensureSyntheticCheckpoint(path.join(cacheRoot, 'bench', 'smollm2-135m-shape'), SMOLLM2_135M_CONFIG);
const kinds = process.argv[2] === 'all' ? undefined : process.argv[2]!.split(',');
let t = performance.now();
const rt = await ModelRuntime.create({ modelDir, cacheDir: cacheRoot, device: 'cpu', maxRows: 8, maxContext: 512, deltaSlots: 8, maxRank: 16, deltaKinds: kinds });
console.log('create ms', (performance.now() - t).toFixed(0), [...rt.stacks.keys()].join(','));
const prompt = Array.from({ length: 64 }, (_, i) => (i * 7919) % 49152);
for (const batch of [1, 8]) {
  t = performance.now();
  await rt.forward({ firstRow: 0, tokens: Array.from({ length: batch }, () => prompt), pastLengths: Array(batch).fill(0), slots: Array(batch).fill({}), logits: 'last' });
  console.log('prefill', batch, (performance.now() - t).toFixed(0));
  const times: number[] = [];
  for (let s = 0; s < 12; s++) {
    t = performance.now();
    await rt.forward({ firstRow: 0, tokens: Array.from({ length: batch }, () => [5]), pastLengths: Array(batch).fill(64 + s), slots: Array(batch).fill({}), logits: 'last' });
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  console.log('decode b' + batch, 'median ms', times[6]!.toFixed(1));
}
await rt.release();
