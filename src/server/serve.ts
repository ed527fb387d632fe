import path from 'node:path';
import type { Server } from 'node:http';
import { serve } from '@hono/node-server';
import type { Config } from '../config.js';
import { DEFAULT_TENANT } from '../deltas/ref.js';
import { DeltaCatalog } from '../deltas/catalog.js';
import { PostgresClaims, S3DeltaStore, openDeltaStore } from '../deltas/store/index.js';
import { sweepUncommittedVersions } from '../deltas/store/s3-sweep.js';
import { StoreUnavailableError } from '../deltas/store/unavailable.js';
import { DeltaService } from './delta-service.js';
import { TrainingService } from './training-service.js';
import { createLogger, type Logger } from '../telemetry/logger.js';
import { Telemetry } from '../telemetry/telemetry.js';
import { openCheckpoint } from '../model/checkpoint.js';
import { startEngine, type Engine } from '../engine/client.js';
import { ChatTemplate } from '../model/chat-template.js';
import { DEFAULT_MODEL_NAME, defaultModelDir } from '../model/default-model.js';
import { TextTokenizer } from '../model/tokenizer.js';
import fs from 'node:fs';
import { createApp } from './app.js';
import { engineOptions } from './engine-options.js';
import { removeAbandonedSpool } from './multipart.js';
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
   * a training job checkpoints, and in-flight requests get up to `graceMs` to finish, less the
   * time close() keeps for itself (CLOSE_RESERVE_MS), so that drain + close fit in `graceMs`.
   */
  drain(graceMs: number): Promise<void>;
  /**
   * Stops everything. With a `deadline` (the end of the shutdown grace) nothing waits past it:
   * connections still open are cut, a training step in progress is abandoned (the job resumes
   * from its last checkpoint), and the engine thread is terminated.
   */
  close(options?: { deadline?: number }): Promise<void>;
}

/** What close() keeps of the grace period for itself: closing sockets, the engine thread, telemetry. */
export const CLOSE_RESERVE_MS = 500;

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
  const modelDir = config.model ?? defaultModelDir();
  const modelName = config.modelName ?? (config.model ? path.basename(path.resolve(config.model)) : DEFAULT_MODEL_NAME);
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
    streamsCut: new AbortController(),
  };
  // An upload cut short by a killed process left its spooled parts; nothing reads them.
  await removeAbandonedSpool(state.spoolDir);
  const app = createApp(state);
  const server = await listen(app.fetch, config.host, config.port);
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  let engine: Engine | undefined;
  const stopping = new AbortController();
  let claims: PostgresClaims | undefined;
  const ready = (async () => {
    const store = config.store ?? path.join(config.dataDir, 'deltas');
    if (config.controlDb && store.startsWith('s3://')) claims = await PostgresClaims.open(config.controlDb);
    else if (config.controlDb) state.logger.warn({ store }, '--control-db is only used with an s3:// store; a directory store arbitrates between replicas itself');
    engine = await startEngine(engineOptions(config, { modelDir, store }));
    const deltaStore = openDeltaStore(store, { s3: { ...(claims ? { claims } : {}), timeoutMs: config.storeTimeoutMs, warn: (message) => state.logger.warn(message) } });
    const service = new DeltaService(deltaStore, engine, state.deltas, { ttlMs: config.catalogTtlMs });
    await untilStoreAnswers(state, stopping.signal, async () => {
      await service.loadAll((message) => state.logger.warn(message));
      for (const d of config.delta) {
        const owner = d.tenant ?? DEFAULT_TENANT;
        const isPublic = config.publicDeltas.some((p) => p.owner === owner && p.name === d.name);
        await service.adoptDirectory(owner, d.name, d.dir, { public: isPublic }).catch((err: Error & { code?: string }) => {
          if (err instanceof StoreUnavailableError) throw err; // waited out by untilStoreAnswers
          // A raw ENOENT or a validation error would not say which flag it came from.
          const reason = err.code === 'ENOENT' ? `no such file: ${(err as { path?: string }).path ?? err.message}` : err.message;
          throw new Error(`--delta ${d.tenant ? `${d.tenant}/` : ''}${d.name}=${d.dir}: ${reason}`, { cause: err });
        });
      }
    });
    await enableStoredKinds(engine, state.deltas, state.logger);
    if (deltaStore instanceof S3DeltaStore) sweepAbandonedUploads(deltaStore, state.logger);
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
    drain: (graceMs: number) => drain(state, Date.now() + Math.max(0, graceMs - CLOSE_RESERVE_MS)),
    async close({ deadline = Infinity }: { deadline?: number } = {}) {
      stopping.abort();
      const bounded = <T>(work: Promise<T>) => (Number.isFinite(deadline) ? Promise.race([work, sleep(deadline - Date.now())]) : work);
      await bounded(ready.catch(() => undefined));
      // A running training job checkpoints and stays queued for the next start; a step that
      // outlasts the grace is abandoned, and the job resumes from its last periodic checkpoint.
      await bounded(state.training?.jobs.stop() ?? Promise.resolve());
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      if (Number.isFinite(deadline)) {
        // Streams past the grace end with a last error event; a moment to flush it, then every
        // socket still open is cut (a client that stopped reading would otherwise hold close()).
        state.streamsCut?.abort();
        await Promise.race([closed, sleep(Math.min(100, deadline - Date.now()))]);
        server.closeAllConnections();
      }
      // Keep-alive sockets would hold close() open.
      server.closeIdleConnections();
      await bounded(closed);
      // Also when startup failed after the engine was up: its worker would keep the process alive.
      await engine?.close(deadline);
      await bounded(claims?.close() ?? Promise.resolve());
      if (!options.telemetry) await bounded(state.telemetry.shutdown());
    },
  };
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, Math.max(0, ms));
    signal?.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
  });

