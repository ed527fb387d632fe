import path from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { DEFAULT_TENANT, type Config } from '../config.js';
import { DeltaCatalog, deltaKey } from '../deltas/catalog.js';
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
    requestTimeoutMs: config.requestTimeoutMs,
    startedAt: Date.now(),
  };
  const app = createApp(state);
  const server = await listen(app.fetch, config.host, config.port);
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const ready = (async () => {
    const engine = await startEngine({ ...config, modelDir });
    for (const d of config.delta) {
      // Engine keys are owner/name: two tenants may both have a delta called `support`.
      const owner = d.tenant ?? DEFAULT_TENANT;
      const isPublic = config.publicDeltas.some((p) => p.owner === owner && p.name === d.name);
      const summary = await engine.registerPeftDirectory(deltaKey(owner, d.name), d.dir);
      state.deltas.add({ name: d.name, owner, public: isPublic, rank: summary.rank, modules: summary.modules, createdAt: Date.now() });
    }
    state.engine = engine;
    return engine;
  })();
  ready.catch(() => undefined);
  return {
    url: `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`,
    state,
    ready,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      const engine = await ready.catch(() => undefined);
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
