import assert from 'node:assert/strict';
import http from 'node:http';
import { describe, it } from 'node:test';
import { Telemetry } from './telemetry.js';

describe('Telemetry', () => {
  it('exports traces and metrics over OTLP/HTTP when an endpoint is configured (exporters loaded on demand)', async () => {
    const received: string[] = [];
    const collector = http.createServer((req, res) => {
      received.push(`${req.method} ${req.url}`);
      req.resume().on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
    });
    await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
    const { port } = collector.address() as { port: number };
    try {
      const telemetry = Telemetry.create({ serviceName: 'otlp-test', otlpEndpoint: `http://127.0.0.1:${port}/`, exportIntervalMs: 60_000 });
      telemetry.tracer.startSpan('probe').end();
      telemetry.instruments.tokens.add(3, { 'gen_ai.token.type': 'output' });
      await telemetry.shutdown(); // flushes both
      assert.ok(received.includes('POST /v1/traces'), received.join(', '));
      assert.ok(received.includes('POST /v1/metrics'), received.join(', '));
    } finally {
      collector.close();
    }
  });

  it('without an endpoint exports nothing and still renders Prometheus text', async () => {
    const telemetry = Telemetry.create({ otlpEndpoint: undefined });
    telemetry.instruments.tokens.add(2, { 'gen_ai.token.type': 'input' });
    assert.match(await telemetry.prometheus(), /deltaserve_tokens/);
    await telemetry.shutdown();
  });
});