/**
 * Runs `load` until the store answers: while it is unavailable the server stays up and not ready
 * (readiness says why), retrying with backoff up to 10 s, so a replica started during a store
 * outage comes up when the store does instead of exiting. Other failures end startup.
 */
async function untilStoreAnswers(state: ServerState, stopping: AbortSignal, load: () => Promise<void>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await load();
      state.startupStatus = undefined;
      return;
    } catch (err) {
      if (!(err instanceof StoreUnavailableError)) throw err;
      if (stopping.aborted) throw new Error('the server stopped while waiting for the delta store');
      state.startupStatus = `waiting for the delta store: ${err.message}`;
      state.logger.warn({ attempt, error: err.detail }, state.startupStatus);
      await sleep(Math.min(500 * 2 ** (attempt - 1), 10_000), stopping);
    }
  }
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

/** Uploads older than this without a commit marker were abandoned (a killed writer); see s3-sweep.ts. */
const ABANDONED_UPLOAD_MS = 60 * 60 * 1000;

/** In the background: what killed S3 uploads left behind is removed once surely abandoned. */
function sweepAbandonedUploads(store: S3DeltaStore, logger: Logger): void {
  sweepUncommittedVersions(store, ABANDONED_UPLOAD_MS).then(
    (swept) => swept.length && logger.info({ versions: swept }, 'removed the objects of uploads abandoned over an hour ago'),
    (err: Error) => logger.warn({ error: err.message }, 'could not look for abandoned uploads in the delta store'),
  );
}

function listen(fetch: (req: Request) => Response | Promise<Response>, hostname: string, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    // Without createServer options, @hono/node-server serves plain HTTP/1.1 (node:http).
    const server = serve({ fetch, hostname, port }, () => resolve(server)) as Server;
    server.once('error', reject);
  });
}

/** Points the telemetry's gauges at the engine and the job manager, records delta loads, and logs engine restarts. */
function observeServer(state: ServerState, engine: Engine): void {
  const { instruments } = state.telemetry;
  engine.onLifecycle((event) => {
    if (event.phase === 'crashed') state.logger.error({ reason: event.reason }, 'the engine thread crashed; restarting it (requests in flight failed with 503)');
    else if (event.phase === 'restarted') state.logger.warn({ ms: Math.round(event.ms), attempts: event.attempts }, 'the engine thread restarted');
    else state.logger.fatal({ reason: event.reason, attempts: event.attempts }, 'the engine thread could not be restarted; liveness now fails');
  });
  engine.onDeltaLoad((load) => instruments.deltaLoadDuration.record(load.ms / 1000, { 'deltaserve.cache.tier': load.tier }));
  instruments.observe({
    serving: () => engine.stats(),
    training: () => state.training?.jobs.snapshot(),
  });
}

async function drain(state: ServerState, deadline: number): Promise<void> {
  state.draining = true;
  state.logger.info({ inFlight: state.inFlight, drainMs: Math.max(0, deadline - Date.now()) }, 'draining');
  // The training job checkpoints after its current step meanwhile (close() waits for it, bounded).
  void state.training?.jobs.stop();
  while (state.inFlight > 0 && Date.now() < deadline) await sleep(Math.min(50, deadline - Date.now()));
  if (state.inFlight > 0) state.logger.warn({ inFlight: state.inFlight }, 'grace period over; closing with requests in flight');
}
