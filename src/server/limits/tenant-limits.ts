import { LRUCache } from 'lru-cache';
import { TokenBucket } from './token-bucket.js';

export interface TenantLimitOptions {
  /** Requests per second per tenant, with a burst of `requestBurst` (0 = unlimited). */
  requestsPerSecond: number;
  requestBurst: number;
  /** Generated tokens per second per tenant, with a burst (0 = unlimited). */
  tokensPerSecond: number;
  tokenBurst: number;
  /** Generation choices (a request's prompts × n) one tenant may have in flight at once (0 = unlimited). */
  maxConcurrent: number;
  /** Tenants whose state is kept (least recently seen dropped first), so memory stays bounded. */
  maxTenants?: number;
  /** The clock in milliseconds; Date.now unless a test injects one. */
  now?: () => number;
}

/** The limit a refused request ran into. */
export type LimitName = 'requests_per_second' | 'tokens_per_second' | 'concurrent_requests';

export type Admission =
  | { ok: true; release: () => void }
  | { ok: false; limit: LimitName; retryAfterSeconds: number; message: string };

export const DEFAULT_MAX_TENANTS = 10_000;

/** A slot frees when one of the tenant's generations ends, which no clock predicts; 1 s is a polite guess. */
const CONCURRENCY_RETRY_MS = 1_000;

interface Buckets {
  requests: TokenBucket;
  tokens: TokenBucket;
}

/**
 * Per-tenant limits: a token bucket of requests, a token bucket of generated tokens (charged after
 * the fact, so a tenant in debt waits before its next request), and a cap on requests in flight.
 * Tenants never share a bucket, so one tenant at its limits leaves the others untouched.
 *
 * A refusal changes nothing: no bucket is charged, no tenant is added or made more recent. The
 * buckets of the `maxTenants` most recently admitted or charged tenants are kept; an evicted
 * tenant starts again with full buckets, but in-flight counts live apart, holding only tenants with
 * requests in flight, so eviction never forgets one.
 *
 * @example
 * const limits = new TenantLimits({ requestsPerSecond: 5, requestBurst: 10, tokensPerSecond: 2_000, tokenBurst: 8_000, maxConcurrent: 4 });
 * const admitted = limits.admit('acme');
 * if (!admitted.ok) throw new ApiError(429, admitted.message, null, 'rate_limit_exceeded', { 'Retry-After': String(admitted.retryAfterSeconds) });
 * try { limits.recordTokens('acme', await generate()); } finally { admitted.release(); }
 */
export class TenantLimits {
  private readonly options: Readonly<Required<Omit<TenantLimitOptions, 'now'>>>;
  private readonly now: () => number;
  private readonly buckets: LRUCache<string, Buckets>;
  private readonly active = new Map<string, number>();

  constructor(options: TenantLimitOptions) {
    const problems = optionProblems(options);
    if (problems.length) throw new RangeError(`tenant limits: ${problems.join('; ')}`);
    const { requestsPerSecond, requestBurst, tokensPerSecond, tokenBurst, maxConcurrent, maxTenants = DEFAULT_MAX_TENANTS } = options;
    this.options = { requestsPerSecond, requestBurst, tokensPerSecond, tokenBurst, maxConcurrent, maxTenants };
    this.now = options.now ?? Date.now;
    this.buckets = new LRUCache<string, Buckets>({ max: maxTenants });
  }

  /**
   * Admits one request of `tenant` if its request bucket has a token, its token bucket is not in
   * debt (holds at least one token) and it is under its concurrency cap; the request takes a
   * request token and counts as in flight until `release` (idempotent) is called. Otherwise
   * names the limit and when to retry; when several limits refuse, the one with the longest wait.
   */
  admit(tenant: string, choices = 1): Admission {
    if (!Number.isSafeInteger(choices) || choices < 1) throw new RangeError(`tenant limits: choices must be a positive integer (got ${choices})`);
    const now = this.now();
    const known = this.buckets.peek(tenant);
    const buckets = known ?? this.fresh();
    const refusal = this.refusal(tenant, buckets, now, choices);
    if (refusal) return refusal;
    if (known) this.buckets.get(tenant); // now the most recently seen
    else if (!(buckets.requests.unlimited && buckets.tokens.unlimited)) this.buckets.set(tenant, buckets);
    buckets.requests.take(1, now);
    this.active.set(tenant, this.inFlight(tenant) + choices);
    let released = false;
    return {
      ok: true,
      release: () => {
        if (released) return;
        released = true;
        const left = this.inFlight(tenant) - choices;
        if (left > 0) this.active.set(tenant, left);
        else this.active.delete(tenant);
      },
    };
  }

