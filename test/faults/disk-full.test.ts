/**
 * Disk full, for real: small tmpfs mounts (root only) for the delta store's directory, the data
 * directory (the upload spool) and the disk tier (cache), each filled to the brim by a filler
 * file; and, where no mount is possible, a file size limit on the server (RLIMIT_FSIZE through
 * prlimit, whose writes then fail with EFBIG). A write that finds no space is a 507 naming no path,
 * nothing partial stays (staging, spool, cache temporaries), what is stored keeps serving, and
 * freeing space is all recovery needs. A full disk tier costs nothing but the tier: it is optional.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FilesystemDeltaStore, S3DeltaStore } from '../../src/deltas/store/index.js';
import { tempDir } from '../helpers.js';
import { assertStoreConsistent } from './consistency.js';
import { BUCKET, call, complete, deltaForm, killAll, S3_CREDENTIALS, S3Process, startReplica, variantWeights, type Replica } from './harness.js';

after(killAll);

/** Mounts a tmpfs of `size` on a new directory; returns it, or why it could not. */
function mountTmpfs(size: string): { dir: string } | { problem: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-faults-tmpfs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' });
    return { dir };
  } catch (err) {
    fs.rmdirSync(dir);
    return { problem: `cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): ${String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim()}` };
  }
}

/** Fills `dir`'s filesystem with `<dir>/filler` until `leave` bytes are free; remove the file to free them. */
function fill(dir: string, leave: number): string {
  const filler = path.join(dir, 'filler');
  const { bavail, bsize } = fs.statfsSync(dir);
  const size = Math.max(0, bavail * bsize - leave);
  const fd = fs.openSync(filler, 'w');
  // Written, not truncated: a sparse file would take no space on tmpfs.
  for (let written = 0; written < size; ) written += fs.writeSync(fd, Buffer.alloc(Math.min(1 << 20, size - written)));
  fs.closeSync(fd);
  return filler;
}

/** The 507 a full disk must be: its code, what happened, and no path of ours. */
function assertFull(res: Awaited<ReturnType<typeof call>>, what: string, paths: string[]): void {
  assert.equal(res.status, 507, `${what}: ${JSON.stringify(res.json)}`);
  assert.equal(res.json.error.code, 'storage_full', what);
  assert.match(res.json.error.message, /no space left .*nothing was stored/, what);
  for (const p of paths) assert.ok(!res.json.error.message.includes(p), `${what}: the message names no path`);
}

const probe = process.platform === 'linux' ? mountTmpfs('4m') : { problem: `tmpfs mounts are a Linux test mechanism (this is ${process.platform})` };
const mounts: string[] = [];
if ('dir' in probe) mounts.push(probe.dir);
after(() => {
  for (const dir of mounts) {
    // Lazy: a killed replica's last open files may not be closed yet; the mount goes once they are.
    execFileSync('umount', ['-l', dir]);
    fs.rmdirSync(dir);
  }
});

