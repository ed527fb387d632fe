import type { GenerateEvent } from '../../engine/types.js';

/** What one generation came to: the facts its log line and its metrics are made of. */
export interface GenerationSummary {
  operation: string;
  /** `ok`, `error`, or `timeout` for a generation cut by --request-timeout-ms that still answered. */
  outcome: 'ok' | 'error' | 'timeout';
  /** A bounded error class (see errorType); absent when it succeeded. */
  error?: string;
  /** The model as the request named it (log only: metrics use a bounded set, see metricModel). */
  model?: string;
  /** The deltas it ran on, joined by '+'; null for the base; absent when resolution never happened. */
  delta?: string | null;
  prompt?: string;
  promptTokens: number;
  completionTokens: number;
  finishReasons: string[];
  /** Milliseconds to the first token, null if none came. */
  ttftMs: number | null;
  /** Seconds per output token after the first, null for fewer than two. */
  timePerOutputToken: number | null;
  durationMs: number;
}

/**
 * Counts one generation as it runs (tokens, finish reasons, first and last token times, the model
 * and deltas it named) and sums it up at the end. Pure bookkeeping: no spans, no I/O.
 *
 * @example
 * const tally = new GenerationTally('chat', performance.timeOrigin + performance.now());
 * tally.observe(event); const summary = tally.summary(endedAt);
 */
export class GenerationTally {
  private firstTokenAt = 0;
  private lastTokenAt = 0;
  private inputTokens = 0;
  private outputTokens = 0;
  private readonly finishReasons: string[] = [];
  private model: string | undefined;
  private delta: string | null | undefined;
  private prompt: string | undefined;

  constructor(readonly operation: string, readonly started: number) {}

  named(model: string, prompt?: string): void {
    this.model = model;
    if (prompt !== undefined) this.prompt = prompt;
  }

  resolved(delta: string | null): void {
    this.delta = delta;
  }

  choice(promptTokens: number): void {
    this.inputTokens += promptTokens;
  }

  observe(event: GenerateEvent, at: number): void {
    if (event.type === 'token') {
      if (!this.firstTokenAt) this.firstTokenAt = at;
      this.lastTokenAt = at;
    } else if (event.type === 'done') {
      this.outputTokens += event.completionTokens;
      this.finishReasons.push(event.finishReason);
    }
  }

  /** The GenAI usage attributes of the root span. */
  usage(): { 'gen_ai.usage.input_tokens': number; 'gen_ai.usage.output_tokens': number; 'gen_ai.response.finish_reasons': string[] } {
    return { 'gen_ai.usage.input_tokens': this.inputTokens, 'gen_ai.usage.output_tokens': this.outputTokens, 'gen_ai.response.finish_reasons': this.finishReasons };
  }

  summary(at: number, error?: unknown): GenerationSummary {
    const outcome = error !== undefined ? 'error' : this.finishReasons.includes('timeout') ? 'timeout' : 'ok';
    const perToken = this.outputTokens > 1 && this.lastTokenAt > this.firstTokenAt ? (this.lastTokenAt - this.firstTokenAt) / 1000 / (this.outputTokens - 1) : null;
    return {
      operation: this.operation,
      outcome,
      ...(error === undefined ? {} : { error: errorType(error) }),
      ...(this.model === undefined ? {} : { model: this.model }),
      ...(this.delta === undefined ? {} : { delta: this.delta }),
      ...(this.prompt === undefined ? {} : { prompt: this.prompt }),
      promptTokens: this.inputTokens,
      completionTokens: this.outputTokens,
      finishReasons: this.finishReasons,
      ttftMs: this.firstTokenAt ? round(this.firstTokenAt - this.started) : null,
      timePerOutputToken: perToken,
      durationMs: round(at - this.started),
    };
  }
}

const round = (ms: number) => Math.round(ms * 10) / 10;

/**
 * A bounded error class for metrics and logs: the project's own error codes (snake_case), else
 * the HTTP status, else `_OTHER` (the semantic conventions' fallback).
 *
 * @example errorType(new ApiError(429, 'slow down', null, 'rate_limit_exceeded')) // 'rate_limit_exceeded'
 */
export function errorType(error: unknown): string {
  const e = error as { code?: unknown; status?: unknown };
  if (typeof e.code === 'string' && /^[a-z][a-z0-9_]{0,47}$/.test(e.code)) return e.code;
  if (typeof e.status === 'number' && Number.isInteger(e.status)) return String(e.status);
  return '_OTHER';
}
