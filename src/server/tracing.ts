import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Context as OtelContext, type Span } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import type { Context } from 'hono';
import { streamSSE, type SSEStreamingApi } from 'hono/streaming';
import type { GenerateEvent } from '../engine/types.js';
import { ApiError, errorBody, toApiError } from './errors.js';
import type { ServerState } from './context.js';

const propagator = new W3CTraceContextPropagator();
const now = () => performance.timeOrigin + performance.now();

/**
 * One generation request's trace and metrics. The root span (`{operation} {model}`, GenAI
 * semantic conventions) has children for delta resolution, and per choice the queue wait, the
 * delta load (with the cache tier that answered), prefill and decode, plus the streaming of the
 * response until its last byte. The root ends when the last byte is written, not when the
 * handler returns a stream. Tenant is an attribute; API keys never are.
 *
 * @example
 * const t = RequestTrace.start(state.telemetry, c, 'text_completion');
 * plan.observe = t.choice(0); ...; t.end();
 */
export class RequestTrace {
  private readonly started = now();
  private readonly root: Span;
  private readonly parent: OtelContext;
  private readonly open = new Set<Span>();
  private firstTokenAt = 0;
  private lastTokenAt = 0;
  private inputTokens = 0;
  private outputTokens = 0;
  private readonly finishReasons: string[] = [];
  private stream: Span | undefined;
  private ended = false;
  private model: string | undefined;

  private readonly log: Record<string, unknown>;

  private constructor(readonly state: ServerState, private readonly operation: string, c: Context) {
    const tracer = state.telemetry.tracer;
    state.inFlight++;
    this.log = { requestId: c.get('requestId'), tenant: c.get('tenant'), operation };
    const incoming = propagator.extract(ROOT_CONTEXT, c.req.raw.headers, { get: (h, key) => (h as Headers).get(key) ?? undefined, keys: (h) => [...(h as Headers).keys()] });
    this.root = tracer.startSpan(operation, { kind: SpanKind.SERVER, startTime: this.started, attributes: { 'gen_ai.operation.name': operation, 'deltaserve.tenant': c.get('tenant'), 'deltaserve.request_id': c.get('requestId') } }, incoming);
    this.parent = trace.setSpan(incoming, this.root);
  }

  /** Starts the trace of a generation request; refuses new ones (503) while the server drains. */
  static start(state: ServerState, c: Context, operation: 'text_completion' | 'chat'): RequestTrace {
    if (state.draining) throw new ApiError(503, 'the server is shutting down; retry on another replica', null, 'shutting_down', { 'Retry-After': '1' });
    return new RequestTrace(state, operation, c);
  }

  /** The request names its model (the span is renamed `{operation} {model}` as the conventions ask). */
  request(model: string, attributes: Attributes, promptText?: string): void {
    this.model = model;
    this.log['model'] = model;
    if (promptText !== undefined && this.state.logPrompts) this.log['prompt'] = promptText;
    this.root.updateName(`${this.operation} ${model}`);
    this.root.setAttributes({ 'gen_ai.request.model': model, ...attributes });
  }

  /** Runs `resolve` inside a `deltaserve.delta.resolve` span and records the deltas it chose (joined by '+'). */
  resolveDeltas<T extends { keys: string[] }>(resolve: () => T): T {
    const span = this.child('deltaserve.delta.resolve');
    try {
      const resolved = resolve();
      const delta = resolved.keys.length ? resolved.keys.join('+') : null;
      span.setAttribute('deltaserve.delta', delta ?? 'none');
      this.log['delta'] = delta;
      this.root.setAttribute('deltaserve.delta', delta ?? 'none');
      return resolved;
    } catch (err) {
      fail(span, err);
      throw err;
    } finally {
      this.close(span);
    }
  }

