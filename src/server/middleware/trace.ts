import type { MiddlewareHandler } from 'hono';
import type { Logger } from '../../telemetry/logger.js';
import type { Telemetry } from '../../telemetry/telemetry.js';
import { ClientDisconnected, GenerationTrace } from '../tracing/generation-trace.js';
import { recordGenerationMetrics } from '../tracing/metrics.js';
import type { GenerationSummary } from '../tracing/tally.js';
import { whenFinished } from './finished.js';

export interface TraceGenerationOptions {
  operation: 'text_completion' | 'chat';
  telemetry: Telemetry;
  logger: Logger;
  /** The base model's name: its requests are labelled with it in metrics, any delta as `delta`. */
  modelName: string;
  /** Whether the log line carries the prompt text (read per request: an operator may turn it on). */
  logPrompts: () => boolean;
}

/**
 * Traces a generation route: a root span with its children (the route reports into
 * `c.get('trace')`), the GenAI metrics, and one `generation` log line, all when the response's
 * last byte is out (or the client went away), not when the handler returns a stream. A handler
 * that throws ends the trace with that error.
 *
 * @example app.use('/v1/chat/completions', traceGeneration({ operation: 'chat', telemetry, logger, modelName, logPrompts: () => false }));
 */
export function traceGeneration(options: TraceGenerationOptions): MiddlewareHandler {
  const { operation, telemetry, logger, modelName, logPrompts } = options ?? {};
  if (operation !== 'text_completion' && operation !== 'chat') throw new Error(`traceGeneration: options.operation must be 'text_completion' or 'chat', got ${JSON.stringify(operation)}`);
  if (!telemetry?.tracer || !telemetry.instruments) throw new Error('traceGeneration: options.telemetry must be a Telemetry (tracer and instruments)');
  if (typeof logger?.info !== 'function') throw new Error('traceGeneration: options.logger must be a Logger');
  if (typeof modelName !== 'string' || !modelName) throw new Error(`traceGeneration: options.modelName must be the base model's name, got ${JSON.stringify(modelName)}`);
  if (typeof logPrompts !== 'function') throw new Error('traceGeneration: options.logPrompts must be a function returning a boolean');

  return async function traceGeneration(c, next) {
    const requestId = c.get('requestId');
    const tenant = c.get('tenant');
    const trace = new GenerationTrace(telemetry.tracer, operation, { headers: c.req.raw.headers, requestId, tenant }, logPrompts());
    c.set('trace', trace);
    const finish = (summary: GenerationSummary | undefined) => {
      if (!summary) return;
      const { operation: _, timePerOutputToken: __, ...facts } = summary;
      logger[summary.error === undefined ? 'info' : 'warn']({ requestId, tenant, operation, ...facts }, 'generation');
      recordGenerationMetrics(telemetry.instruments, summary, modelName);
    };
    await next();
    if (c.error) return finish(trace.end(c.error));
    whenFinished(c, (how) => {
      if (how === 'cancelled') trace.fail(new ClientDisconnected());
      else if (how === 'failed') trace.fail(new Error('the response body failed while being sent'));
      finish(trace.end());
    });
  };
}

declare module 'hono' {
  interface ContextVariableMap {
    /** The generation's trace (set by traceGeneration on the generation routes). */
    trace: GenerationTrace;
  }
}
