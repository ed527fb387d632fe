#!/usr/bin/env node
// The `deltaserve` command. Runs the compiled JavaScript in dist/ (`npm run build`; the image
// ships only that) so a start pays no TypeScript transpilation; in a checkout whose sources are
// newer than the build (or that has none), it runs the sources through tsx instead, so a stale
// build never serves.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const compiled = path.join(root, 'dist', 'cli.js');

/** The newest modification time of any file under `dir` (0 when it does not exist). */
function newest(dir) {
  let latest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) latest = Math.max(latest, fs.statSync(path.join(entry.parentPath ?? entry.path, entry.name)).mtimeMs);
  }
  return latest;
}

const sources = path.join(root, 'src');
const useBuild = fs.existsSync(compiled) && (!fs.existsSync(sources) || fs.statSync(compiled).mtimeMs >= newest(sources));
let main;
if (useBuild) ({ main } = await import(new URL(`file://${compiled}`).href));
else {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('../src/cli.ts'));
}
await main();
