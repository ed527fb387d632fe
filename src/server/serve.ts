import path from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { DEFAULT_TENANT, type Config } from '../config.js';
import { DeltaCatalog, deltaKey } from '../deltas/catalog.js';
import { openDeltaStore } from '../deltas/store/index.js';
import { DeltaService } from './delta-service.js';
import { TrainingService } from './training-service.js';
import { openCheckpoint } from '../model/checkpoint.js';
import { startEngine, type Engine } from '../engine/client.js';
import { ChatTemplate } from '../model/chat-template.js';
import { EMBEDDED_MODEL_NAME, ensureEmbeddedModel } from '../model/embedded.js';
import { TextTokenizer } from '../model/tokenizer.js';
import fs from 'node:fs';
import { createApp } from './app.js';
import { loadAuthFile, type AuthTable } from './auth.js';
import type { ServerState } from './context.js';

export interface RunningServer {
  url: string;
  state: ServerState;
  /** Resolves once the model is loaded and the startup deltas are registered. */
  ready: Promise<Engine>;
  close(): Promise<void>;
}

export interface StartOptions {
  /**
   * The API keys, already loaded (the CLI loads the file first to report a bad one before
   * anything starts); when absent, `config.auth` is loaded here, and no auth file means open mode.
   */
  auth?: AuthTable | null;
}

/**
 * Starts HTTP first (liveness answers at once), then the engine; readiness turns 200 when the
 * model is loaded and every --delta is registered. A startup failure rejects `ready`; a bad auth
 * file rejects before anything listens.
 */
export async function startServer(config: Config, options: StartOptions = {}): Promise<RunningServer> {
  const auth = options.auth !== undefined ? options.auth : config.auth ? loadAuthFile(config.auth) : null;
  const modelDir = config.model ?? ensureEmbeddedModel(config.cacheDir);
  const modelName = config.modelName ?? (config.model ? path.basename(path.resolve(config.model)) : EMBEDDED_MODEL_NAME);
  const hasTokenizer = fs.existsSync(path.join(modelDir, 'tokenizer.json'));
  const state: ServerState = {
    modelName,
    deltas: new DeltaCatalog(),
    auth,
    tokenizer: hasTokenizer ? TextTokenizer.fromDirectory(modelDir) : undefined,
    chatTemplate: ChatTemplate.fromDirectory(modelDir),
    maxBodyBytes: config.maxBodyBytes,
    maxDeltaBytes: config.maxDeltaBytes,
    maxTrainingFileBytes: config.maxTrainingFileBytes,
    requestTimeoutMs: config.requestTimeoutMs,
    startedAt: Date.now(),
  };
  const app = createApp(state);
  const server = await listen(app.fetch, config.host, config.port);
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  let engine: Engine | undefined;
  const ready = (async () => {
    const store = config.store ?? path.join(config.dataDir, 'deltas');
    engine = await startEngine({ ...config, modelDir, store, diskCacheDir: config.diskCacheDir ?? path.join(config.cacheDir, 'deltas') });
    const service = new DeltaService(openDeltaStore(store), engine, state.deltas);
    await service.loadAll();
    for (const d of config.delta) {
      const owner = d.tenant ?? DEFAULT_TENANT;
      const isPublic = config.publicDeltas.some((p) => p.owner === owner && p.name === d.name);
      await service.adoptDirectory(owner, d.name, d.dir, { public: isPublic });
    }
    if (state.tokenizer) {
      const settings = { dataDir: config.dataDir, maxLength: config.trainMaxLength, microBatchRows: config.trainMicroBatch, checkpointEvery: config.trainCheckpointEvery, maxRank: config.maxRank };
      const { arch } = openCheckpoint(modelDir);
      state.training = await TrainingService.open({ engine, deltas: service, arch, tokenizer: state.tokenizer, chatTemplate: state.chatTemplate ?? null, settings });
    }
    state.deltaService = service;
    state.engine = engine;
    return engine;
  })();
  ready.catch(() => undefined);
  return {
    url: `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`,
    state,
    ready,
    async close() {
      // A running training job checkpoints and stays queued for the next start.
      await ready.catch(() => undefined);
      await state.training?.jobs.stop();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      // Also when startup failed after the engine was up: its worker would keep the process alive.
      await engine?.close();
    },
  };
}

function listen(fetch: (req: Request) => Response | Promise<Response>, hostname: string, port: number): Promise<ServerType> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch, hostname, port }, () => resolve(server));
    server.once('error', reject);
  });
}
