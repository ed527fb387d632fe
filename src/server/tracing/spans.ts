import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Context as OtelContext, type Span, type Tracer } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import type { GenerateEvent } from '../../engine/types.js';

const propagator = new W3CTraceContextPropagator();

/** Wall-clock milliseconds with sub-millisecond resolution (span times, durations). */
export const now = () => performance.timeOrigin + performance.now();

/** Who asked, for the root span's attributes (never the API key). */
export interface SpanRequest {
  headers: Headers;
  requestId: string;
  tenant: string;
}

/**
 * One generation request's span tree: the root (`{operation} {model}`, GenAI semantic
 * conventions, parented on an incoming `traceparent`), a child for delta resolution, per choice
 * the queue wait, the delta load (with the cache tier that answered), prefill and decode, and the
 * streaming of the response. Spans only: counts, metrics and the log line live elsewhere
 * (tally.ts, metrics.ts, middleware/trace.ts).
 *
 * @example
 * const spans = new GenerationSpans(tracer, 'chat', { headers, requestId, tenant }, now());
 * const observe = spans.choice(0); observe(event); spans.end(now());
 */
export class GenerationSpans {
  private readonly root: Span;
  private readonly parent: OtelContext;
  private readonly open = new Set<Span>();

  constructor(private readonly tracer: Tracer, private readonly operation: string, request: SpanRequest, started: number) {
    const incoming = propagator.extract(ROOT_CONTEXT, request.headers, { get: (h, key) => (h as Headers).get(key) ?? undefined, keys: (h) => [...(h as Headers).keys()] });
    const attributes = { 'gen_ai.operation.name': operation, 'deltaserve.tenant': request.tenant, 'deltaserve.request_id': request.requestId };
    this.root = tracer.startSpan(operation, { kind: SpanKind.SERVER, startTime: started, attributes }, incoming);
    this.parent = trace.setSpan(incoming, this.root);
  }

  /** The request names its model: the root is renamed `{operation} {model}`, as the conventions ask. */
  model(model: string, attributes: Attributes): void {
    this.root.updateName(`${this.operation} ${model}`);
    this.root.setAttributes({ 'gen_ai.request.model': model, ...attributes });
  }

  /** Runs `resolve` inside a `deltaserve.delta.resolve` span; `delta` names what it chose ('none' for the base). */
  resolve<T>(resolve: () => T, delta: (resolved: T) => string): T {
    const span = this.child('deltaserve.delta.resolve');
    try {
      const resolved = resolve();
      span.setAttribute('deltaserve.delta', delta(resolved));
      this.root.setAttribute('deltaserve.delta', delta(resolved));
      return resolved;
    } catch (err) {
      fail(span, err);
      throw err;
    } finally {
      this.close(span);
    }
  }

  /** An observer of one choice's engine events, turning them into child spans. */
  choice(index: number): (event: GenerateEvent) => void {
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
      } else if (event.type === 'token' && phase !== 'decode') {
        this.close(current, at);
        current = this.child('deltaserve.decode', { 'deltaserve.choice': index }, at);
        phase = 'decode';
      } else if (event.type === 'done') {
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

  /** The response body starts streaming: a `deltaserve.stream` span until the trace ends. */
  stream(): void {
    this.child('deltaserve.stream');
  }

  /** Ends every open span and the root at `at`, failed with `error` if given. */
  end(at: number, usage: Attributes, error?: unknown): void {
    for (const span of [...this.open]) {
      if (error !== undefined) fail(span, error);
      this.close(span, at);
    }
    this.root.setAttributes(usage);
    if (error !== undefined) fail(this.root, error);
    this.root.end(at);
  }

  private child(name: string, attributes: Attributes = {}, startTime = now()): Span {
    const span = this.tracer.startSpan(name, { startTime, attributes }, this.parent);
    this.open.add(span);
    return span;
  }

  private close(span: Span | undefined, at = now()): void {
    if (!span || !this.open.delete(span)) return;
    span.end(at);
  }
}

function fail(span: Span, error: unknown): void {
  span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
}
