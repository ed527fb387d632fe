import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { FIXTURE, tempDir } from '../helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Starts the real `deltaserve` command and resolves with its base URL once it says it is ready. */
function startCli(args: string[], env: Record<string, string> = {}, entry = path.join(ROOT, 'bin', 'deltaserve.mjs')): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(process.execPath, [entry, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready in time:\n${output}`)), 60_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const url = /listening on (http:\/\/\S+)/.exec(output)?.[1];
      if (url && /ready in/.test(output)) {
        clearTimeout(timer);
        resolve({ child, url, output: () => output });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code}:\n${output}`));
    });
  });
}

function exitCode(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.once('exit', (code) => resolve(code))));
}

describe('the deltaserve command', () => {
  const children: ChildProcess[] = [];
  after(() => children.forEach((c) => c.kill('SIGKILL')));

  it('serves a model directory and a --delta from flags and DELTASERVE_* variables, and stops on SIGTERM', async () => {
    const { child, url } = await startCli(
      ['--model', path.join(FIXTURE, 'base'), '--model-name', 'tiny', '--port', '0', '--threads', '1', '--delta', `sql=${path.join(FIXTURE, 'lora_all_r8')}`],
      { DELTASERVE_CACHE_DIR: tempDir(), DELTASERVE_DATA_DIR: tempDir(), DELTASERVE_MAX_CONTEXT: '64' },
    );
    children.push(child);
    assert.equal((await fetch(`${url}/health/ready`)).status, 200);
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
    assert.deepEqual(models.data.map((m) => m.id), ['tiny', 'sql']);
    const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'sql', prompt: [1, 2, 3], max_tokens: 70, temperature: 0 }) });
    assert.equal(res.status, 400, 'DELTASERVE_MAX_CONTEXT=64 applies');
    child.kill('SIGTERM');
    assert.equal(await exitCode(child), 0);
  });

  it('the production entry: the compiled JavaScript (npm run build) serves without tsx, worker threads included', async () => {
    // Built beside the sources (under the ignored .cache/) so it resolves the same node_modules.
    const out = path.join(ROOT, '.cache', `test-dist-${process.pid}`);
    after(() => fs.rmSync(out, { recursive: true, force: true }));
    execFileSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(ROOT, 'tsconfig.build.json'), '--outDir', out], { stdio: 'pipe' });
    assert.ok(!fs.readdirSync(out, { recursive: true }).some((f) => String(f).endsWith('.ts')), 'no TypeScript in the build');
    const { child, url } = await startCli(['--model', path.join(FIXTURE, 'base'), '--model-name', 'tiny', '--port', '0', '--threads', '1', '--delta', `sql=${path.join(FIXTURE, 'lora_all_r8')}`], { DELTASERVE_CACHE_DIR: tempDir(), DELTASERVE_DATA_DIR: tempDir(), NODE_OPTIONS: '' }, path.join(out, 'cli.js'));
    children.push(child);
    const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'sql', prompt: [1, 2, 3], max_tokens: 4, temperature: 0 }) });
    assert.equal(res.status, 200, await res.clone().text());
    child.kill('SIGTERM');
    assert.equal(await exitCode(child), 0);
  });

  it('a bad flag exits 2 naming it; a non-loopback host without an auth file is refused', async () => {
    const bad = spawn(process.execPath, [path.join(ROOT, 'bin', 'deltaserve.mjs'), '--max-rows', 'many'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    bad.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    assert.equal(await exitCode(bad), 2);
    assert.match(stderr, /--max-rows/);
    const open = spawn(process.execPath, [path.join(ROOT, 'bin', 'deltaserve.mjs'), '--host', '0.0.0.0', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DELTASERVE_CACHE_DIR: tempDir() } });
    let openErr = '';
    open.stderr!.on('data', (c: Buffer) => (openErr += c.toString()));
    assert.equal(await exitCode(open), 2);
    assert.match(openErr, /refusing to bind 0\.0\.0\.0/);
  });
});
