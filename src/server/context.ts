import type { Engine } from '../engine/client.js';
import type { DeltaCatalog } from '../deltas/catalog.js';
import type { DeltaService } from './delta-service.js';
import type { ChatTemplate } from '../model/chat-template.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import type { AuthTable } from './auth.js';
import type { TrainingService } from './training-service.js';
import type { TenantQuotas } from './quotas.js';
import type { TenantLimits } from './limits/tenant-limits.js';
import type { Logger } from '../telemetry/logger.js';
import type { Telemetry } from '../telemetry/telemetry.js';

/** What routes need from the running server; `engine` is undefined until the model is loaded. */
export interface ServerState {
  modelName: string;
  engine?: Engine;
  tokenizer?: TextTokenizer;
  chatTemplate?: ChatTemplate | null;
  deltas: DeltaCatalog;
  /** API keys → tenants; null is open single-tenant mode (every request is the default tenant). */
  auth: AuthTable | null;
  /** Uploads, stored versions and their registration; undefined until the engine is loaded. */
  deltaService?: DeltaService;
  /** Training files and fine-tuning jobs; undefined until the engine is loaded. */
  training?: TrainingService;
  /** Where uploads are spooled while they arrive (under the data directory, not a tmpfs). */
  spoolDir: string;
  /** Largest delta upload in bytes. */
  maxDeltaBytes: number;
  /** Largest training file upload in bytes. */
  maxTrainingFileBytes: number;
  /** Largest accepted request body in bytes. */
  maxBodyBytes: number;
  /** Per-tenant rate limits and concurrency (generation routes). */
  limits: TenantLimits;
  /** Per-tenant storage and job quotas. */
  quotas: TenantQuotas;
  /** The most choices (prompts × n) one generation request may ask for: the queue size, or the tenant concurrency cap if smaller. */
  maxChoices: number;
  /** With an auth file, GET /metrics needs no key (and lists public deltas only). */
  publicMetrics: boolean;
  /** Abandon a generation this long after it arrived (0: never). */
  requestTimeoutMs: number;
  startedAt: number;
  telemetry: Telemetry;
  logger: Logger;
  /** Log prompt and completion text (debug level); off by default. */
  logPrompts: boolean;
  /** Generation requests not yet finished (their last byte not yet written). */
  inFlight: number;
  /** Shutting down: readiness is 503 and new generations are refused. */
  draining: boolean;
  /** Why startup has not finished, when it is waiting on something (the delta store), for readiness. */
  startupStatus?: string;
  /** Aborted when the shutdown grace ends: streams still running send a last error event and end. */
  streamsCut?: AbortController;
}

declare module 'hono' {
  interface ContextVariableMap {
    requestId: string;
    /** The tenant the request acts as (set by the authenticate middleware on /v1 routes). */
    tenant: string;
    /** The key is an admin key (always true in open mode). */
    isAdmin: boolean;
    /** The key's id for audit lines (see auth.keyId); null in open mode. */
    keyId: string | null;
    /** Fields a route adds to the request's log line (model, delta, ...). */
    logFields: Record<string, unknown>;
  }
}