  /** Counts `tokens` generated for `tenant` against its token bucket, even into debt. */
  recordTokens(tenant: string, tokens: number): void {
    if (!Number.isFinite(tokens) || tokens < 0) throw new RangeError(`tenant limits: generated tokens must be a finite number >= 0 (got ${tokens})`);
    if (this.options.tokensPerSecond === 0) return;
    let buckets = this.buckets.get(tenant);
    if (!buckets) this.buckets.set(tenant, (buckets = this.fresh()));
    buckets.tokens.debit(tokens, this.now());
  }

  /** The tenant's choices in flight (admitted, not yet released). */
  inFlight(tenant: string): number {
    return this.active.get(tenant) ?? 0;
  }

  private fresh(): Buckets {
    const o = this.options;
    return {
      requests: new TokenBucket({ capacity: o.requestBurst, ratePerSecond: o.requestsPerSecond }),
      tokens: new TokenBucket({ capacity: o.tokenBurst, ratePerSecond: o.tokensPerSecond }),
    };
  }

  private refusal(tenant: string, buckets: Buckets, now: number, choices: number): Extract<Admission, { ok: false }> | null {
    const o = this.options;
    const inFlight = this.inFlight(tenant);
    const waits: [LimitName, number][] = [
      ['concurrent_requests', o.maxConcurrent > 0 && inFlight + choices > o.maxConcurrent ? CONCURRENCY_RETRY_MS : 0],
      ['tokens_per_second', buckets.tokens.waitMs(1, now)],
      ['requests_per_second', buckets.requests.waitMs(1, now)],
    ];
    let [limit, ms] = waits[0]!;
    for (const [name, wait] of waits) if (wait > ms) [limit, ms] = [name, wait];
    if (ms === 0) return null;
    const retryAfterSeconds = Math.max(1, Math.ceil(ms / 1000));
    const what = {
      concurrent_requests: `has ${inFlight} generation choices in flight; ${choices} more would pass its limit of ${o.maxConcurrent}`,
      tokens_per_second: `is over its limit of ${o.tokensPerSecond} generated tokens per second (burst ${o.tokenBurst})`,
      requests_per_second: `is over its limit of ${o.requestsPerSecond} requests per second (burst ${o.requestBurst})`,
    }[limit];
    return { ok: false, limit, retryAfterSeconds, message: `tenant '${tenant}' ${what}; retry in ${retryAfterSeconds} s` };
  }
}

/** Every problem with the options, so one error names them all. */
function optionProblems(options: TenantLimitOptions): string[] {
  if (!options || typeof options !== 'object') return ['options are required'];
  const problems: string[] = [];
  const check = (name: keyof TenantLimitOptions, ok: boolean, expected: string) => {
    if (!ok) problems.push(`${name} must be ${expected} (got ${String(options[name])})`);
  };
  const rate = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v >= 0;
  const count = (v: unknown, min = 0) => Number.isSafeInteger(v) && (v as number) >= min;
  check('requestsPerSecond', rate(options.requestsPerSecond), 'a finite number >= 0, 0 for unlimited');
  check('tokensPerSecond', rate(options.tokensPerSecond), 'a finite number >= 0, 0 for unlimited');
  // A burst below one would refuse every request forever; with no rate it is unused.
  check('requestBurst', count(options.requestBurst, options.requestsPerSecond > 0 ? 1 : 0), options.requestsPerSecond > 0 ? 'an integer >= 1 when requestsPerSecond is set' : 'an integer >= 0');
  check('tokenBurst', count(options.tokenBurst, options.tokensPerSecond > 0 ? 1 : 0), options.tokensPerSecond > 0 ? 'an integer >= 1 when tokensPerSecond is set' : 'an integer >= 0');
  check('maxConcurrent', count(options.maxConcurrent), 'an integer >= 0, 0 for unlimited');
  check('maxTenants', options.maxTenants === undefined || count(options.maxTenants, 1), 'an integer >= 1');
  check('now', options.now === undefined || typeof options.now === 'function', 'a function returning milliseconds');
  return problems;
}
