/**
 * The recipe on the real sources, which come from Debian packages (.ci/run installs them): the
 * pinned bytes decode to the pinned texts, the split and tokenizer are reproducible to the byte,
 * and the tasks have the quick sizes. Skipped, saying why, only where the packages are absent.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TextTokenizer } from '../../src/model/tokenizer.js';
import { loadKjv } from '../../src/pretrain/kjv.js';
import { prepareCorpus } from '../../src/pretrain/prepare.js';
import { installHint, KJV_SOURCE, sha256, sourceInstalled, WEB_SOURCE } from '../../src/pretrain/sources.js';
import { QUICK_TASK_SIZES } from '../../src/pretrain/tasks/task.js';
import { reference } from '../../src/pretrain/verses.js';
import { loadWeb } from '../../src/pretrain/web.js';

const missing = [KJV_SOURCE, WEB_SOURCE].filter((s) => !sourceInstalled(s));
const skip = missing.length ? `needs Debian packages: ${missing.map(installHint).join('; ')}` : false;

// What the recipe produces from the pinned packages; a change to normalisation, the split or the
// tokenizer trainer changes these on purpose, and then CORPUS_DIRNAME's version must go up.
const PINNED = {
  trainSha256: '45a6f8bd599581391257461822c8071ab065daf7a1547b04a200cf415cd505aa',
  heldoutSha256: '971df33164a77cd0042672d45584aec48ae08bd334b032e8d3186fc38c305624',
  tokenizerSha256: '7193a3345f5f43e92388b39c1e7aeea824b17d8b4f2e084da655316bf9bd5d37',
  heldoutChapters: ['Exodus 16', 'Deuteronomy 27', '1 Kings 6', 'Nehemiah 3', 'Song of Solomon 8', 'Isaiah 1', 'Ezekiel 21', 'Mark 10', '2 Corinthians 11'],
};

const out = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-corpus-'));
after(() => fs.rmSync(out, { recursive: true, force: true }));

test('the KJV and the WEB decode to every verse', { skip }, () => {
  const kjv = loadKjv();
  assert.equal(kjv.length, 31102);
  assert.equal(`${reference(kjv[0]!)} ${kjv[0]!.text}`, 'Genesis 1:1 In the beginning God created the heaven and the earth.');
  assert.equal(`${reference(kjv.at(-1)!)} ${kjv.at(-1)!.text}`, 'Revelation 22:21 The grace of our Lord Jesus Christ be with you all. Amen.');
  const web = loadWeb();
  assert.ok(web.length > 31000 && web.length < 31102, `${web.length} WEB verses (it omits a few verses the KJV has)`);
  assert.equal(`${reference(web[0]!)} ${web[0]!.text}`, 'Genesis 1:1 In the beginning, God created the heavens and the earth.');
  assert.equal(web.at(-1)!.text, 'The grace of the Lord Jesus Christ be with all the saints. Amen.', 'the glossary after Revelation is cut off');
});

test('npm run corpus --quick: pinned texts and split, a 4096 tokenizer that round-trips, task files', { skip }, () => {
  const dir = path.join(out, 'corpus');
  const summary = prepareCorpus({ outDir: dir, taskSizes: QUICK_TASK_SIZES });
  assert.equal(summary.kjv.trainSha256, PINNED.trainSha256);
  assert.equal(summary.kjv.heldoutSha256, PINNED.heldoutSha256);
  assert.deepEqual(summary.kjv.heldoutChapters, PINNED.heldoutChapters);
  assert.ok(summary.kjv.heldoutShare > 0.009 && summary.kjv.heldoutShare < 0.011, `held-out share ${summary.kjv.heldoutShare}`);
  assert.equal(sha256(fs.readFileSync(path.join(dir, 'kjv/heldout.txt'))), PINNED.heldoutSha256);

  const heldout = fs.readFileSync(path.join(dir, 'kjv/heldout.txt'), 'utf8');
  assert.equal(sha256(fs.readFileSync(path.join(dir, 'tokenizer/tokenizer.json'))), PINNED.tokenizerSha256, 'same merges on every machine');
  const tok = TextTokenizer.fromDirectory(path.join(dir, 'tokenizer'));
  assert.equal(tok.vocabSize, 4096);
  const ids = tok.encode(heldout);
  assert.equal(tok.decode(ids), heldout, 'the whole held-out text round-trips');
  assert.ok(Buffer.byteLength(heldout) / ids.length > 3.8, `${Buffer.byteLength(heldout) / ids.length} bytes/token`);

  for (const task of ['classify', 'style', 'reverse']) {
    for (const [split, n] of [['train', QUICK_TASK_SIZES.train], ['heldout', QUICK_TASK_SIZES.heldout]] as const) {
      const lines = fs.readFileSync(path.join(dir, `tasks/${task}/${split}.jsonl`), 'utf8').trimEnd().split('\n');
      assert.equal(lines.length, n, `${task} ${split}`);
      assert.deepEqual(Object.keys(JSON.parse(lines[0]!)), ['prompt', 'completion']);
    }
  }
  const stored = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8'));
  assert.equal(stored.kjv.trainSha256, PINNED.trainSha256);
  assert.equal(stored.tokenizers[0].trainSeconds, undefined, 'no timings in the file, so it is reproducible');
});
