import type { Attributes, Tracer } from '@opentelemetry/api';
import type { Context } from 'hono';
import { streamSSE, type SSEStreamingApi } from 'hono/streaming';
import type { GenerateEvent } from '../../engine/types.js';
import { ApiError, errorBody, toApiError } from '../errors.js';
import { GenerationSpans, now, type SpanRequest } from './spans.js';
import { GenerationTally, type GenerationSummary } from './tally.js';

/**
 * What a generation route tells the trace as it works: the model it was asked for, the deltas it
 * resolved, each choice's engine events, the start of a streamed body, a failure mid-stream. The
 * `traceGeneration` middleware creates it (`c.get('trace')`) and ends it with the response's last
 * byte; routes never end it.
 *
 * @example
 * const t = c.get('trace');
 * t.request(body.model, requestAttributes(body, maxTokens), promptText);
 * const resolved = t.resolveDeltas(() => resolveDeltas(state, body.model, tenant));
 * plan.observe = t.choice(0, promptIds.length);
 */
export class GenerationTrace {
  private readonly started = now();
  private readonly spans: GenerationSpans;
  private readonly tally: GenerationTally;
  private summary: GenerationSummary | undefined;
  /** A failure the response could not carry as its status (it came after the first byte). */
  private streamError: unknown;

  constructor(tracer: Tracer, operation: string, request: SpanRequest, private readonly logPrompts: boolean) {
    this.spans = new GenerationSpans(tracer, operation, request, this.started);
    this.tally = new GenerationTally(operation, this.started);
  }

  /** The request names its model; the prompt text is kept for the log line only with --log-prompts. */
  request(model: string, attributes: Attributes, promptText?: string): void {
    this.tally.named(model, this.logPrompts ? promptText : undefined);
    this.spans.model(model, attributes);
  }

  /** Runs `resolve` inside its span and records the deltas it chose (joined by '+'; none for the base). */
  resolveDeltas<T extends { keys: string[] }>(resolve: () => T): T {
    const joined = (r: T) => (r.keys.length ? r.keys.join('+') : null);
    const resolved = this.spans.resolve(resolve, (r) => joined(r) ?? 'none');
    this.tally.resolved(joined(resolved));
    return resolved;
  }

  /** An observer of one choice's engine events (spans and counts). */
  choice(index: number, promptTokens: number): (event: GenerateEvent) => void {
    this.tally.choice(promptTokens);
    const spans = this.spans.choice(index);
    return (event) => {
      this.tally.observe(event, now());
      spans(event);
    };
  }

  /** The response body starts streaming; its span ends with the last byte. */
  streamStarted(): void {
    this.spans.stream();
  }

  /** A failure after the status line went out (mid-stream): the trace ends as failed. */
  fail(error: unknown): void {
    this.streamError ??= error;
  }

  /**
   * Ends the trace (idempotent; the second call returns undefined): spans closed, the summary of
   * counts for the metrics and the log line. `error` wins over a failure recorded mid-stream.
   */
  end(error: unknown = this.streamError): GenerationSummary | undefined {
    if (this.summary) return undefined;
    const at = now();
    this.spans.end(at, this.tally.usage(), error);
    this.summary = this.tally.summary(at, error);
    return this.summary;
  }
}

/**
 * GenAI request attributes shared by completions and chat.
 *
 * @example t.request(body.model, requestAttributes(body, 16)); // gen_ai.request.max_tokens 16, choice.count, temperature…
 */
export function requestAttributes(body: { temperature?: number | null; top_p?: number | null; n?: number | null; seed?: number | null }, maxTokens: number): Attributes {
  const attributes: Attributes = { 'gen_ai.request.max_tokens': maxTokens, 'gen_ai.request.choice.count': body.n ?? 1 };
  if (body.temperature != null) attributes['gen_ai.request.temperature'] = body.temperature;
  if (body.top_p != null) attributes['gen_ai.request.top_p'] = body.top_p;
  if (body.seed != null) attributes['gen_ai.request.seed'] = body.seed;
  return attributes;
}

/** A streamed generation whose client went away before its end (its outcome in logs and metrics). */
export class ClientDisconnected extends Error {
  readonly code = 'client_disconnected';
  constructor() {
    super('the client disconnected before the response ended');
  }
}

/**
 * streamSSE with the body traced as `deltaserve.stream`: a failure mid-stream (the engine
 * restarting, a store outage) fails the trace and reaches the client as a last event in OpenAI's
 * error shape, since the status line went out with the first byte. A stream still running when
 * `cut` aborts (the shutdown grace ended) ends with a last event saying so.
 *
 * @example return tracedStream(c, state.streamsCut?.signal, async (stream) => { await stream.writeSSE({ data: '[DONE]' }); });
 */
export function tracedStream(c: Context, cut: AbortSignal | undefined, write: (stream: SSEStreamingApi) => Promise<void>): Response {
  const t = c.get('trace');
  return streamSSE(c, async (stream) => {
    t.streamStarted();
    let disconnected = false;
    stream.onAbort(() => {
      disconnected = true;
    });
    try {
      if (await untilCut(write(stream), cut)) throw new ApiError(503, 'the server shut down before this stream ended (--shutdown-grace-ms passed); retry on another replica', null, 'shutting_down');
    } catch (err) {
      t.fail(err);
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
