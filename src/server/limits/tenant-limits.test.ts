import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { TenantLimits, type Admission, type TenantLimitOptions } from './tenant-limits.js';

const UNLIMITED = { requestsPerSecond: 0, requestBurst: 0, tokensPerSecond: 0, tokenBurst: 0, maxConcurrent: 0 };

/** Limits on a clock the test moves by hand. */
function limitsAt(options: Partial<TenantLimitOptions>) {
  const clock = { ms: 1_700_000_000_000 };
  const limits = new TenantLimits({ ...UNLIMITED, ...options, now: () => clock.ms });
  return { limits, clock };
}

function admitted(result: Admission): () => void {
  assert.ok(result.ok, `expected admission, got ${result.ok ? '' : result.message}`);
  return result.release;
}

function refused(result: Admission): Extract<Admission, { ok: false }> {
  assert.ok(!result.ok, 'expected a refusal');
  return result;
}

describe('TenantLimits', () => {
  it('throttles one tenant while another is admitted', () => {
    const { limits } = limitsAt({ requestsPerSecond: 1, requestBurst: 2 });
    admitted(limits.admit('acme'));
    admitted(limits.admit('acme'));
    assert.equal(refused(limits.admit('acme')).limit, 'requests_per_second');
    admitted(limits.admit('globex'));
    admitted(limits.admit('globex'));
  });

  it('requests per second: refuses past the burst and says when a token is back', () => {
    const { limits, clock } = limitsAt({ requestsPerSecond: 0.25, requestBurst: 1 });
    admitted(limits.admit('acme'));
    const r = refused(limits.admit('acme'));
    assert.deepEqual(r, { ok: false, limit: 'requests_per_second', retryAfterSeconds: 4, message: "tenant 'acme' is over its limit of 0.25 requests per second (burst 1); retry in 4 s" });
    clock.ms += 3_999;
    assert.equal(refused(limits.admit('acme')).retryAfterSeconds, 1, 'rounded up to whole seconds');
    clock.ms += 1;
    admitted(limits.admit('acme'));
  });

  it('tokens per second: generated tokens put the tenant in debt, and its next request waits it out', () => {
    const { limits, clock } = limitsAt({ tokensPerSecond: 100, tokenBurst: 100 });
    admitted(limits.admit('acme'));
    limits.recordTokens('acme', 350);
    const r = refused(limits.admit('acme'));
    assert.equal(r.limit, 'tokens_per_second');
    assert.equal(r.retryAfterSeconds, 3, 'from -250 to 1 token at 100/s is 2.51 s');
    assert.match(r.message, /100 generated tokens per second \(burst 100\)/);
    admitted(limits.admit('globex'));
    clock.ms += 2_509;
    refused(limits.admit('acme'));
    clock.ms += 1;
    admitted(limits.admit('acme'));
  });

  it('concurrent requests: refuses at the cap with Retry-After 1 s until one is released', () => {
    const { limits } = limitsAt({ maxConcurrent: 2 });
    const first = admitted(limits.admit('acme'));
    admitted(limits.admit('acme'));
    assert.deepEqual(refused(limits.admit('acme')), {
      ok: false,
      limit: 'concurrent_requests',
      retryAfterSeconds: 1,
      message: "tenant 'acme' has 2 generation choices in flight; 1 more would pass its limit of 2; retry in 1 s",
    });
    admitted(limits.admit('globex'));
    first();
    assert.equal(limits.inFlight('acme'), 1);
    admitted(limits.admit('acme'));
  });

  it('concurrency counts choices: a request of n choices takes n of the cap and gives them back', () => {
    const { limits } = limitsAt({ maxConcurrent: 5 });
    const four = admitted(limits.admit('acme', 4));
    assert.equal(limits.inFlight('acme'), 4);
    assert.equal(refused(limits.admit('acme', 2)).limit, 'concurrent_requests');
    admitted(limits.admit('acme', 1));
    four();
    assert.equal(limits.inFlight('acme'), 1);
    assert.throws(() => limits.admit('acme', 0), /choices must be a positive integer/);
  });

  it('release is idempotent', () => {
    const { limits } = limitsAt({ maxConcurrent: 3 });
    const a = admitted(limits.admit('acme'));
    admitted(limits.admit('acme'));
    a();
    a();
    a();
    assert.equal(limits.inFlight('acme'), 1);
  });

  it('a refused request takes nothing from any bucket', () => {
    const { limits } = limitsAt({ requestsPerSecond: 1, requestBurst: 2, maxConcurrent: 1 });
    const release = admitted(limits.admit('acme'));
    for (let i = 0; i < 5; i++) assert.equal(refused(limits.admit('acme')).limit, 'concurrent_requests');
    release();
    admitted(limits.admit('acme'))(); // the second token: the refusals took none
    assert.equal(refused(limits.admit('acme')).limit, 'requests_per_second');
  });

  it('when several limits refuse, names the one with the longest wait', () => {
    const { limits } = limitsAt({ requestsPerSecond: 0.1, requestBurst: 1, maxConcurrent: 1 });
    admitted(limits.admit('acme'));
    const r = refused(limits.admit('acme'));
    assert.equal(r.limit, 'requests_per_second');
    assert.equal(r.retryAfterSeconds, 10);
  });

  it('keeps the buckets of at most maxTenants tenants, least recently seen dropped first', () => {
    const { limits } = limitsAt({ requestsPerSecond: 1, requestBurst: 1, maxTenants: 2 });
    admitted(limits.admit('acme'));
    admitted(limits.admit('globex'));
    refused(limits.admit('acme')); // a refusal does not make acme recent
    admitted(limits.admit('initech')); // evicts acme, the least recently admitted
    admitted(limits.admit('acme')); // so it starts again with a full bucket (and evicts globex)
    refused(limits.admit('initech'));
    admitted(limits.admit('globex'));
  });

  it('an evicted tenant keeps its in-flight count', () => {
    const { limits } = limitsAt({ requestsPerSecond: 1000, requestBurst: 10, maxConcurrent: 1, maxTenants: 1 });
    const release = admitted(limits.admit('acme'));
    admitted(limits.admit('globex')); // evicts acme's buckets
    assert.equal(limits.inFlight('acme'), 1);
    assert.equal(refused(limits.admit('acme')).limit, 'concurrent_requests');
    release();
    admitted(limits.admit('acme'));
  });

  it('0 is unlimited for every limit', () => {
    const { limits } = limitsAt({});
    for (let i = 0; i < 1_000; i++) admitted(limits.admit('acme'));
    limits.recordTokens('acme', 1e12);
    admitted(limits.admit('acme'));
    assert.equal(limits.inFlight('acme'), 1_001);
  });

  it('rejects bad options, naming every one', () => {
    assert.throws(
      () => new TenantLimits({ requestsPerSecond: -1, requestBurst: 1.5, tokensPerSecond: Infinity, tokenBurst: 0, maxConcurrent: -2, maxTenants: 0 }),
      (err: Error) => {
        for (const p of [/requestsPerSecond .*got -1/, /requestBurst .*got 1\.5/, /tokensPerSecond .*got Infinity/, /maxConcurrent .*got -2/, /maxTenants .*got 0/]) assert.match(err.message, p);
        return true;
      },
    );
    assert.throws(() => new TenantLimits({ ...UNLIMITED, requestsPerSecond: 5, requestBurst: 0 }), /requestBurst must be an integer >= 1 when requestsPerSecond is set \(got 0\)/);
    assert.throws(() => new TenantLimits({ ...UNLIMITED, tokensPerSecond: 5, tokenBurst: 0 }), /tokenBurst must be an integer >= 1/);
    assert.throws(() => new TenantLimits(undefined as unknown as TenantLimitOptions), /options are required/);
    assert.throws(() => limitsAt({}).limits.recordTokens('acme', -1), /got -1/);
  });
});

