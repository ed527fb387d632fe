/**
 * The pretraining recipe end to end on a miniature corpus (the KJV sample fixture, its own small
 * tokenizer): it trains from a random start, lowers the held-out loss, writes a model directory the
 * server loads, stores it in F16 without changing its held-out score, and is deterministic.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openCheckpoint } from '../model/checkpoint.js';
import { readSafetensorsHeader } from '../model/safetensors.js';
import { countPieces } from './byte-level.js';
import { trainBpe } from './bpe-trainer.js';
import { MODEL_SHAPES } from './model-shapes.js';
import { pretrain, type PretrainOptions } from './recipe.js';
import { SPECIAL_TOKENS, writeTokenizerFiles } from './tokenizer-files.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/pretrain/', import.meta.url));
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-recipe-test-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));

/** The sample's verses without their markers, as the corpus lays them out; the last tenth held out. */
function miniatureCorpus(dir: string): void {
  const verses = fs.readFileSync(`${FIXTURES}kjv-sample.txt`, 'utf8').split('\n').slice(1).map((l) => l.replace(/^\S+\d+:\d+ /, '')).filter(Boolean);
  const cut = Math.floor(verses.length * 0.9);
  fs.mkdirSync(path.join(dir, 'kjv'), { recursive: true });
  const train = `${verses.slice(0, cut).join('\n')}\n`;
  fs.writeFileSync(path.join(dir, 'kjv', 'train.txt'), train);
  fs.writeFileSync(path.join(dir, 'kjv', 'heldout.txt'), `${verses.slice(cut).join('\n')}\n`);
  writeTokenizerFiles(path.join(dir, 'tokenizer'), trainBpe(countPieces([train]), { vocabSize: 512, specialTokens: SPECIAL_TOKENS }));
}

describe('pretraining recipe (miniature corpus)', () => {
  const corpusDir = path.join(scratch, 'corpus');
  miniatureCorpus(corpusDir);
  const options = (outDir: string): PretrainOptions => ({
    corpusDir, outDir, size: 'xs', shape: MODEL_SHAPES.xs!, steps: 12, rowsPerStep: 8, microRows: 4, seqLen: 64, lr: 3e-3, warmup: 2, weightDecay: 0.1, seed: 3, evalEvery: 6, threads: 1,
  });

  it('trains from scratch, writes an F16 model the server can load, and repeats exactly', async () => {
    // The output's parent need not exist yet (models/ in a fresh checkout).
    const dir = path.join(scratch, 'models', 'a');
    const first = await pretrain(options(dir));
    const curve = first.curve.map((p) => p.heldoutBitsPerByte!);
    assert.deepEqual(first.curve.map((p) => p.step), [1, 6, 12]);
    assert.ok(curve[2]! < curve[0]! - 0.3, `held-out bits per byte ${curve.join(' → ')}`);
    assert.ok(Math.abs(first.heldoutBitsPerByteF16 - first.heldoutBitsPerByte) < 0.01, `F16 ${first.heldoutBitsPerByteF16} vs float32 ${first.heldoutBitsPerByte}`);

    const ckpt = openCheckpoint(dir);
    assert.equal(ckpt.arch.vocabSize, 512);
    assert.equal(ckpt.config.dtype, 'float16');
    const dtypes = new Set([...readSafetensorsHeader(path.join(dir, 'model.safetensors')).tensors.values()].map((t) => t.dtype));
    assert.deepEqual([...dtypes], ['F16']);
    for (const file of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'pretrain.json']) assert.ok(fs.existsSync(path.join(dir, file)), file);
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'pretrain.json'), 'utf8')).parameters, first.parameters);

    const second = await pretrain(options(path.join(scratch, 'b')));
    assert.deepEqual(second.curve.map((p) => p.trainLoss), first.curve.map((p) => p.trainLoss));
    assert.ok(fs.readFileSync(path.join(scratch, 'b', 'model.safetensors')).equals(fs.readFileSync(path.join(dir, 'model.safetensors'))), 'the same weights, byte for byte');
  });
});
