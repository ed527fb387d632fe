import path from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import type { Config } from '../config.js';
import { DeltaCatalog } from '../deltas/catalog.js';
import { startEngine, type Engine } from '../engine/client.js';
import { ChatTemplate } from '../model/chat-template.js';
import { EMBEDDED_MODEL_NAME, ensureEmbeddedModel } from '../model/embedded.js';
import { TextTokenizer } from '../model/tokenizer.js';
import fs from 'node:fs';
import { createApp } from './app.js';
import type { ServerState } from './context.js';

export interface RunningServer {
  url: string;
  state: ServerState;
  /** Resolves once the model is loaded and the startup deltas are registered. */
  ready: Promise<Engine>;
  close(): Promise<void>;
}

/**
 * Starts HTTP first (liveness answers at once), then the engine; readiness turns 200 when the
 * model is loaded and every --delta is registered. A startup failure rejects `ready`.
 */
export async function startServer(config: Config): Promise<RunningServer> {
  const modelDir = config.model ?? ensureEmbeddedModel(config.cacheDir);
  const modelName = config.modelName ?? (config.model ? path.basename(path.resolve(config.model)) : EMBEDDED_MODEL_NAME);
  const hasTokenizer = fs.existsSync(path.join(modelDir, 'tokenizer.json'));
  const state: ServerState = {
    modelName,
    deltas: new DeltaCatalog(),
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
      const summary = await engine.registerPeftDirectory(d.name, d.dir);
      state.deltas.add({ name: d.name, owner: d.tenant ?? 'default', public: false, rank: summary.rank, modules: summary.modules, createdAt: Date.now() });
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
