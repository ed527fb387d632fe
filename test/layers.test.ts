/**
 * The layers of docs/architecture.md, enforced: every relative import under src/ (tests aside) is
 * checked against the table below, so the next drift fails CI instead of waiting for a reader.
 * The import graph is read from the sources themselves (static `import`/`export … from` and
 * dynamic `import('…')`), not from a list someone keeps.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

const SRC = path.resolve('src');

/**
 * What each layer may import (besides itself). A layer is a folder of src/, or one of the two
 * composition roots (cli.ts, config.ts). Read top to bottom: nothing imports upward.
 */
export const LAYERS: Record<string, readonly string[]> = {
  'cli.ts': ['config.ts', 'server', 'engine', 'training', 'deltas', 'model', 'graph', 'telemetry', 'pretrain'],
  'config.ts': ['deltas', 'model', 'telemetry'],
  server: ['config.ts', 'engine', 'training', 'deltas', 'model', 'telemetry'],
  training: ['engine', 'deltas', 'model'],
  engine: ['deltas', 'model', 'graph', 'telemetry'],
  pretrain: ['engine', 'training', 'deltas', 'model', 'graph'],
  deltas: ['model', 'graph'],
  model: ['graph'],
  graph: [],
  telemetry: [],
};

/**
 * Modules of a layer that the layers above it may import: the engine's public surface is its
 * client (a typed message protocol over the worker thread) and the data that crosses it; the rest
 * of the engine (scheduler, residency, runtime, trainer) runs only on the worker thread.
 */
export const PUBLIC: Record<string, readonly string[]> = {
  engine: ['engine/client.ts', 'engine/types.ts', 'engine/protocol.ts', 'engine/trainer-state.ts'],
};

/** The relative imports of a file, resolved to the .ts (or .mjs) files they name. */
const importsOf = (file: string): string[] => {
  const text = fs.readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"`;]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|(?:^|\n)\s*import\s*['"]([^'"]+)['"]/g)].map((m) => m[1] ?? m[2] ?? m[3]!);
  return specs.filter((s) => s.startsWith('.')).map((s) => path.resolve(path.dirname(file), s.replace(/\.js$/, '.ts')).replace(/\.mjs$/, '.mjs'));
};

/** src/x/y.ts → 'x'; src/cli.ts → 'cli.ts'. */
export function layerOf(file: string, root = SRC): string {
  return path.relative(root, file).split(path.sep)[0]!;
}

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sources(full);
    return /\.(ts|mjs)$/.test(entry.name) && !entry.name.endsWith('.test.ts') ? [full] : [];
  });
}

/** Every import that breaks the table, as `from → to (why)`. */
export function violations(files: readonly string[], root = SRC): string[] {
  const out: string[] = [];
  for (const file of files) {
    const from = layerOf(file, root);
    for (const target of importsOf(file)) {
      const rel = path.relative(root, target).split(path.sep).join('/');
      const name = path.relative(root, file);
      if (rel.startsWith('..')) {
        out.push(`${name} → ${rel} (src/ imports nothing outside it)`);
        continue;
      }
      const to = layerOf(target, root);
      if (to === from) continue;
      const allowed = LAYERS[from];
      if (!allowed) out.push(`${name}: layer '${from}' is not in the table`);
      else if (!allowed.includes(to)) out.push(`${name} → ${rel} ('${from}' may import ${allowed.join(', ') || 'nothing'})`);
      else if (PUBLIC[to] && !PUBLIC[to].includes(rel)) out.push(`${name} → ${rel} (only ${PUBLIC[to].join(', ')} of '${to}' is public)`);
    }
  }
  return out;
}

test('every import under src/ follows the layer table', () => {
  const files = sources(SRC);
  assert.ok(files.length > 100, `found ${files.length} source files`);
  assert.deepEqual(violations(files), []);
});

test('every folder of src/ has a row in the table', () => {
  for (const entry of fs.readdirSync(SRC, { withFileTypes: true })) {
    if (entry.isDirectory() || /^(cli|config)\.ts$/.test(entry.name)) assert.ok(entry.name in LAYERS, `src/${entry.name} has no row in LAYERS`);
  }
});

test('the check sees a drift: an upward import, an engine internal, a dynamic import, and a way out of src/', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-layers-'));
  try {
    const write = (rel: string, text: string) => {
      fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
      fs.writeFileSync(path.join(root, rel), text);
      return path.join(root, rel);
    };
    const files = [
      write('graph/upward.ts', "import type { Config } from '../config.js';\nexport const x = 1;\n"),
      write('training/internal.ts', "import { Scheduler } from '../engine/scheduler.js';\nexport { Scheduler };\n"),
      write('graph/dynamic.ts', "export const load = () => import('../model/checkpoint.js');\n"),
      write('deltas/outside.ts', "export { x } from '../../test/helpers.js';\n"),
      write('training/fine.ts', "import type { Engine } from '../engine/client.js';\nimport { parse } from './local.js';\n"),
    ];
    const found = violations(files, root);
    assert.equal(found.length, 4, found.join('\n'));
    assert.match(found[0]!, /config\.ts \('graph' may import nothing\)/);
    assert.match(found[1]!, /engine\/scheduler\.ts \(only engine\/client\.ts/);
    assert.match(found[2]!, /model\/checkpoint\.ts \('graph' may import nothing\)/);
    assert.match(found[3]!, /src\/ imports nothing outside it/);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