  /** An observer of one choice's engine events, turning them into child spans. */
  choice(index: number, promptTokens: number): (event: GenerateEvent) => void {
    this.inputTokens += promptTokens;
    let current: Span | undefined = this.child('deltaserve.queue', { 'deltaserve.choice': index });
    let phase: 'queue' | 'prefill' | 'decode' = 'queue';
    return (event) => {
      const at = now();
      if (event.type === 'admitted') {
        this.close(current, at);
        if (event.deltaTier !== 'none') {
          const load = this.child('deltaserve.delta.load', { 'deltaserve.choice': index, 'deltaserve.cache.tier': event.deltaTier, 'deltaserve.delta.load_ms': event.deltaLoadMs }, at - event.deltaLoadMs);
          this.close(load, at);
        }
        current = this.child('deltaserve.prefill', { 'deltaserve.choice': index }, at);
        phase = 'prefill';
      } else if (event.type === 'token') {
        if (!this.firstTokenAt) this.firstTokenAt = at;
        this.lastTokenAt = at;
        if (phase !== 'decode') {
          this.close(current, at);
          current = this.child('deltaserve.decode', { 'deltaserve.choice': index }, at);
          phase = 'decode';
        }
      } else if (event.type === 'done') {
        this.outputTokens += event.completionTokens;
        this.finishReasons.push(event.finishReason);
        current?.setAttribute('gen_ai.usage.output_tokens', event.completionTokens);
        this.close(current, at);
        current = undefined;
      } else if (event.type === 'error') {
        if (current) fail(current, new Error(event.message));
        this.close(current, at);
        current = undefined;
      }
    };
  }

  /** The response body starts streaming; the span ends with the last byte. */
  streamStarted(): void {
    this.stream = this.child('deltaserve.stream');
  }

  /** Ends the trace (idempotent): usage attributes, metrics, and any span still open. */
  end(error?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    const at = now();
    for (const span of [...this.open]) {
      if (error !== undefined) fail(span, error);
      this.close(span, at);
    }
    this.root.setAttributes({ 'gen_ai.usage.input_tokens': this.inputTokens, 'gen_ai.usage.output_tokens': this.outputTokens, 'gen_ai.response.finish_reasons': this.finishReasons });
    const attributes: Attributes = { 'gen_ai.operation.name': this.operation, 'gen_ai.request.model': this.metricModel() };
    if (error !== undefined) {
      fail(this.root, error);
      attributes['error.type'] = errorType(error);
    }
    this.root.end(at);
    this.state.inFlight--;
    // A generation cut by --request-timeout-ms answered, but not in full: its own outcome.
    const outcome = error !== undefined ? 'error' : this.finishReasons.includes('timeout') ? 'timeout' : 'ok';
    const summary = { ...this.log, outcome, ...(error === undefined ? {} : { error: errorType(error) }), promptTokens: this.inputTokens, completionTokens: this.outputTokens, finishReasons: this.finishReasons, ttftMs: this.firstTokenAt ? round(this.firstTokenAt - this.started) : null, durationMs: round(at - this.started) };
    this.state.logger[error === undefined ? 'info' : 'warn'](summary, 'generation');
    const m = this.state.telemetry.instruments;
    m.requestDuration.record((at - this.started) / 1000, attributes);
    m.requests.add(1, { ...attributes, 'deltaserve.outcome': outcome });
    if (this.firstTokenAt) m.timeToFirstToken.record((this.firstTokenAt - this.started) / 1000, attributes);
    if (this.outputTokens > 1 && this.lastTokenAt > this.firstTokenAt) m.timePerOutputToken.record((this.lastTokenAt - this.firstTokenAt) / 1000 / (this.outputTokens - 1), attributes);
    m.tokens.add(this.inputTokens, { ...attributes, 'gen_ai.token.type': 'input' });
    m.tokens.add(this.outputTokens, { ...attributes, 'gen_ai.token.type': 'output' });
  }

