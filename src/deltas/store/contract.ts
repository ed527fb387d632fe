/**
 * The behaviour every DeltaStore must have, as one suite that each implementation's test file
 * runs against its own store (`describeDeltaStoreContract('filesystem', makeHarness)`).
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { describe, it } from 'node:test';
import { IdempotencyError } from './idempotency.js';
import { DeltaIntegrityError, type DeltaFiles, type DeltaStore, type DeltaVersion, type NewDeltaVersion } from './types.js';

export interface DeltaStoreHarness {
  /** A store with nothing in it. */
  store: DeltaStore;
  /** Replaces one stored file of a version with other bytes of the same length (bit rot). */
  corrupt(version: DeltaVersion, file: 'config' | 'weights'): Promise<void>;
  /**
   * Another store over the same location, as a second replica opens it (absent where creates are
   * atomic only inside one process: an S3 server without conditional writes and no claims table).
   */
  replica?(): DeltaStore;
  /** Called after the test. */
  dispose?(): Promise<void>;
}

export function makeFiles(seed: string, weightBytes = 4096): DeltaFiles {
  const config = new TextEncoder().encode(JSON.stringify({ peft_type: 'LORA', r: 8, lora_alpha: 16, seed }));
  const weights = new Uint8Array(weightBytes);
  // Deterministic, seed-dependent bytes (so every version's content differs).
  let block = crypto.createHash('sha256').update(seed).digest();
  for (let offset = 0; offset < weightBytes; offset += block.length) {
    weights.set(block.subarray(0, Math.min(block.length, weightBytes - offset)), offset);
    block = crypto.createHash('sha256').update(block).digest();
  }
  return { config, weights };
}

export function sha256Of(files: DeltaFiles): string {
  return crypto.createHash('sha256').update(files.config).update(files.weights).digest('hex');
}

function meta(owner: string, name: string, extra: Partial<NewDeltaVersion> = {}): NewDeltaVersion {
  return { owner, name, public: false, kind: 'lora', summary: { rank: 8, modules: 4 }, virtualTokens: 0, ...extra };
}

function assertSameBytes(actual: DeltaFiles, expected: DeltaFiles): void {
  assert.ok(actual.config instanceof Uint8Array && actual.weights instanceof Uint8Array);
  assert.equal(Buffer.compare(Buffer.from(actual.config), Buffer.from(expected.config)), 0, 'config bytes differ');
  assert.equal(Buffer.compare(Buffer.from(actual.weights), Buffer.from(expected.weights)), 0, 'weight bytes differ');
}

