/**
 * The engine thread crashing under load (NODE_ENV=test + SIGUSR2 makes the worker throw, as a bug
 * in a step would): requests in flight end with a clear 503 (engine_restarting, Retry-After; a
 * stream's last event says so), readiness is 503 while the thread restarts, and afterwards every
 * delta serves again, the pinned one included, without a process restart.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { FilesystemDeltaStore } from '../../src/deltas/store/index.js';
import { tempDir } from '../helpers.js';
import { assertStoreConsistent } from './consistency.js';
import { call, complete, deltaForm, killAll, openStream, startReplica, variantWeights, waitFor } from './harness.js';

after(killAll);

describe('the engine thread crashing', () => {
  it('in-flight requests end 503 engine_restarting, readiness is 503 meanwhile, later requests succeed with their deltas', async () => {
    const dataDir = tempDir();
    const replica = await startReplica({ cacheDir: tempDir(), dataDir, args: ['--delta-slots', '2', '--max-rank', '8'] });
    for (const [i, name] of ['pinned', 'loaded'].entries()) assert.equal((await call(replica.url, 'POST', '/v1/deltas', deltaForm(name, variantWeights(i + 1)))).status, 201);
    assert.equal((await call(replica.url, 'POST', '/admin/v1/deltas/pinned/pin')).status, 200);
    assert.equal((await complete(replica.url, 'loaded')).status, 200);

    // Readiness, polled throughout: the restart's window is short (the tiny model loads fast).
    const readiness: { status: number; message?: string }[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const res = await call(replica.url, 'GET', '/health/ready').catch(() => undefined);
        if (res) readiness.push({ status: res.status, message: res.json?.error?.message });
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();

    // A plain request and a stream, both decoding 250 tokens (seconds here) when the thread dies.
    const plain = complete(replica.url, 'pinned', 250);
    const stream = await openStream(replica.url, 'loaded', 250);
    assert.equal(stream.status, 200);
    await stream.first;
    replica.child.kill('SIGUSR2');

    const failed = await plain;
    assert.equal(failed.status, 503, JSON.stringify(failed.json));
    assert.equal(failed.json.error.code, 'engine_restarting');
    assert.match(failed.json.error.message, /restarting; the request did not complete; retry shortly/);
    assert.equal(failed.headers.get('retry-after'), '2');
    assert.deepEqual(await stream.ended, { cut: false }, 'the stream ends with an event, not a cut connection');
    const last = JSON.parse(stream.events.at(-1)!);
    assert.equal(last.error?.code, 'engine_restarting', `the stream's last event: ${stream.events.at(-1)}`);
    assert.ok(!stream.events.includes('[DONE]'));

    await waitFor(async () => (await call(replica.url, 'GET', '/health/ready')).status === 200, 60_000, () => `never ready again:\n${replica.output()}`);
    polling = false;
    await poller;
    assert.ok(
      readiness.some((r) => r.status === 503 && /restarting after a crash/.test(r.message ?? '')),
      `readiness said 503 while the thread restarted (saw ${JSON.stringify([...new Set(readiness.map((r) => `${r.status} ${r.message ?? ''}`))])})`,
    );
    assert.equal(replica.child.exitCode, null, 'the process did not exit');

    for (const model of ['tiny', 'pinned', 'loaded']) assert.equal((await complete(replica.url, model)).status, 200, `${model} after the restart`);
    const again = await openStream(replica.url, 'loaded', 8);
    await again.ended;
    assert.equal(again.events.at(-1), '[DONE]');
    const logs = replica.logs();
    assert.ok(logs.some((l) => /engine thread crashed/.test(String(l.msg)) && /crash injected for a test/.test(String(l.reason))), 'the crash is logged with its cause');
    assert.ok(logs.some((l) => /engine thread restarted/.test(String(l.msg))));

    await assertStoreConsistent({ store: new FilesystemDeltaStore(path.join(dataDir, 'deltas')), replicas: [replica.url], dataDirs: [dataDir], seen: new Map() });
    replica.child.kill('SIGKILL');
  });
});
