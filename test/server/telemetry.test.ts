import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MetricReader, type HistogramMetricData, type MetricData, type SumMetricData } from '@opentelemetry/sdk-metrics';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { ConfigSchema } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { Telemetry } from '../../src/telemetry/telemetry.js';
import { FIXTURE, LogLines, loadReference, tempDir } from '../helpers.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const ref = loadReference();
const LORA_DIR = path.join(FIXTURE, 'lora_all_r8');

/** A pull reader the test collects from directly. */
class TestReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

describe('telemetry: traces, metrics, /metrics and logs', () => {
  const dataDir = tempDir();
  const cacheDir = tempDir();
  const spans = new InMemorySpanExporter();
  const reader = new TestReader();
  const logs = new LogLines();
  let server: RunningServer;
  const config = (extra: Record<string, unknown> = {}) => ConfigSchema.parse({ port: 0, cacheDir, dataDir, model: path.join(FIXTURE, 'base'), modelName: 'tiny-llama', maxContext: 64, threads: 1, maxRank: 8, ...extra });

  before(async () => {
    // A delta stored by an earlier server, so the first request for it loads it from the store.
    const first = await startServer(config({ delta: [`mine=${LORA_DIR}`] }), { logger: createLogger({ level: 'silent' }) });
    await first.ready;
    await first.close();
    server = await startServer(config(), { telemetry: Telemetry.create({ spanExporter: spans, metricReader: reader }), logger: createLogger({ destination: logs }) });
    await server.ready;
  });
  after(() => server.close());

  const post = (route: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${server.url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  const metric = async (name: string): Promise<MetricData | undefined> => {
    const { resourceMetrics } = await reader.collect();
    return resourceMetrics.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === name);
  };
  const histogramCount = (m: MetricData | undefined, match: Record<string, unknown> = {}) =>
    (m as HistogramMetricData | undefined)?.dataPoints.filter((p) => Object.entries(match).every(([k, v]) => p.attributes[k] === v)).reduce((n, p) => n + p.value.count, 0) ?? 0;
  const sum = (m: MetricData | undefined, match: Record<string, unknown>) =>
    (m as SumMetricData | undefined)?.dataPoints.filter((p) => Object.entries(match).every(([k, v]) => p.attributes[k] === v)).reduce((n, p) => n + p.value, 0) ?? 0;

  it('a streamed completion is one trace: resolution, queue, delta load (tier store), prefill, decode and the stream to its last byte', async () => {
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const res = await post('/v1/completions', { model: 'mine', prompt: ref.input_ids[0], max_tokens: 5, temperature: 0, stream: true }, { traceparent, authorization: 'Bearer secret-key-never-logged' });
    const text = await res.text();
    assert.match(text, /data: \[DONE\]/);
    const all = spans.getFinishedSpans();
    const root = all.find((s) => s.name === 'text_completion mine')!;
    assert.ok(root, all.map((s) => s.name).join(', '));
    assert.equal(root.spanContext().traceId, '4bf92f3577b34da6a3ce929d0e0e4736', 'the incoming traceparent is the parent');
    const children = all.filter((s) => s.parentSpanContext?.spanId === root.spanContext().spanId);
    const byName = new Map<string, ReadableSpan>(children.map((s) => [s.name, s]));
    assert.deepEqual([...byName.keys()].sort(), ['deltaserve.decode', 'deltaserve.delta.load', 'deltaserve.delta.resolve', 'deltaserve.prefill', 'deltaserve.queue', 'deltaserve.stream']);
    assert.equal(byName.get('deltaserve.delta.load')!.attributes['deltaserve.cache.tier'], 'store');
    assert.ok(Number(byName.get('deltaserve.delta.load')!.attributes['deltaserve.delta.load_ms']) > 0);
    assert.equal(byName.get('deltaserve.delta.resolve')!.attributes['deltaserve.delta'], 'default/mine@1');
    const t = (s: ReadableSpan, which: 'startTime' | 'endTime') => s[which][0] * 1e3 + s[which][1] / 1e6;
    const order = ['deltaserve.queue', 'deltaserve.prefill', 'deltaserve.decode'].map((n) => byName.get(n)!);
    for (let i = 1; i < order.length; i++) assert.ok(t(order[i]!, 'startTime') >= t(order[i - 1]!, 'endTime') - 1e-3, `${order[i]!.name} starts after ${order[i - 1]!.name}`);
    assert.ok(t(byName.get('deltaserve.stream')!, 'endTime') >= t(byName.get('deltaserve.decode')!, 'endTime'), 'the stream span ends with the last byte');
    assert.ok(t(root, 'endTime') >= t(byName.get('deltaserve.stream')!, 'endTime'));
    assert.deepEqual(
      { op: root.attributes['gen_ai.operation.name'], model: root.attributes['gen_ai.request.model'], input: root.attributes['gen_ai.usage.input_tokens'], output: root.attributes['gen_ai.usage.output_tokens'], tenant: root.attributes['deltaserve.tenant'], maxTokens: root.attributes['gen_ai.request.max_tokens'] },
      { op: 'text_completion', model: 'mine', input: ref.input_ids[0]!.length, output: 5, tenant: 'default', maxTokens: 5 },
    );
    assert.deepEqual(root.attributes['gen_ai.response.finish_reasons'], ['length']);
    for (const span of all) for (const value of Object.values(span.attributes)) assert.ok(!String(value).includes('secret-key'), `${span.name} carries the API key`);
  });

  it('metric values after a known sequence of requests', async () => {
    await post('/v1/completions', { model: 'mine', prompt: ref.input_ids[1], max_tokens: 3, temperature: 0 }).then((r) => r.json());
    await post('/v1/chat/completions', { model: 'tiny-llama', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, temperature: 0 }).then((r) => r.json());
    assert.equal((await post('/v1/completions', { model: 'no-such-delta', prompt: [1, 2], max_tokens: 2 })).status, 404);
    const duration = await metric('gen_ai.server.request.duration');
    assert.equal(histogramCount(duration, { 'gen_ai.operation.name': 'text_completion' }), 3);
    assert.equal(histogramCount(duration, { 'gen_ai.operation.name': 'chat' }), 1);
    assert.equal(histogramCount(duration, { 'error.type': 'model_not_found' }), 1);
    assert.equal(histogramCount(await metric('gen_ai.server.time_to_first_token')), 3);
    assert.equal(histogramCount(await metric('gen_ai.server.time_per_output_token')), 3);
    const tokens = await metric('deltaserve.tokens');
    assert.equal(sum(tokens, { 'gen_ai.token.type': 'output' }), 5 + 3 + 4);
    assert.equal(sum(await metric('deltaserve.requests'), { 'deltaserve.outcome': 'ok' }), 3);
    assert.equal(sum(await metric('deltaserve.requests'), { 'deltaserve.outcome': 'error' }), 1);
    assert.equal(histogramCount(await metric('deltaserve.delta.load.duration'), { 'deltaserve.cache.tier': 'store' }), 1);
    const gauge = async (name: string) => (await metric(name))?.dataPoints[0]?.value;
    assert.equal(await gauge('deltaserve.queue.depth'), 0);
    assert.equal(await gauge('deltaserve.rows.running'), 0);
    assert.equal(await gauge('deltaserve.slots.resident'), 1);
    assert.equal(sum(await metric('deltaserve.delta.cache.requests'), { 'deltaserve.cache.tier': 'host', 'deltaserve.cache.result': 'miss' }), 1);
    assert.ok(sum(await metric('deltaserve.delta.cache.requests'), { 'deltaserve.cache.tier': 'store' }) >= 1);
    assert.equal(sum(await metric('deltaserve.training.jobs'), { 'deltaserve.training.status': 'running' }), 0);
  });

  it('GET /metrics is valid Prometheus text with the GenAI histograms and the model-server protocol gauges', async () => {
    const res = await fetch(`${server.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const families = parsePrometheus(await res.text());
    assert.equal(families.get('gen_ai_server_request_duration')?.type, 'histogram');
    const ttftCounts = families.get('gen_ai_server_time_to_first_token')!.samples.filter((s) => s.name.endsWith('_count'));
    assert.equal(ttftCounts.reduce((n, s) => n + s.value, 0), 3);
    assert.equal(families.get('deltaserve_queue_depth')?.type, 'gauge');
    assert.equal(families.get('vllm:num_requests_waiting')?.samples[0]?.value, 0);
    assert.equal(families.get('vllm:gpu_cache_usage_perc')?.samples[0]?.value, 0);
    const lora = families.get('vllm:lora_requests_info')!.samples[0]!;
    assert.deepEqual(Object.keys(lora.labels).sort(), ['max_lora', 'running_lora_adapters', 'waiting_lora_adapters']);
    assert.equal(lora.labels['max_lora'], '8');
    // The engine thread's memory, apart from the HTTP thread's heap (a soak tells a leak's side by them).
    for (const name of ['deltaserve_engine_memory_heap_used', 'deltaserve_engine_memory_external']) {
      const family = [...families].find(([key]) => key.startsWith(name))?.[1];
      assert.equal(family?.type, 'gauge', name);
      assert.ok(family!.samples[0]!.value > 0, `${name} = ${family!.samples[0]!.value}`);
    }
  });

  it('logs one JSON line per request and per generation, with ids, tenant, model, delta and outcome, and no prompt text', async () => {
    const generation = logs.lines.filter((l) => l.msg === 'generation');
    assert.ok(generation.length >= 4);
    const streamed = generation.find((l) => l.model === 'mine' && l.completionTokens === 5)!;
    assert.deepEqual({ tenant: streamed.tenant, delta: streamed.delta, outcome: streamed.outcome }, { tenant: 'default', delta: 'default/mine@1', outcome: 'ok' });
    assert.match(streamed.requestId, /^[0-9a-f-]{36}$/);
    assert.ok(generation.some((l) => l.outcome === 'error' && l.error === 'model_not_found'));
    const requests = logs.lines.filter((l) => l.msg === 'request');
    assert.ok(requests.some((l) => l.path === '/v1/completions' && l.status === 404));
    for (const line of logs.lines) {
      assert.equal(line.prompt, undefined, 'no prompt text without --log-prompts');
      assert.ok(!JSON.stringify(line).includes('secret-key'));
    }
  });

  it('with --log-prompts the generation line carries the prompt', async () => {
    server.state.logPrompts = true;
    try {
      await post('/v1/completions', { model: 'tiny-llama', prompt: 'remember this prompt', max_tokens: 1 }).then((r) => r.json());
      assert.ok(logs.lines.some((l) => l.msg === 'generation' && l.prompt === 'remember this prompt'));
    } finally {
      server.state.logPrompts = false;
    }
  });

  it('draining: readiness turns 503 and new generations are refused while a stream in flight finishes', async () => {
    const inFlight = post('/v1/completions', { model: 'tiny-llama', prompt: [1, 2, 3], max_tokens: 20, temperature: 0, stream: true });
    const response = await inFlight;
    const drained = server.drain(10_000);
    assert.equal((await fetch(`${server.url}/health/ready`)).status, 503);
    const refused = await post('/v1/completions', { model: 'tiny-llama', prompt: [1], max_tokens: 1 });
    assert.equal(refused.status, 503);
    assert.equal(((await refused.json()) as Json).error.code, 'shutting_down');
    assert.match(await response.text(), /data: \[DONE\]/);
    await drained;
    assert.equal(server.state.inFlight, 0);
  });
});

interface Family {
  type: string;
  samples: { name: string; labels: Record<string, string>; value: number }[];
}

/** A strict reader of the Prometheus text exposition format (0.0.4). */
function parsePrometheus(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const type = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`).exec(line);
    if (type) {
      assert.ok(!families.has(type[1]!), `family ${type[1]} declared twice`);
      families.set(type[1]!, { type: type[2]!, samples: [] });
      continue;
    }
    if (new RegExp(`^# HELP ${NAME} `).test(line) || line.startsWith('# ')) continue;
    const sample = new RegExp(`^(${NAME})(?:\\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\.)*",?)*)\\})? (-?[0-9.e+-]+|NaN|[+-]Inf)(?: -?\\d+)?$`).exec(line);
    assert.ok(sample, `not a Prometheus sample line: ${line}`);
    const name = sample[1]!;
    const family = families.get(name) ?? families.get(name.replace(/_(bucket|sum|count)$/, ''));
    assert.ok(family, `sample ${name} has no # TYPE`);
    const labels = Object.fromEntries([...(sample[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1]!, m[2]!]));
    family.samples.push({ name, labels, value: Number(sample[3]) });
  }
  return families;
}

