import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describeDeltaStoreContract, makeFiles } from './contract.js';
import { FilesystemDeltaStore } from './filesystem.js';
import { openDeltaStore } from './index.js';
import type { DeltaVersion } from './types.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../../..');
const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-fs-store-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

let counter = 0;
function freshRoot(): string {
  return path.join(tmpRoot, `store-${++counter}`);
}

function versionDir(root: string, v: Pick<DeltaVersion, 'owner' | 'name' | 'version'>): string {
  return path.join(root, v.owner, v.name, `v${v.version}`);
}

describeDeltaStoreContract('filesystem', async () => {
  const root = freshRoot();
  return {
    store: new FilesystemDeltaStore(root),
    replica: () => new FilesystemDeltaStore(root),
    async corrupt(version, file) {
      const target = path.join(versionDir(root, version), file === 'config' ? 'adapter_config.json' : 'adapter_model.safetensors');
      const bytes = await fsp.readFile(target);
      bytes[bytes.length >> 1]! ^= 0xff;
      await fsp.writeFile(target, bytes);
    },
    async dispose() {
      await fsp.rm(root, { recursive: true, force: true });
    },
  };
});

describe('FilesystemDeltaStore', () => {
  it('lays versions out as <root>/<owner>/<name>/v<N>/ and leaves no staging behind', async () => {
    const root = freshRoot();
    const store = new FilesystemDeltaStore(root);
    assert.equal(store.location, pathToFileURL(root).href);
    const files = makeFiles('layout');
    const v = await store.put({ owner: 'acme', name: 'sql', public: true, kind: 'lora', summary: { rank: 4, modules: 2 }, virtualTokens: 0 }, files);
    const dir = versionDir(root, v);
    assert.deepEqual((await fsp.readdir(dir)).sort(), ['adapter_config.json', 'adapter_model.safetensors', 'meta.json']);
    assert.deepEqual(new Uint8Array(await fsp.readFile(path.join(dir, 'adapter_config.json'))), files.config);
    assert.deepEqual(new Uint8Array(await fsp.readFile(path.join(dir, 'adapter_model.safetensors'))), files.weights);
    assert.deepEqual(JSON.parse(await fsp.readFile(path.join(dir, 'meta.json'), 'utf8')), v);
    assert.deepEqual(await fsp.readdir(path.join(root, '.staging')), []);
    // The staging directory is never listed as an owner.
    assert.deepEqual(
      (await store.list()).map((d) => d.owner),
      ['acme'],
    );
  });

  it('two store instances on one root (as two processes would be) never share a version', async () => {
    const root = freshRoot();
    const a = new FilesystemDeltaStore(root);
    const b = new FilesystemDeltaStore(root);
    const puts = await Promise.all(
      [a, b, a, b].map((store, i) => store.put({ owner: 'acme', name: 'x', public: false, kind: 'lora', summary: { rank: 1, modules: 1 }, virtualTokens: 0 }, makeFiles(`ab${i}`))),
    );
    assert.deepEqual(puts.map((p) => p.version).sort(), [1, 2, 3, 4]);
    for (const [i, p] of puts.entries()) assert.deepEqual((await b.read(p)).weights, makeFiles(`ab${i}`).weights);
  });

  it('removes staging left by dead processes on construction, keeps live ones', async () => {
    const root = freshRoot();
    new FilesystemDeltaStore(root);
    const staging = path.join(root, '.staging');
    const host = os.hostname();
    const dead = await deadPid();
    const entries = {
      deadHere: `${dead}.00ff.${host}`,
      liveHere: `${process.pid}.00ff.${host}`,
      otherHostFresh: `${dead}.00ff.${host}-elsewhere`,
      otherHostOld: `${dead}.00fe.${host}-elsewhere`,
    };
    for (const entry of Object.values(entries)) {
      await fsp.mkdir(path.join(staging, entry));
      await fsp.writeFile(path.join(staging, entry, 'adapter_model.safetensors'), 'partial');
    }
    const old = new Date(Date.now() - 2 * 24 * 3600 * 1000);
    await fsp.utimes(path.join(staging, entries.otherHostOld), old, old);
    new FilesystemDeltaStore(root);
    assert.deepEqual((await fsp.readdir(staging)).sort(), [entries.liveHere, entries.otherHostFresh].sort());
  });

  it('a put killed with SIGKILL mid-write leaves the previous version intact and visible', async () => {
    const root = freshRoot();
    const store = new FilesystemDeltaStore(root);
    const delta = { owner: 'acme', name: 'big', public: false, kind: 'lora', summary: { rank: 8, modules: 1 }, virtualTokens: 0 };
    const v1Files = makeFiles('before-kill', 64 * 1024);
    const v1 = await store.put(delta, v1Files);

    const weightBytes = 6 << 20;
    const killAfter = 2 << 20;
    // The child slows every FileHandle.write (the store writes in 1 MiB chunks) and reports progress.
    const code = `
      import fsp from 'node:fs/promises';
      import { FilesystemDeltaStore } from ${JSON.stringify(pathToFileURL(path.join(here, 'filesystem.ts')).href)};
      const probe = await fsp.open(process.execPath, 'r');
      const proto = Object.getPrototypeOf(probe);
      await probe.close();
      const write = proto.write;
      let total = 0;
      proto.write = async function (...args) {
        const result = await write.apply(this, args);
        total += result.bytesWritten;
        process.stdout.write('wrote ' + total + '\\n');
        await new Promise((resolve) => setTimeout(resolve, 150));
        return result;
      };
      const store = new FilesystemDeltaStore(process.env.DELTA_ROOT);
      const weights = new Uint8Array(${weightBytes}).fill(7);
      await store.put(${JSON.stringify(delta)}, { config: new TextEncoder().encode('{"r":8}'), weights });
      process.stdout.write('done\\n');
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      cwd: repoRoot,
      env: { ...process.env, DELTA_ROOT: root },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    let output = '';
    let killedAt = -1;
    child.stdout.on('data', (chunk) => {
      output += chunk;
      const totals = [...output.matchAll(/wrote (\d+)/g)].map((m) => Number(m[1]));
      const total = totals.length ? totals[totals.length - 1]! : 0;
      if (killedAt < 0 && total >= killAfter) {
        killedAt = total;
        child.kill('SIGKILL');
      }
    });
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`child did not reach ${killAfter} bytes in 60 s; stdout: ${output}; stderr: ${stderr}`));
      }, 60_000);
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal });
      });
    });
    assert.equal(exit.signal, 'SIGKILL', `child exited on its own (code ${exit.code}); stdout: ${output}; stderr: ${stderr}`);
    assert.ok(!output.includes('done'), 'the put finished before the kill');
    assert.ok(killedAt > 0 && killedAt < weightBytes, `killed after ${killedAt} bytes`);

    // The killed put left a half-written staging directory, and nothing else.
    const staging = path.join(root, '.staging');
    const leftovers = await fsp.readdir(staging);
    assert.equal(leftovers.length, 1, `staging: ${leftovers.join(', ')}`);
    const partial = await fsp.stat(path.join(staging, leftovers[0]!, 'adapter_model.safetensors'));
    assert.ok(partial.size > 0 && partial.size < weightBytes, `partial weights ${partial.size} bytes`);
    assert.deepEqual(await fsp.readdir(path.join(root, 'acme', 'big')), ['v1']);

    // The running store still sees only v1, intact.
    assert.deepEqual(await store.versions('acme', 'big'), [v1]);
    assert.deepEqual(await store.get('acme', 'big'), v1);

    // A store opened afterwards (a restart) cleans up the leftover and sees the same.
    const reopened = new FilesystemDeltaStore(root);
    assert.deepEqual(await fsp.readdir(staging), []);
    assert.deepEqual(await reopened.list(), [v1]);
    assert.equal(await reopened.get('acme', 'big', 2), null);
    assert.deepEqual(await reopened.read(v1), v1Files);
    const v2Files = makeFiles('after-kill');
    const v2 = await reopened.put(delta, v2Files);
    assert.equal(v2.version, 2);
    assert.deepEqual(await reopened.read(v2), v2Files);
  });

  it('openDeltaStore opens a path or a file:// URL as a filesystem store', () => {
    const root = freshRoot();
    const byPath = openDeltaStore(root);
    assert.ok(byPath instanceof FilesystemDeltaStore);
    assert.equal(byPath.location, pathToFileURL(root).href);
    const byUrl = openDeltaStore(pathToFileURL(root).href);
    assert.ok(byUrl instanceof FilesystemDeltaStore);
    assert.equal(byUrl.location, byPath.location);
  });
});

/** A pid that no process has (a child that has already exited). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  const pid = child.pid!;
  await new Promise((resolve) => child.on('exit', resolve));
  return pid;
}
