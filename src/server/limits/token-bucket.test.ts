import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { TokenBucket } from './token-bucket.js';

describe('TokenBucket', () => {
  it('starts full, grants a burst up to capacity, then refills at the rate', () => {
    const bucket = new TokenBucket({ capacity: 10, ratePerSecond: 5 });
    assert.equal(bucket.available(1_000), 10);
    assert.deepEqual(bucket.take(7, 1_000), { ok: true });
    assert.deepEqual(bucket.take(3, 1_000), { ok: true });
    assert.deepEqual(bucket.take(1, 1_000), { ok: false, retryAfterMs: 200 });
    assert.equal(bucket.available(1_100), 0.5);
    assert.deepEqual(bucket.take(1, 1_200), { ok: true });
    assert.equal(bucket.available(60_000), 10, 'refill stops at capacity');
  });

  it('never takes part of a request: a refused take leaves the balance as it was', () => {
    const bucket = new TokenBucket({ capacity: 4, ratePerSecond: 1 });
    assert.deepEqual(bucket.take(3, 0), { ok: true });
    assert.deepEqual(bucket.take(2, 0), { ok: false, retryAfterMs: 1_000 });
    assert.equal(bucket.available(0), 1);
    assert.deepEqual(bucket.take(2, 1_000), { ok: true });
  });

  it('debit drives the balance negative, and the next take waits out the debt', () => {
    const bucket = new TokenBucket({ capacity: 10, ratePerSecond: 10 });
    bucket.debit(25, 0);
    assert.equal(bucket.available(0), -15);
    assert.deepEqual(bucket.take(1, 0), { ok: false, retryAfterMs: 1_600 });
    assert.deepEqual(bucket.take(1, 1_599), { ok: false, retryAfterMs: 1 });
    assert.deepEqual(bucket.take(1, 1_600), { ok: true });
  });

  it('a take larger than the capacity can never succeed: retryAfterMs is Infinity', () => {
    const bucket = new TokenBucket({ capacity: 4, ratePerSecond: 100 });
    assert.deepEqual(bucket.take(5, 0), { ok: false, retryAfterMs: Infinity });
    assert.equal(bucket.available(0), 4);
  });

  it('rate 0 is unlimited: every take succeeds and debits are ignored', () => {
    const bucket = new TokenBucket({ capacity: 0, ratePerSecond: 0 });
    assert.equal(bucket.unlimited, true);
    bucket.debit(1e9, 0);
    for (let i = 0; i < 100; i++) assert.deepEqual(bucket.take(1_000, 0), { ok: true });
    assert.equal(bucket.available(0), Infinity);
    assert.equal(bucket.waitMs(1e12, 0), 0);
  });

  it('a clock that steps back refills nothing until it passes its latest reading', () => {
    const bucket = new TokenBucket({ capacity: 2, ratePerSecond: 1 });
    assert.deepEqual(bucket.take(2, 5_000), { ok: true });
    assert.equal(bucket.available(3_000), 0);
    assert.deepEqual(bucket.take(1, 3_000), { ok: false, retryAfterMs: 3_000 });
    assert.deepEqual(bucket.take(1, 6_000), { ok: true });
  });

  it('rejects bad options and amounts, naming the value', () => {
    assert.throws(() => new TokenBucket({ capacity: 1, ratePerSecond: -1 }), /ratePerSecond .*got -1/);
    assert.throws(() => new TokenBucket({ capacity: 1, ratePerSecond: Infinity }), /ratePerSecond .*got Infinity/);
    assert.throws(() => new TokenBucket({ capacity: 0, ratePerSecond: 1 }), /capacity .*got 0/);
    assert.throws(() => new TokenBucket({ capacity: NaN, ratePerSecond: 1 }), /capacity .*got NaN/);
    const bucket = new TokenBucket({ capacity: 1, ratePerSecond: 1 });
    assert.throws(() => bucket.take(-1, 0), /got -1/);
    assert.throws(() => bucket.debit(NaN, 0), /got NaN/);
  });
});

