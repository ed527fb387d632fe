import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { EMBEDDED_MODEL_NAME, ensureEmbeddedModel } from '../../src/model/embedded.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { writeTinyLora } from '../oracle/checkpoints.js';
import { tempDir } from '../helpers.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const DELTAS = Array.from({ length: 8 }, (_, i) => `tenant-delta-${i}`);

async function complete(server: RunningServer, body: Record<string, unknown>): Promise<Json> {
  const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const json = await res.json();
  assert.equal(res.status, 200, JSON.stringify(json));
  return json;
}

describe('continuous batching on the embedded model: 16 concurrent requests over 8 deltas', () => {
  let server: RunningServer;
  before(async () => {
    const cacheDir = tempDir();
    const baseDir = ensureEmbeddedModel(cacheDir);
    const adapters = DELTAS.map((name, i) => {
      const dir = path.join(cacheDir, 'adapters', name);
      writeTinyLora(dir, 'llama', { seed: 100 + i, r: 4 + (i % 4) * 4, alpha: 8, targetModules: PROJECTIONS, baseDir });
      return `${name}=${dir}`;
    });
    server = await startServer(ConfigSchema.parse({ port: 0, cacheDir, dataDir: tempDir(), model: baseDir, modelName: EMBEDDED_MODEL_NAME, threads: 1, maxRows: 16, deltaSlots: 8, maxContext: 128, delta: adapters }));
    await server.ready;
  });
  after(() => server.close());

  const requests = Array.from({ length: 16 }, (_, i) => ({
    model: i % 9 === 8 ? EMBEDDED_MODEL_NAME : DELTAS[i % 8]!,
    prompt: `request ${i}: the quick brown fox`,
    max_tokens: 10 + (i % 5),
    temperature: 0,
    return_token_ids: true,
  }));

  it('greedy results batched together equal the same requests sent one at a time', async () => {
    const alone: number[][] = [];
    for (const body of requests) alone.push((await complete(server, body)).choices[0].token_ids);
    const together = await Promise.all(requests.map((body) => complete(server, body)));
    together.forEach((res, i) => assert.deepEqual(res.choices[0].token_ids, alone[i], `request ${i} (${requests[i]!.model})`));
    // the deltas really differ from each other and from the base
    const distinct = new Set(alone.slice(0, 8).map((ids) => ids.join(',')));
    assert.ok(distinct.size >= 6, `only ${distinct.size} distinct outputs over 8 deltas`);
  });

  it('a seeded sampled request gives the same output alone and amid other traffic', async () => {
    const seeded = { model: DELTAS[3]!, prompt: 'sampling with a seed', max_tokens: 12, temperature: 0.9, top_p: 0.95, seed: 1234, return_token_ids: true };
    const alone = (await complete(server, seeded)).choices[0].token_ids;
    const [amid] = await Promise.all([complete(server, seeded), ...requests.slice(0, 8).map((body) => complete(server, body))]);
    assert.deepEqual(amid.choices[0].token_ids, alone);
  });
});