describe('disk full (tmpfs)', { skip: 'problem' in probe ? probe.problem : false }, () => {
  const storeFs = mounts[0]!;
  let dataFs: string;
  let replica: Replica;
  const seen = new Map<string, string>();
  before(() => {
    const data = mountTmpfs('4m');
    if ('problem' in data) throw new Error(data.problem);
    mounts.push((dataFs = data.dir));
  });
  const store = () => new FilesystemDeltaStore(path.join(storeFs, 'deltas'));

  it('the store directory: the put fails whole (507), no staging is left, stored deltas serve, space freed is enough', async () => {
    replica = await startReplica({ cacheDir: tempDir(), dataDir: dataFs, args: ['--store', path.join(storeFs, 'deltas'), '--max-rank', '8'] });
    assert.equal((await call(replica.url, 'POST', '/v1/deltas', deltaForm('kept', variantWeights(1)))).status, 201);
    // Room for the config (one page) but not the 78 KB of weights: the put starts, then fails.
    const filler = fill(storeFs, 40 * 1024);
    assertFull(await call(replica.url, 'POST', '/v1/deltas', deltaForm('big', variantWeights(2))), 'an upload into a full store', [storeFs, dataFs]);
    assert.deepEqual(fs.readdirSync(path.join(storeFs, 'deltas', '.staging')), [], 'no staging left');
    assert.equal((await call(replica.url, 'GET', '/v1/deltas/big')).status, 404);
    assert.equal((await complete(replica.url, 'kept')).status, 200);
    await assertStoreConsistent({ store: store(), replicas: [replica.url], dataDirs: [dataFs], seen });

    fs.rmSync(filler);
    assert.equal((await call(replica.url, 'POST', '/v1/deltas', deltaForm('big', variantWeights(2)))).status, 201);
    assert.equal((await complete(replica.url, 'big')).status, 200);
    await assertStoreConsistent({ store: store(), replicas: [replica.url], dataDirs: [dataFs], seen });
  });

  it('the data directory: an upload that cannot be spooled is a 507 and leaves no part behind', async () => {
    const filler = fill(dataFs, 0);
    assertFull(await call(replica.url, 'POST', '/v1/deltas', deltaForm('spooled', variantWeights(3))), 'an upload with a full data directory', [storeFs, dataFs]);
    assert.equal((await complete(replica.url, 'kept')).status, 200);
    await assertStoreConsistent({ store: store(), replicas: [replica.url], dataDirs: [dataFs], seen });
    fs.rmSync(filler);
    assert.equal((await call(replica.url, 'POST', '/v1/deltas', deltaForm('spooled', variantWeights(3)))).status, 201);
    await assertStoreConsistent({ store: store(), replicas: [replica.url], dataDirs: [dataFs], seen });
    replica.child.kill('SIGKILL');
  });

  it('the disk tier (S3 store): a full cache directory costs only the tier; loads come from the store, no temporaries stay', async () => {
    const s3 = new S3Process();
    await s3.start();
    const cacheFs = mountTmpfs('1m');
    if ('problem' in cacheFs) throw new Error(cacheFs.problem);
    mounts.push(cacheFs.dir);
    const filler = fill(cacheFs.dir, 0);
    // Host memory holds nothing (one byte), so every load reads a tier below it.
    const s3Replica = await startReplica({ cacheDir: tempDir(), dataDir: tempDir(), args: ['--store', `s3://${BUCKET}/deltas`, '--disk-cache-dir', cacheFs.dir, '--host-cache-bytes', '1', '--delta-slots', '1', '--max-rank', '8'], env: s3.env() });
    for (const [i, name] of ['one', 'two'].entries()) assert.equal((await call(s3Replica.url, 'POST', '/v1/deltas', deltaForm(name, variantWeights(i + 4)))).status, 201);
    // One slot: each completion evicts the other delta, which then loads again from the store.
    for (const name of ['one', 'two', 'one', 'two']) assert.equal((await complete(s3Replica.url, name)).status, 200, `${name} with a full disk tier`);
    assert.deepEqual(fs.readdirSync(cacheFs.dir), ['filler'], 'nothing partial in the disk tier');

    fs.rmSync(filler);
    assert.equal((await complete(s3Replica.url, 'one')).status, 200);
    assert.ok(fs.readdirSync(cacheFs.dir).some((entry) => /^[0-9a-f]{64}$/.test(entry)), 'with space again, the tier fills');
    const s3Store = new S3DeltaStore(`s3://${BUCKET}/deltas`, { endpoint: s3.endpoint, forcePathStyle: true, region: 'us-east-1', credentials: S3_CREDENTIALS });
    await assertStoreConsistent({ store: s3Store, replicas: [s3Replica.url], seen: new Map() });
    s3Store.client.destroy();
    s3Replica.child.kill('SIGKILL');
    await s3.stop();
  });
});

const prlimit = (() => {
  try {
    execFileSync('prlimit', ['--version'], { stdio: 'pipe' });
    return undefined;
  } catch {
    return 'prlimit (util-linux) is not installed';
  }
})();

describe('a file size limit (RLIMIT_FSIZE through prlimit: writes past it fail with EFBIG)', { skip: prlimit ?? false }, () => {
  it('an upload whose spooled weights pass the limit is a 507, nothing is stored or left spooled, and serving goes on', async () => {
    const dataDir = tempDir();
    // 60 KB: the model's graph cache (42 KB) is written at startup; the delta's 78 KB of weights are not.
    const replica = await startReplica({ cacheDir: tempDir(), dataDir, args: ['--max-rank', '8'], wrap: ['prlimit', '--fsize=60000'] });
    assertFull(await call(replica.url, 'POST', '/v1/deltas', deltaForm('limited')), 'an upload past the file size limit', [dataDir]);
    assert.equal((await call(replica.url, 'GET', '/v1/deltas/limited')).status, 404);
    assert.equal((await complete(replica.url, 'tiny')).status, 200);
    await assertStoreConsistent({ store: new FilesystemDeltaStore(path.join(dataDir, 'deltas')), replicas: [replica.url], dataDirs: [dataDir], seen: new Map() });
    replica.child.kill('SIGKILL');
  });
});