type Op = { kind: 'admit'; tenant: string; repeat: number } | { kind: 'release'; index: number } | { kind: 'tokens'; tenant: string; n: number } | { kind: 'wait'; ms: number };

const TENANTS = ['a', 'b', 'c', 'd'];
const tenantArb = fc.constantFrom(...TENANTS);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant('admit' as const), tenant: tenantArb, repeat: fc.integer({ min: 1, max: 3 }) }), weight: 5 },
  { arbitrary: fc.record({ kind: fc.constant('release' as const), index: fc.nat() }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('tokens' as const), tenant: tenantArb, n: fc.integer({ min: 0, max: 40 }) }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 3_000 }) }), weight: 2 },
);
const optionsArb = fc.record({
  requestsPerSecond: fc.constantFrom(0, 0.5, 1, 4),
  requestBurst: fc.integer({ min: 1, max: 3 }),
  tokensPerSecond: fc.constantFrom(0, 10, 25),
  tokenBurst: fc.integer({ min: 1, max: 30 }),
  maxConcurrent: fc.integer({ min: 0, max: 3 }),
  maxTenants: fc.integer({ min: 1, max: 5 }),
});

describe('TenantLimits properties', () => {
  it('refusals change nothing: limits that see every refused request (several times) behave as limits that see none', () => {
    fc.assert(
      fc.property(optionsArb, fc.array(opArb, { maxLength: 60 }), (options, ops) => {
        const clock = { ms: 0 };
        const seen = new TenantLimits({ ...options, now: () => clock.ms });
        const spared = new TenantLimits({ ...options, now: () => clock.ms });
        const releases: [() => void, () => void][] = [];
        for (const op of ops) {
          if (op.kind === 'wait') clock.ms += op.ms;
          else if (op.kind === 'tokens') [seen, spared].forEach((l) => l.recordTokens(op.tenant, op.n));
          else if (op.kind === 'release' && releases.length) releases[op.index % releases.length]!.forEach((release) => release());
          else if (op.kind === 'admit') {
            const first = seen.admit(op.tenant);
            if (first.ok) releases.push([first.release, admitted(spared.admit(op.tenant))]);
            else for (let i = 1; i < op.repeat; i++) assert.deepEqual(seen.admit(op.tenant), first);
          }
          for (const t of TENANTS) assert.equal(seen.inFlight(t), spared.inFlight(t));
        }
        // Every bucket must agree too: probe both the same way.
        for (const t of TENANTS) assert.deepEqual(strip(seen.admit(t)), strip(spared.admit(t)));
      }),
      { numRuns: 2_000 },
    );
  });
});

function strip(a: Admission) {
  return a.ok ? { ok: true } : { ...a };
}
