#!/usr/bin/env node
// Runs every *.test.ts under src/ and test/ with node's test runner (tsx loads TypeScript).
// Node 20's --test does not expand globs itself, so the files are listed here.
//
// The tests run with a temp directory of their own (TMPDIR, which os.tmpdir() reads): whatever
// they leave there fails the run, naming it, and the directory goes either way, so that no run
// litters the system temp directory (a test process killed midway never runs its cleanup).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const roots = process.argv.slice(2).length ? process.argv.slice(2) : ['src', 'test'];
const files = roots.flatMap((root) => (fs.statSync(root).isFile() ? [root] : walk(root))).sort();

function walk(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'node_modules' || entry.name === 'fixtures' ? [] : walk(full);
    return entry.name.endsWith('.test.ts') ? [full] : [];
  });
}

const systemTemp = os.tmpdir();
const runTemp = fs.mkdtempSync(path.join(systemTemp, 'deltaserve-test-run-'));
// As the system one: the PostgreSQL tests run initdb as the `postgres` user, which reads files here.
fs.chmodSync(runTemp, 0o1777);
// tsx keeps its transpile cache in the temp directory: the run uses the system one (a cold cache
// would slow every test process), through a link that is not a leftover.
const tsxCache = `tsx-${os.userInfo().uid}`;
fs.mkdirSync(path.join(systemTemp, tsxCache), { recursive: true });
fs.symlinkSync(path.join(systemTemp, tsxCache), path.join(runTemp, tsxCache));

const result = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', ...files], { stdio: 'inherit', env: { ...process.env, TMPDIR: runTemp } });

// onnxruntime's native library writes these into the temp directory of every process that loads
// it (an empty mat-debug-<pid>.log, and a telemetry session file .ses; see
// microsoft/onnxruntime#32476): not the tests' doing, and they go with the directory.
const LIBRARY_FILES = [/^mat-debug-\d+\.log$/, /^\.ses$/];
const leftovers = fs.readdirSync(runTemp).filter((entry) => entry !== tsxCache && !LIBRARY_FILES.some((re) => re.test(entry)));
fs.rmSync(runTemp, { recursive: true, force: true });
if (leftovers.length > 0) {
  console.error(`\nthe tests left ${leftovers.length} entr${leftovers.length === 1 ? 'y' : 'ies'} in the temp directory (removed now; a test must remove what it creates there, e.g. with tempDir() from test/helpers.ts):`);
  for (const entry of leftovers.sort()) console.error(`  ${entry}`);
  process.exit(result.status || 1);
}
process.exit(result.status ?? 1);