export function describeDeltaStoreContract(label: string, makeHarness: () => Promise<DeltaStoreHarness>, options: { skip?: string | false } = {}): void {
  describe(`DeltaStore contract: ${label}`, { skip: options.skip ?? false }, () => {
    const withStore = (fn: (h: DeltaStoreHarness, t: { skip(message: string): void }) => Promise<void>) => async (t: { skip(message: string): void }) => {
      const harness = await makeHarness();
      try {
        await fn(harness, t);
      } finally {
        await harness.dispose?.();
      }
    };

    it(
      'put then get, list, versions and read return what was stored',
      withStore(async ({ store }) => {
        assert.equal(typeof store.location, 'string');
        const files = makeFiles('a1');
        const put = await store.put(meta('acme', 'sql', { public: true, summary: { rank: 16, modules: 7 } }), files);
        assert.equal(put.owner, 'acme');
        assert.equal(put.name, 'sql');
        assert.equal(put.version, 1);
        assert.equal(put.sha256, sha256Of(files));
        assert.equal(put.size, files.config.byteLength + files.weights.byteLength);
        assert.equal(put.public, true);
        assert.deepEqual(put.summary, { rank: 16, modules: 7 });
        assert.equal(put.kind, 'lora');
        assert.ok(!Number.isNaN(Date.parse(put.createdAt)), 'createdAt is a date');

        assert.deepEqual(await store.get('acme', 'sql'), put);
        assert.deepEqual(await store.get('acme', 'sql', 1), put);
        assert.deepEqual(await store.list(), [put]);
        assert.deepEqual(await store.list('acme'), [put]);
        assert.deepEqual(await store.versions('acme', 'sql'), [put]);
        assertSameBytes(await store.read(put), files);
      }),
    );

    it(
      'versions increment; the bare name is the latest and a number pins one',
      withStore(async ({ store }) => {
        const files = [makeFiles('v1'), makeFiles('v2', 100), makeFiles('v3', 0)];
        const puts: DeltaVersion[] = [];
        for (const [i, f] of files.entries()) puts.push(await store.put(meta('acme', 'sql', { summary: { rank: i + 1 } }), f));
        assert.deepEqual(
          puts.map((p) => p.version),
          [1, 2, 3],
        );
        assert.deepEqual(await store.get('acme', 'sql'), puts[2]);
        assert.deepEqual(await store.get('acme', 'sql', 1), puts[0]);
        assert.deepEqual(await store.get('acme', 'sql', 2), puts[1]);
        assert.deepEqual(await store.versions('acme', 'sql'), puts);
        for (const [i, p] of puts.entries()) assertSameBytes(await store.read(p), files[i]!);

        // Other deltas and owners are independent; list shows the latest of each.
        const other = await store.put(meta('acme', 'support'), makeFiles('s1'));
        const globex = await store.put(meta('globex', 'sql'), makeFiles('g1'));
        assert.equal(other.version, 1);
        assert.equal(globex.version, 1);
        const key = (v: DeltaVersion) => `${v.owner}/${v.name}@${v.version}`;
        assert.deepEqual((await store.list()).map(key).sort(), ['acme/sql@3', 'acme/support@1', 'globex/sql@1']);
        assert.deepEqual((await store.list('acme')).map(key).sort(), ['acme/sql@3', 'acme/support@1']);
        assert.deepEqual((await store.list('globex')).map(key), ['globex/sql@1']);
      }),
    );

    it(
      '8 concurrent puts of one name get versions 1..8, each intact',
      withStore(async ({ store }) => {
        const files = Array.from({ length: 8 }, (_, i) => makeFiles(`c${i}`, 2048 + i));
        const puts = await Promise.all(files.map((f, i) => store.put(meta('acme', 'hot', { summary: { rank: i } }), f)));
        assert.deepEqual(
          puts.map((p) => p.version).sort((a, b) => a - b),
          [1, 2, 3, 4, 5, 6, 7, 8],
        );
        const stored = await store.versions('acme', 'hot');
        assert.deepEqual(
          stored.map((v) => v.version),
          [1, 2, 3, 4, 5, 6, 7, 8],
        );
        for (const [i, p] of puts.entries()) {
          assert.equal(p.summary['rank'], i);
          assert.deepEqual(await store.get('acme', 'hot', p.version), p);
          assertSameBytes(await store.read(p), files[i]!);
        }
        assert.equal((await store.get('acme', 'hot'))?.version, 8);
      }),
    );

    it(
      'a corrupted stored file makes read throw DeltaIntegrityError',
      withStore(async ({ store, corrupt }) => {
        const v1 = await store.put(meta('acme', 'rot'), makeFiles('r1'));
        const v2 = await store.put(meta('acme', 'rot'), makeFiles('r2'));
        await corrupt(v1, 'weights');
        await corrupt(v2, 'config');
        for (const v of [v1, v2]) {
          await assert.rejects(store.read(v), (error: unknown) => {
            assert.ok(error instanceof DeltaIntegrityError, String(error));
            assert.equal(error.code, 'delta_integrity');
            assert.match(error.message, new RegExp(`acme/rot@${v.version}`));
            return true;
          });
        }
        // A DeltaVersion whose recorded digest differs from the stored bytes is refused too.
        const v3 = await store.put(meta('acme', 'rot'), makeFiles('r3'));
        await assert.rejects(store.read({ ...v3, sha256: '0'.repeat(64) }), DeltaIntegrityError);
        assertSameBytes(await store.read(v3), makeFiles('r3'));
      }),
    );

    it(
      'unknown deltas are null, empty or false; delete removes every version',
      withStore(async ({ store }) => {
        assert.equal(await store.get('acme', 'nope'), null);
        assert.equal(await store.get('acme', 'nope', 1), null);
        assert.deepEqual(await store.versions('acme', 'nope'), []);
        assert.deepEqual(await store.list(), []);
        assert.deepEqual(await store.list('acme'), []);
        assert.equal(await store.delete('acme', 'nope'), false);

        const v1 = await store.put(meta('acme', 'gone'), makeFiles('d1'));
        await store.put(meta('acme', 'gone'), makeFiles('d2'));
        const kept = await store.put(meta('acme', 'kept'), makeFiles('k1'));
        assert.equal(await store.get('acme', 'gone', 3), null);
        assert.equal(await store.get('acme', 'gone', 0), null);
        assert.equal(await store.get('globex', 'gone'), null);

        assert.equal(await store.delete('acme', 'gone'), true);
        assert.equal(await store.get('acme', 'gone'), null);
        assert.equal(await store.get('acme', 'gone', 1), null);
        assert.deepEqual(await store.versions('acme', 'gone'), []);
        assert.deepEqual(await store.list(), [kept]);
        await assert.rejects(store.read(v1));
        assert.equal(await store.delete('acme', 'gone'), false);

        // The numbers stay taken: a client pinned to gone@1 must never get other weights.
        const again = await store.put(meta('acme', 'gone'), makeFiles('d3'));
        assert.equal(again.version, 3);
        assertSameBytes(await store.read(again), makeFiles('d3'));
        assert.equal(await store.get('acme', 'gone', 1), null);
        assert.deepEqual(await store.get('acme', 'gone'), again);
        assert.deepEqual(await store.versions('acme', 'gone'), [again]);
      }),
    );

    it(
      'a deleted version stays a tombstone: gone everywhere, its number never reused, across repeated deletes',
      withStore(async ({ store, replica }) => {
        const other = replica?.() ?? store;
        const v1 = await store.put(meta('acme', 're'), makeFiles('re1'));
        assert.deepEqual(await other.get('acme', 're', 1), v1);
        assert.equal(await other.delete('acme', 're'), true);
        // Seen by the store that did not delete it (another replica) at once: no cache in a store.
        assert.equal(await store.get('acme', 're', 1), null);
        assert.equal(await store.get('acme', 're'), null);
        assert.deepEqual(await store.list('acme'), []);
        const v2 = await store.put(meta('acme', 're'), makeFiles('re2'));
        const v3 = await other.put(meta('acme', 're'), makeFiles('re3'));
        assert.deepEqual([v2.version, v3.version], [2, 3]);
        assert.equal(await store.delete('acme', 're'), true);
        const v4 = await other.put(meta('acme', 're'), makeFiles('re4'));
        assert.equal(v4.version, 4);
        for (const n of [1, 2, 3]) assert.equal(await other.get('acme', 're', n), null, `re@${n} stays deleted`);
        assert.deepEqual(await store.versions('acme', 're'), [v4]);
        assert.deepEqual(await store.list(), [v4]);
      }),
    );

    it(
      'a put retried with the same idempotency key returns the first version, even while the first is in flight',
      withStore(async ({ store, replica }) => {
        const other = replica?.() ?? store;
        const files = makeFiles('idem');
        const first = await store.put(meta('acme', 'idem'), files, { idempotencyKey: 'upload-1' });
        assert.equal(first.version, 1);
        assert.deepEqual(await other.put(meta('acme', 'idem'), files, { idempotencyKey: 'upload-1' }), first);
        assert.deepEqual((await store.versions('acme', 'idem')).map((v) => v.version), [1]);
        // Concurrent retries (a client that timed out and sent it again, to another replica): one version.
        const racing = await Promise.all([store, other, store, other].map((s) => s.put(meta('acme', 'idem'), makeFiles('idem2'), { idempotencyKey: 'upload-2' })));
        assert.deepEqual(new Set(racing.map((v) => v.version)), new Set([2]));
        // Without a key, or with another key, a new version.
        assert.equal((await store.put(meta('acme', 'idem'), files)).version, 3);
        assert.equal((await store.put(meta('acme', 'idem'), files, { idempotencyKey: 'upload-3' })).version, 4);
        // A key reused for other bytes is refused and stores nothing; keys are per delta name.
        await assert.rejects(store.put(meta('acme', 'idem'), makeFiles('other'), { idempotencyKey: 'upload-1' }), (error: unknown) => {
          assert.ok(error instanceof IdempotencyError);
          assert.equal(error.code, 'idempotency_key_reused');
          return true;
        });
        assert.deepEqual((await store.versions('acme', 'idem')).map((v) => v.version), [1, 2, 3, 4]);
        assert.equal((await store.put(meta('acme', 'idem-b'), makeFiles('other'), { idempotencyKey: 'upload-1' })).version, 1);
        // The key of a deleted version does not resurrect it.
        await store.delete('acme', 'idem');
        await assert.rejects(store.put(meta('acme', 'idem'), files, { idempotencyKey: 'upload-1' }), /has since been deleted/);
      }),
    );

    it(
      'two replicas putting one name at once get distinct versions',
      withStore(async ({ store, replica }, t) => {
        if (!replica) return t.skip('creates are atomic only inside one process on this backend');
        const other = replica();
        const files = Array.from({ length: 8 }, (_, i) => makeFiles(`two${i}`, 1024 + i));
        const puts = await Promise.all(files.map((f, i) => (i % 2 ? other : store).put(meta('acme', 'shared', { summary: { rank: i } }), f)));
        assert.deepEqual(puts.map((p) => p.version).sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8]);
        for (const [i, p] of puts.entries()) assertSameBytes(await (i % 2 ? store : other).read(p), files[i]!);
      }),
    );

    it(
      'owner and name must be safe single path segments',
      withStore(async ({ store }) => {
        const bad = ['', '.', '..', '.hidden', 'a/b', 'a\\b', '../x', 'x..y', 'has space', 'x'.repeat(65), 'ünï'];
        for (const value of bad) {
          await assert.rejects(store.put(meta(value, 'ok'), makeFiles('x')), /invalid delta owner/, `owner ${JSON.stringify(value)}`);
          await assert.rejects(store.put(meta('ok', value), makeFiles('x')), /invalid delta name/, `name ${JSON.stringify(value)}`);
          await assert.rejects(store.get(value, 'ok'), /invalid delta owner/);
          await assert.rejects(store.versions('ok', value), /invalid delta name/);
          await assert.rejects(store.delete(value, 'ok'), /invalid delta owner/);
        }
        await assert.rejects(store.list('../etc'), /invalid delta owner/);
        const good = await store.put(meta('A-z_0.9', 'x'.repeat(64)), makeFiles('ok'));
        assert.equal(good.version, 1);
        assert.deepEqual(await store.list(), [good]);
      }),
    );
  });
}
