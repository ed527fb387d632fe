import type { Context, MiddlewareHandler } from 'hono';
import { ApiError } from '../errors.js';
import { whenFinished } from '../middleware/finished.js';
import { checkChoiceCount } from '../plan.js';
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

/** How many sequences a request asks for: prompts × n, and the field to name when that is too many. */
export interface RequestedChoices {
  prompts: number;
  n: number;
  param: string;
}

export interface AdmitChoicesOptions {
  /** The most choices one request may ever have (a request over it is a 400, not a 429 that could never clear). */
  maxChoices: number;
  /** Reads the count from the request (its validated body). */
  choices: (c: Context) => RequestedChoices;
}

/**
 * Admits a generation under its tenant's limits once its choices are known, before its handler
 * tokenizes anything: more than `maxChoices` is a 400 `too_many_choices`, over a limit a 429 (see
 * rateLimit). Mount it after `rateLimit` and after the body is validated and its deltas resolved,
 * so an unknown model is a 404 rather than a charge.
 *
 * @example app.on('POST', ['/v1/chat/completions'], admitChoices({ maxChoices: 256, choices: (c) => ({ prompts: 1, n: 1, param: 'n' }) }));
 */
export function admitChoices(options: AdmitChoicesOptions): MiddlewareHandler {
  const { maxChoices, choices } = options ?? {};
  if (!Number.isInteger(maxChoices) || maxChoices < 1) throw new Error(`admitChoices: options.maxChoices must be a positive integer, got ${maxChoices}`);
  if (typeof choices !== 'function') throw new Error('admitChoices: options.choices must be a function of the context');
  return async function admitChoices(c, next) {
    const { prompts, n, param } = choices(c);
    checkChoiceCount(prompts, n, maxChoices, param);
    admitGeneration(c, prompts * n);
    await next();
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
