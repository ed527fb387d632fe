import type { Attributes } from '@opentelemetry/api';
import type { Instruments } from '../../telemetry/instruments.js';
import type { GenerationSummary } from './tally.js';

/**
 * Records a finished generation in the GenAI metrics: request duration and count by outcome,
 * time to first token, time per output token, and input/output tokens.
 *
 * @example recordGenerationMetrics(telemetry.instruments, tally.summary(now()), 'tiny-llama');
 */
export function recordGenerationMetrics(m: Instruments, summary: GenerationSummary, baseModel: string): void {
  const attributes: Attributes = { 'gen_ai.operation.name': summary.operation, 'gen_ai.request.model': metricModel(summary, baseModel) };
  if (summary.error !== undefined) attributes['error.type'] = summary.error;
  m.requestDuration.record(summary.durationMs / 1000, attributes);
  m.requests.add(1, { ...attributes, 'deltaserve.outcome': summary.outcome });
  if (summary.ttftMs !== null) m.timeToFirstToken.record(summary.ttftMs / 1000, attributes);
  if (summary.timePerOutputToken !== null) m.timePerOutputToken.record(summary.timePerOutputToken, attributes);
  m.tokens.add(summary.promptTokens, { ...attributes, 'gen_ai.token.type': 'input' });
  m.tokens.add(summary.completionTokens, { ...attributes, 'gen_ai.token.type': 'output' });
}

/**
 * The model as a metric attribute, from a fixed set: the base model's name, `delta` for any
 * delta, `unknown` when the request named nothing servable. Client-chosen names as labels
 * would grow the series without bound and show tenants' private delta names on /metrics.
 */
function metricModel(summary: GenerationSummary, baseModel: string): string {
  if (summary.delta === undefined) return 'unknown';
  return summary.delta === null ? baseModel : 'delta';
}
