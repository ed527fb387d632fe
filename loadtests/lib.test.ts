import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { mulberry32 } from '../src/model/random.js';
import { assertLoopbackUrl, percentile, planRequests, runCompletion, zipfSampler } from './lib.js';

describe('load harness building blocks', () => {
  it('zipfSampler follows 1/k^s', () => {
    const next = zipfSampler(4, 1.1, mulberry32(7));
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 40_000; i++) counts[next()]!++;
    const weights = [1, 2, 3, 4].map((k) => 1 / k ** 1.1);
    const total = weights.reduce((a, b) => a + b, 0);
    counts.forEach((c, k) => assert.ok(Math.abs(c / 40_000 - weights[k]! / total) < 0.01, `rank ${k}: ${c}`));
  });

  it('planRequests is reproducible and stays inside the vocabulary', () => {
    const options = { count: 20, models: ['a', 'b', 'c'], zipfS: 1.1, promptTokens: 32, vocab: 50, seed: 3 };
    const a = planRequests(options);
    assert.deepEqual(a, planRequests(options));
    assert.equal(a.length, 20);
    for (const r of a) {
      assert.equal(r.prompt.length, 32);
      assert.ok(r.prompt.every((t) => t >= 1 && t < 50));
      assert.ok(options.models.includes(r.model));
    }
  });

  it('percentile interpolates between ranks', () => {
    assert.equal(percentile([1, 2, 3, 4, 5], 50), 3);
    assert.equal(percentile([10, 20], 95), 19.5);
    assert.ok(Number.isNaN(percentile([], 50)));
  });

  it('assertLoopbackUrl accepts only this machine', () => {
    assert.equal(assertLoopbackUrl('http://127.0.0.1:8000/'), 'http://127.0.0.1:8000');
    assert.equal(assertLoopbackUrl('http://localhost:9'), 'http://localhost:9');
    assert.equal(assertLoopbackUrl('http://[::1]:8000'), 'http://[::1]:8000');
    assert.throws(() => assertLoopbackUrl('http://10.0.0.1:8000'), /not a loopback/);
    assert.throws(() => assertLoopbackUrl('http://example.com'), /not a loopback/);
  });
});

describe('runCompletion against a fake loopback server', () => {
  let server: http.Server;
  let url: string;
  before(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const parsed = JSON.parse(body);
        if (parsed.model === 'missing') {
          res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"message":"no"}}');
        } else if (parsed.stream) {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          const chunk = (ids: number[]) => `data: ${JSON.stringify({ choices: [{ index: 0, text: '', token_ids: ids }] })}\n\n`;
          res.write(chunk([5]));
          // An event split across writes must still parse.
          const second = chunk([6, 7]);
          res.write(second.slice(0, 10));
          setTimeout(() => {
            res.write(second.slice(10));
            res.end(parsed.model === 'truncated' ? '' : 'data: [DONE]\n\n');
          }, 20);
        } else {
          res.writeHead(200, { 'content-type': 'application/json', 'x-deltaserve-ttft-ms': '12.5' });
          res.end(JSON.stringify({ choices: [{ text: '' }], usage: { completion_tokens: 4 } }));
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => server.close());

  const request = (model: string) => ({ index: 0, model, prompt: [1, 2, 3] });
  const signal = () => AbortSignal.timeout(5000);

  it('streams: counts token_ids, measures TTFT, needs [DONE]', async () => {
    const ok = await runCompletion(url, request('d'), { maxTokens: 3, stream: true, signal: signal() });
    assert.equal(ok.ok, true, ok.error);
    assert.equal(ok.outputTokens, 3);
    assert.ok(ok.ttftMs !== undefined && ok.ttftMs <= ok.latencyMs);
    const cut = await runCompletion(url, request('truncated'), { maxTokens: 3, stream: true, signal: signal() });
    assert.equal(cut.ok, false);
    assert.equal(cut.error, 'no [DONE]');
  });

  it('non-streamed: usage tokens and the server TTFT header', async () => {
    const r = await runCompletion(url, request('d'), { maxTokens: 4, stream: false, signal: signal() });
    assert.equal(r.ok, true);
    assert.equal(r.outputTokens, 4);
    assert.equal(r.serverTtftMs, 12.5);
  });

  it('non-2xx is an error', async () => {
    const r = await runCompletion(url, request('missing'), { maxTokens: 4, stream: true, signal: signal() });
    assert.equal(r.ok, false);
    assert.equal(r.status, 404);
    assert.match(r.error!, /^http 404/);
  });
});
