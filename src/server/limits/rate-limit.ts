import type { Context, MiddlewareHandler } from 'hono';
import { ApiError } from '../errors.js';
import { whenFinished } from '../middleware/finished.js';
import { TenantLimits } from './tenant-limits.js';

export interface RateLimitOptions {
  /** The per-tenant limits; one instance shared by every route that mounts the middleware. */
  limits: TenantLimits;
}

/** Per request: how it is admitted (by the route, once it knows its choices) and charged. */
interface Gate {
  admit: (choices: number) => void;
  record?: (tokens: number) => void;
}
const gates = new WeakMap<Context, Gate>();

/**
 * Puts a request under its tenant's limits (see {@link TenantLimits}). The route admits it with
 * {@link admitGeneration} once it has parsed how many choices it asks for (prompts × n), before
 * any work; a refusal is 429 (`rate_limit_error`, code `rate_limit_exceeded`) with `Retry-After`
 * in seconds. Mount it after `authenticate`, which sets the tenant, on generation routes.
 *
 * An admitted request counts as in flight until its response is finished: for a streamed response
 * (`text/event-stream`, or `Transfer-Encoding: chunked`, as hono's `streamSSE` and `streamText`
 * send) when its body ends, fails or is cancelled by the client; for any other response when the
 * handler returns, since its body is complete by then. A streamed body that is never read nor
 * cancelled keeps the request in flight; @hono/node-server always does one or the other.
 *
 * @example
 * const limits = new TenantLimits({ requestsPerSecond: 5, requestBurst: 10, tokensPerSecond: 2_000, tokenBurst: 8_000, maxConcurrent: 4 });
 * app.use('/v1/*', authenticate({ table }));
 * app.post('/v1/completions', rateLimit({ limits }), completionsHandler);
 */
export function rateLimit(options: RateLimitOptions): MiddlewareHandler {
  if (!options || typeof options !== 'object' || !(options.limits instanceof TenantLimits)) {
    throw new Error('rateLimit middleware requires options.limits (a TenantLimits)');
  }
  const { limits } = options;
  return async function rateLimit(c, next) {
    const tenant = c.get('tenant');
    if (typeof tenant !== 'string') throw new Error('rateLimit middleware found no tenant: mount it after authenticate');
    let release = () => {};
    const gate: Gate = {
      admit(choices) {
        if (gate.record) throw new Error('admitGeneration called twice for one request');
        const admission = limits.admit(tenant, choices);
        if (!admission.ok) throw new ApiError(429, admission.message, null, 'rate_limit_exceeded', { 'Retry-After': String(admission.retryAfterSeconds) });
        release = admission.release;
        gate.record = (tokens) => limits.recordTokens(tenant, tokens);
      },
    };
    gates.set(c, gate);
    try {
      await next();
    } catch (err) {
      release();
      throw err;
    }
    whenFinished(c, () => release());
  };
}

/**
 * Admits a generation of `choices` sequences under the tenant's limits, or throws the 429. A no-op
 * where `rateLimit` is not mounted.
 *
 * @example admitGeneration(c, prompts.length * n);
 */
export function admitGeneration(c: Context, choices: number): void {
  gates.get(c)?.admit(choices);
}

/**
 * Charges `tokens` generated for this request to its tenant's token bucket; a no-op where
 * `rateLimit` did not admit the request (not mounted, or limits off), so routes call it freely.
 *
 * @example
 * for await (const event of generation) if (event.type === 'token') recordGeneratedTokens(c, 1);
 */
export function recordGeneratedTokens(c: Context, tokens: number): void {
  gates.get(c)?.record?.(tokens);
}
