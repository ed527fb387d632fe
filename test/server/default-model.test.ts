/**
 * The model `npm start` serves with no --model: the pretrained deltaserve-kjv. Through the HTTP
 * API, as a user would see it: its held-out bits per byte (echo + logprobs over the KJV's held-out
 * chapters, docs/pretraining.md) is the figure the README states, and a greedy completion of a
 * prompt from the corpus's domain continues in English words.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ConfigSchema } from '../../src/config.js';
import { DEFAULT_MODEL_NAME } from '../../src/model/default-model.js';
import { bitsPerByte, natsFromLogprobs, piecesForScoring, utf8Bytes } from '../../src/pretrain/bits-per-byte.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { tempDir } from '../helpers.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const HELDOUT = fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'pretrain', 'kjv-heldout.txt'), 'utf8');
/** The README's statement of the default model's held-out bits per byte. */
const STATED = /held-out bits per byte through the API: \*\*([0-9.]+)\*\*/i;
/** Pieces well inside the model's 256-token context (the KJV averages ~3.9 bytes per token). */
const PIECE_BYTES = 600;

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

describe('the default model (no --model)', () => {
  let server: RunningServer;
  before(async () => {
    server = await startServer(ConfigSchema.parse({ port: 0, cacheDir: tempDir(), dataDir: tempDir(), threads: 2, maxRows: 8, logLevel: 'warn' }));
    await server.ready;
  });
  after(() => server.close());

  const complete = async (body: Record<string, unknown>): Promise<Json> => {
    const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const json = await res.json();
    assert.equal(res.status, 200, JSON.stringify(json));
    return json;
  };

  it('is deltaserve-kjv, listed under its name', async () => {
    const models = (await (await fetch(`${server.url}/v1/models`)).json()) as Json;
    assert.ok(models.data.some((m: Json) => m.id === DEFAULT_MODEL_NAME), JSON.stringify(models.data));
  });

  it("scores the held-out chapters at the README's bits per byte", async () => {
    assert.equal(createHash('sha256').update(HELDOUT).digest('hex'), '971df33164a77cd0042672d45584aec48ae08bd334b032e8d3186fc38c305624', 'the fixture is kjv/heldout.txt of corpus-v1');
    const stated = Number(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8').match(STATED)?.[1]);
    assert.ok(Number.isFinite(stated), 'the README states the held-out bits per byte');
    const pieces = piecesForScoring(HELDOUT, PIECE_BYTES);
    let nats = 0;
    for (let i = 0; i < pieces.length; i += 8) {
      const batch = pieces.slice(i, i + 8);
      const json = await complete({ model: DEFAULT_MODEL_NAME, prompt: batch.map((p) => `<|endoftext|>${p}`), echo: true, logprobs: 0, max_tokens: 0, temperature: 0 });
      for (const choice of json.choices) nats += natsFromLogprobs(choice.logprobs.token_logprobs);
    }
    const measured = bitsPerByte(nats, utf8Bytes(HELDOUT));
    console.log(`held-out bits per byte through the API: ${measured.toFixed(4)} (README: ${stated})`);
    assert.ok(Math.abs(measured - stated) < 0.005, `measured ${measured}, README states ${stated}`);
    assert.ok(measured <= 2.2, `${measured} bits per byte; the target is ≤ 2.2`);
  });

  it('continues an English prompt from its domain in English words', async () => {
    const json = await complete({ model: DEFAULT_MODEL_NAME, prompt: 'And the LORD said unto Moses,', max_tokens: 24, temperature: 0 });
    const text: string = json.choices[0].text;
    const known = new Set(HELDOUT.toLowerCase().match(/[a-z]+/g));
    const words = text.toLowerCase().match(/[a-z]+/g) ?? [];
    console.log(`completion: ${JSON.stringify(text)}`);
    assert.ok(words.length >= 8, `${words.length} words in ${JSON.stringify(text)}`);
    const share = words.filter((w) => known.has(w)).length / words.length;
    assert.ok(share >= 0.8, `${(share * 100).toFixed(0)}% of the words occur in the held-out text: ${JSON.stringify(text)}`);
  });
});
