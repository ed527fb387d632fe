/**
 * Measures one replica's cold start in a fresh process: from process start (performance.timeOrigin)
 * to an engine ready to serve (checkpoint opened, graph built or reused, session created).
 * Prints one JSON line. Usage: cold-start.ts MODEL_DIR CACHE_DIR DEVICE
 */
import { startEngine } from '../src/engine/client.js';

const [modelDir, cacheDir, device] = process.argv.slice(2);
const engine = await startEngine({ modelDir: modelDir!, cacheDir: cacheDir!, device: (device ?? 'cpu') as 'cpu', maxRows: 32, maxContext: 1024, deltaSlots: 32, maxRank: 16, maxVirtualTokens: 64, maxBottleneck: 64, prefillChunk: 256, maxQueue: 64, store: `${cacheDir}/bench-deltas`, trainingShare: 0.25,
    hostCacheBytes: 2 ** 31, diskCacheDir: `${cacheDir}/deltas`, diskCacheMaxBytes: 2 ** 34 });
console.log(JSON.stringify({ readyMs: performance.now(), engineLoadMs: engine.info.loadMs }));
await engine.close();