/** One call on the bucket, `dt` ms after the previous one. */
type Op = { kind: 'take' | 'debit'; n: number; dt: number };
type Event = Op & { at: number; ok: boolean };

const bucketArb = fc.record({
  capacity: fc.integer({ min: 1, max: 50 }),
  ratePerSecond: fc.oneof(fc.integer({ min: 1, max: 1_000 }), fc.double({ min: 0.01, max: 500, noNaN: true })),
  start: fc.integer({ min: 0, max: 2e12 }),
});
const opArb = fc.record({
  kind: fc.constantFrom<Op['kind']>('take', 'take', 'take', 'debit'),
  n: fc.oneof(fc.integer({ min: 1, max: 60 }), fc.double({ min: 0, max: 20, noNaN: true })),
  dt: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 50 }), fc.integer({ min: 0, max: 5_000 })),
});

function play(bucket: TokenBucket, start: number, ops: readonly Op[]): Event[] {
  let at = start;
  return ops.map((op) => {
    at += op.dt;
    if (op.kind === 'debit') {
      bucket.debit(op.n, at);
      return { ...op, at, ok: true };
    }
    return { ...op, at, ok: bucket.take(op.n, at).ok };
  });
}

describe('TokenBucket properties', () => {
  it('grants at most capacity + rate × window in any window, debits counted up to a granted take', () => {
    fc.assert(
      fc.property(bucketArb, fc.array(opArb, { maxLength: 40 }), ({ capacity, ratePerSecond, start }, ops) => {
        const events = play(new TokenBucket({ capacity, ratePerSecond }), start, ops);
        for (let i = 0; i < events.length; i++) {
          let granted = 0;
          let spent = 0;
          for (let j = i; j < events.length; j++) {
            const e = events[j]!;
            const bound = capacity + (ratePerSecond * (e.at - events[i]!.at)) / 1000;
            const slack = 1e-9 * (1 + bound);
            if (e.ok) spent += e.n;
            if (e.kind === 'take' && e.ok) granted += e.n;
            if (e.kind === 'take' && e.ok && e.n > 0) {
              // A granted take of n > 0 leaves the balance >= 0, so everything charged since i fits the bound.
              assert.ok(spent <= bound + slack, `charged ${spent} in [${events[i]!.at}, ${e.at}] > ${bound}`);
            }
            assert.ok(granted <= bound + slack, `granted ${granted} in [${events[i]!.at}, ${e.at}] > ${bound}`);
          }
        }
      }),
      { numRuns: 3_000 },
    );
  });

  it('retryAfterMs is exact: a millisecond earlier is refused, at that time the take succeeds', () => {
    fc.assert(
      fc.property(bucketArb, fc.array(opArb, { maxLength: 30 }), ({ capacity, ratePerSecond, start }, ops) => {
        const bucket = new TokenBucket({ capacity, ratePerSecond });
        let at = start;
        for (const op of ops) {
          at += op.dt;
          if (op.kind === 'debit') {
            bucket.debit(op.n, at);
            continue;
          }
          const first = bucket.take(op.n, at);
          if (first.ok) continue;
          if (op.n > capacity) {
            assert.equal(first.retryAfterMs, Infinity);
            continue;
          }
          assert.ok(Number.isInteger(first.retryAfterMs) && first.retryAfterMs >= 1, `retryAfterMs ${first.retryAfterMs}`);
          const early = bucket.take(op.n, at + first.retryAfterMs - 1);
          assert.equal(early.ok, false, 'refused a millisecond early');
          assert.deepEqual(bucket.take(op.n, at), first, 'a refusal changed nothing');
          at += first.retryAfterMs;
          assert.deepEqual(bucket.take(op.n, at), { ok: true }, `take(${op.n}) after ${first.retryAfterMs} ms`);
        }
      }),
      { numRuns: 3_000 },
    );
  });
});
