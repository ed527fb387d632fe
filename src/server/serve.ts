import path from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import type { Config } from '../config.js';
import { DEFAULT_TENANT } from '../deltas/ref.js';
import { DeltaCatalog } from '../deltas/catalog.js';
import { PostgresClaims, openDeltaStore } from '../deltas/store/index.js';
import { DeltaService } from './delta-service.js';
import { TrainingService } from './training-service.js';
import { createLogger, type Logger } from '../telemetry/logger.js';
import { Telemetry } from '../telemetry/telemetry.js';
import { openCheckpoint } from '../model/checkpoint.js';
import { startEngine, type Engine } from '../engine/client.js';
import { ChatTemplate } from '../model/chat-template.js';
import { EMBEDDED_MODEL_NAME, ensureEmbeddedModel } from '../model/embedded.js';
import { TextTokenizer } from '../model/tokenizer.js';
import fs from 'node:fs';
import { createApp } from './app.js';
import { TenantQuotas } from './quotas.js';
import { TenantLimits } from './limits/tenant-limits.js';
import { loadAuthFile, type AuthTable } from './auth.js';
import type { ServerState } from './context.js';

export interface RunningServer {
  url: string;
  state: ServerState;
  /** Resolves once the model is loaded and the startup deltas are registered. */
  ready: Promise<Engine>;
  /**
   * Graceful shutdown's first half: readiness turns 503 and new generations are refused at once,
   * a training job checkpoints, and in-flight requests get up to `graceMs` to finish.
   */
  drain(graceMs: number): Promise<void>;
  close(): Promise<void>;
}

export interface StartOptions {
  /**
   * The API keys, already loaded (the CLI loads the file first to report a bad one before
   * anything starts); when absent, `config.auth` is loaded here, and no auth file means open mode.
   */
  auth?: AuthTable | null;
  /** Telemetry to use (tests pass in-memory exporters); one is created otherwise. */
  telemetry?: Telemetry;
  /** Logger to use (tests capture its lines); JSON lines on stdout otherwise. */
  logger?: Logger;
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
  const deltas = new DeltaCatalog();
  const quotas = new TenantQuotas(
    { maxDeltas: config.tenantMaxDeltas, maxDeltaBytes: config.tenantMaxDeltaBytes, maxJobs: config.tenantMaxJobs, maxTrainingFiles: config.tenantMaxTrainingFiles, maxTrainingFileBytes: config.tenantMaxTrainingFileBytes },
    { catalog: deltas, jobs: () => state.training?.jobs.list() ?? [], files: () => state.training?.files.list() ?? [] },
  );
  const state: ServerState = {
    modelName,
    deltas,
    quotas,
    limits: new TenantLimits({ requestsPerSecond: config.tenantRequestsPerSecond, requestBurst: config.tenantRequestBurst, tokensPerSecond: config.tenantTokensPerSecond, tokenBurst: config.tenantTokenBurst, maxConcurrent: config.tenantMaxConcurrent }),
    auth,
    tokenizer: hasTokenizer ? TextTokenizer.fromDirectory(modelDir) : undefined,
    chatTemplate: ChatTemplate.fromDirectory(modelDir),
    maxBodyBytes: config.maxBodyBytes,
    maxDeltaBytes: config.maxDeltaBytes,
    spoolDir: path.join(config.dataDir, 'uploads'),
    maxTrainingFileBytes: config.maxTrainingFileBytes,
    requestTimeoutMs: config.requestTimeoutMs,
    publicMetrics: config.publicMetrics,
    maxChoices: config.tenantMaxConcurrent > 0 ? Math.min(config.maxQueue, config.tenantMaxConcurrent) : config.maxQueue,
    startedAt: Date.now(),
    telemetry: options.telemetry ?? Telemetry.create({ serviceName: 'deltaserve' }),
    logger: options.logger ?? createLogger({ level: config.logLevel }),
    logPrompts: config.logPrompts,
    inFlight: 0,
    draining: false,
  };
  const app = createApp(state);
  const server = await listen(app.fetch, config.host, config.port);
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  let engine: Engine | undefined;
  let claims: PostgresClaims | undefined;
  const ready = (async () => {
    const store = config.store ?? path.join(config.dataDir, 'deltas');
    if (config.controlDb && store.startsWith('s3://')) claims = await PostgresClaims.open(config.controlDb);
    else if (config.controlDb) state.logger.warn({ store }, '--control-db is only used with an s3:// store; a directory store arbitrates between replicas itself');
    engine = await startEngine({ ...config, modelDir, store, diskCacheDir: config.diskCacheDir ?? path.join(config.cacheDir, 'deltas') });
    const deltaStore = openDeltaStore(store, { s3: { ...(claims ? { claims } : {}), warn: (message) => state.logger.warn(message) } });
    const service = new DeltaService(deltaStore, engine, state.deltas, { ttlMs: config.catalogTtlMs });
    await service.loadAll();
    for (const d of config.delta) {
      const owner = d.tenant ?? DEFAULT_TENANT;
      const isPublic = config.publicDeltas.some((p) => p.owner === owner && p.name === d.name);
      await service.adoptDirectory(owner, d.name, d.dir, { public: isPublic });
    }
    await enableStoredKinds(engine, state.deltas, state.logger);
    if (state.tokenizer) {
      const limits = { maxRank: config.maxRank, maxVirtualTokens: config.maxVirtualTokens, maxBottleneck: config.maxBottleneck, ...(config.fullTrainingMaxBytes ? { maxTrainingBytes: config.fullTrainingMaxBytes } : {}), ...(config.deltaKinds ? { kinds: config.deltaKinds } : {}) };
      const settings = { maxLength: config.trainMaxLength, microBatchRows: config.trainMicroBatch, checkpointEvery: config.trainCheckpointEvery, limits, leaseMs: config.jobLeaseMs, ttlMs: config.catalogTtlMs, modelsDir: path.join(config.dataDir, 'models') };
      const warn = (message: string) => state.logger.warn(message);
      state.training = await TrainingService.open({ engine, deltas: service, records: deltaStore.records('training'), checkpoint: openCheckpoint(modelDir), tokenizer: state.tokenizer, chatTemplate: state.chatTemplate ?? null, settings, warn });
    }
    state.deltaService = service;
    state.engine = engine;
    observeServer(state, engine);
    return engine;
  })();
  ready.catch(() => undefined);
  return {
    url: `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`,
    state,
    ready,
    drain: (graceMs: number) => drain(state, graceMs),
    async close() {
      // A running training job checkpoints and stays queued for the next start.
      await ready.catch(() => undefined);
      await state.training?.jobs.stop();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      // Also when startup failed after the engine was up: its worker would keep the process alive.
      await engine?.close();
      await claims?.close();
      if (!options.telemetry) await state.telemetry.shutdown();
    },
  };
}

