import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { Telemetry } from './telemetry.js';

test('with an OTLP endpoint, spans and metrics are exported over OTLP/HTTP (flushed at shutdown)', async () => {
  const received: { path: string; type: string; bytes: number }[] = [];
  const collector = http.createServer((req, res) => {
    let bytes = 0;
    req.on('data', (chunk: Buffer) => (bytes += chunk.length));
    req.on('end', () => {
      received.push({ path: req.url ?? '', type: req.headers['content-type'] ?? '', bytes });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
  const { port } = collector.address() as AddressInfo;
  try {
    const telemetry = Telemetry.create({ otlpEndpoint: `http://127.0.0.1:${port}/`, exportIntervalMs: 60_000 });
    telemetry.tracer.startSpan('chat tiny').end();
    telemetry.instruments.requestDuration.record(0.25, { 'gen_ai.operation.name': 'chat' });
    await telemetry.shutdown();
    const paths = received.map((r) => r.path).sort();
    assert.deepEqual(paths, ['/v1/metrics', '/v1/traces']);
    for (const r of received) assert.ok(r.bytes > 0, `${r.path} carried a body (${r.type})`);
  } finally {
    collector.close();
  }
});

test('without an endpoint nothing is exported, and Prometheus text is always there', async () => {
  const telemetry = Telemetry.create({ otlpEndpoint: '' });
  telemetry.instruments.tokens.add(3, { 'gen_ai.token.type': 'output' });
  assert.match(await telemetry.prometheus(), /deltaserve_tokens_total\{gen_ai_token_type="output",otel_scope_name="deltaserve"\} 3/);
  await telemetry.shutdown();
});
