import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigSchema } from '../config.js';
import type { EngineOptions } from '../engine/protocol.js';
import { runtimeOptions } from '../engine/options.js';
import type { RuntimeOptions } from '../engine/model-runtime.js';
import { engineOptions } from './engine-options.js';

// Every key of each type, checked by the compiler both ways (a missing or extra key fails tsc).
const ENGINE_KEYS: Record<keyof EngineOptions, true> = {
  modelDir: true, cacheDir: true, device: true, maxRows: true, maxContext: true, deltaSlots: true, maxRank: true, maxVirtualTokens: true, maxBottleneck: true,
  deltaKinds: true, initialKinds: true, threads: true, prefillChunk: true, maxQueue: true, store: true, storeTimeoutMs: true, hostCacheBytes: true, diskCacheDir: true, diskCacheMaxBytes: true, trainingShare: true,
};
const RUNTIME_KEYS: Record<keyof RuntimeOptions, true> = {
  modelDir: true, cacheDir: true, device: true, maxRows: true, maxContext: true, deltaSlots: true, maxRank: true, maxVirtualTokens: true, maxBottleneck: true,
  deltaKinds: true, initialKinds: true, threads: true, attention: true,
};

/** A config with every optional setting given, so the narrowing is seen on all of them. */
const config = ConfigSchema.parse({
  model: '/models/m', auth: '/etc/keys.yaml', store: 's3://bucket/deltas', controlDb: 'postgres://u:p@db/x', diskCacheDir: '/cache/deltas', threads: 3, deltaKinds: 'lora,ia3',
  delta: ['acme/sql=/adapters/sql'], publicDeltas: ['acme/sql'], tenantMaxJobs: 2, logPrompts: 'true',
});

test('the engine gets only its own fields from the config, and the runtime only its own from the engine', () => {
  const engine = engineOptions(config, { modelDir: '/models/m', store: 's3://bucket/deltas' });
  const extra = Object.keys(engine).filter((k) => !(k in ENGINE_KEYS));
  assert.deepEqual(extra, [], 'fields the engine does not declare');
  for (const secret of ['auth', 'controlDb', 'delta', 'publicDeltas', 'tenantMaxJobs', 'logPrompts']) assert.ok(!(secret in engine), `${secret} crossed into the engine`);
  assert.equal(engine.diskCacheDir, '/cache/deltas');
  assert.deepEqual(engine.deltaKinds, ['lora', 'ia3']);
  assert.equal(engine.threads, 3);

  const runtime = runtimeOptions(engine);
  assert.deepEqual(Object.keys(runtime).filter((k) => !(k in RUNTIME_KEYS)), [], 'fields the runtime does not declare');
  assert.deepEqual(runtime.initialKinds, ['lora'], 'the engine starts with LoRA hooked in');
  assert.equal(runtime.maxContext, config.maxContext);
});

test('an absent optional setting stays absent (the runtime then picks its own default)', () => {
  const plain = engineOptions(ConfigSchema.parse({ cacheDir: '/c' }), { modelDir: '/m', store: '/s' });
  assert.ok(!('threads' in plain) && !('deltaKinds' in plain));
  assert.equal(plain.diskCacheDir, '/c/deltas');
  assert.equal(plain.diskCacheMaxBytes, 10 * 1024 ** 3, 'the disk tier is bounded by default');
  assert.ok(!('threads' in runtimeOptions(plain)));
});