/**
 * Hooks the kinds of the stored deltas into the graph before the server is ready, so their first
 * requests do not wait for it (the engine starts with LoRA only; every hooked-in kind costs
 * every pass). A kind this server cannot serve (--delta-kinds) is logged and left out.
 */
async function enableStoredKinds(engine: Engine, catalog: DeltaCatalog, logger: Logger): Promise<void> {
  for (const kind of new Set(catalog.list().map((r) => r.kind))) {
    await engine.enableKinds([kind]).catch((err: Error) => logger.warn({ kind, error: err.message }, 'stored deltas of this kind cannot be served'));
  }
}

function listen(fetch: (req: Request) => Response | Promise<Response>, hostname: string, port: number): Promise<ServerType> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch, hostname, port }, () => resolve(server));
    server.once('error', reject);
  });
}

/** Points the telemetry's gauges at the engine and the job manager, and records delta loads. */
function observeServer(state: ServerState, engine: Engine): void {
  const { instruments } = state.telemetry;
  engine.onDeltaLoad((load) => instruments.deltaLoadDuration.record(load.ms / 1000, { 'deltaserve.cache.tier': load.tier }));
  instruments.observe({
    serving: () => engine.stats(),
    training: () => state.training?.jobs.snapshot(),
  });
}

async function drain(state: ServerState, graceMs: number): Promise<void> {
  state.draining = true;
  state.logger.info({ inFlight: state.inFlight, graceMs }, 'draining');
  const training = state.training?.jobs.stop();
  const deadline = Date.now() + graceMs;
  while (state.inFlight > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  if (state.inFlight > 0) state.logger.warn({ inFlight: state.inFlight }, 'grace period over; closing with requests in flight');
  await training;
}
