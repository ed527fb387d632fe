import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KJV_SOURCE, readPinned, sha256, SourceError, sourceInstalled, type PinnedSource } from './sources.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-sources-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

const source: PinnedSource = {
  package: 'demo-text',
  version: '1.0-2',
  debSha256: '',
  licence: 'public domain',
  files: [{ path: '/usr/share/demo/text.dat', sha256: sha256('the pinned bytes') }],
};

test('a missing file names the package and version to install', () => {
  assert.equal(sourceInstalled(source, root), false);
  assert.throws(() => readPinned(source, source.files[0]!, root), (err: unknown) => {
    assert.ok(err instanceof SourceError);
    assert.match(err.message, /text\.dat is missing: install Debian's demo-text 1\.0-2 \(apt-get install --no-install-recommends demo-text=1\.0-2\)/);
    return true;
  });
});

test('different bytes are refused with both digests; the pinned bytes are returned', () => {
  const file = path.join(root, 'usr/share/demo/text.dat');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, 'other bytes');
  assert.equal(sourceInstalled(source, root), true);
  assert.throws(() => readPinned(source, source.files[0]!, root), new RegExp(`has SHA-256 ${sha256('other bytes')}, but the recipe pins ${source.files[0]!.sha256} \\(demo-text 1\\.0-2\\)`));
  fs.writeFileSync(file, 'the pinned bytes');
  assert.equal(readPinned(source, source.files[0]!, root).toString(), 'the pinned bytes');
});

test('the recipe pins every file it reads, as 64 hex digits', () => {
  assert.equal(sha256('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  for (const f of KJV_SOURCE.files) assert.match(f.sha256, /^[0-9a-f]{64}$/);
});