  /**
   * The model as a metric attribute, from a fixed set: the base model's name, `delta` for any
   * delta, `unknown` when the request named nothing servable. Client-chosen names as labels
   * would grow the series without bound and show tenants' private delta names on /metrics.
   */
  private metricModel(): string {
    if (!('delta' in this.log)) return 'unknown';
    return this.log['delta'] === null ? this.state.modelName : 'delta';
  }

  private child(name: string, attributes: Attributes = {}, startTime = now()): Span {
    const span = this.state.telemetry.tracer.startSpan(name, { startTime, attributes }, this.parent);
    this.open.add(span);
    return span;
  }

  private close(span: Span | undefined, at = now()): void {
    if (!span || !this.open.delete(span)) return;
    span.end(at);
  }
}

/** GenAI request attributes shared by completions and chat. */
export function requestAttributes(body: { temperature?: number | null; top_p?: number | null; n?: number | null; seed?: number | null }, maxTokens: number): Attributes {
  const attributes: Attributes = { 'gen_ai.request.max_tokens': maxTokens, 'gen_ai.request.choice.count': body.n ?? 1 };
  if (body.temperature != null) attributes['gen_ai.request.temperature'] = body.temperature;
  if (body.top_p != null) attributes['gen_ai.request.top_p'] = body.top_p;
  if (body.seed != null) attributes['gen_ai.request.seed'] = body.seed;
  return attributes;
}

const round = (ms: number) => Math.round(ms * 10) / 10;

function fail(span: Span, error: unknown): void {
  span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
}

/**
 * A bounded error class for metrics and logs: the project's own error codes (snake_case), else
 * the HTTP status, else `_OTHER` (the semantic conventions' fallback).
 */
function errorType(error: unknown): string {
  const e = error as { code?: unknown; status?: unknown };
  if (typeof e.code === 'string' && /^[a-z][a-z0-9_]{0,47}$/.test(e.code)) return e.code;
  if (typeof e.status === 'number' && Number.isInteger(e.status)) return String(e.status);
  return '_OTHER';
}


/**
 * streamSSE whose body is traced as `deltaserve.stream` and whose request trace ends with the
 * last byte (or the client's disconnect), not when the handler returns the Response.
 */
export function tracedStream(c: Context, t: RequestTrace, write: (stream: SSEStreamingApi) => Promise<void>): Response {
  return streamSSE(c, async (stream) => {
    t.streamStarted();
    let disconnected = false;
    stream.onAbort(() => {
      disconnected = true;
    });
    try {
      // A stream still running when the shutdown grace ends is cut, with a last event saying so.
      const cut = t.state.streamsCut?.signal;
      if (await untilCut(write(stream), cut)) throw new ApiError(503, 'the server shut down before this stream ended (--shutdown-grace-ms passed); retry on another replica', null, 'shutting_down');
      t.end(disconnected ? new ClientDisconnected() : undefined);
    } catch (err) {
      t.end(err);
      // The status line went out with the first byte: a failure mid-stream (the engine restarting,
      // a store outage) reaches the client as a last event in OpenAI's error shape, then the end.
      const { error } = toApiError(err as Error);
      if (!disconnected) await stream.writeSSE({ data: JSON.stringify(errorBody(error.status, error.message, error.param, error.code)) }).catch(() => undefined);
    }
  });
}

/** Resolves true if `signal` aborts before `work` settles (work then runs on, unawaited), false after it. */
async function untilCut(work: Promise<void>, signal: AbortSignal | undefined): Promise<boolean> {
  if (!signal) return work.then(() => false);
  if (signal.aborted) return true;
  let onAbort: () => void = () => undefined;
  const cut = new Promise<true>((resolve) => signal.addEventListener('abort', (onAbort = () => resolve(true)), { once: true }));
  try {
    return await Promise.race([work.then(() => false as const), cut]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

class ClientDisconnected extends Error {
  readonly code = 'client_disconnected';
  constructor() {
    super('the client disconnected before the response ended');
  }
}
