import { createRequire } from 'node:module';
import type { Meter, Tracer } from '@opentelemetry/api';
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import type * as OtlpMetrics from '@opentelemetry/exporter-metrics-otlp-http';
import type * as OtlpTraces from '@opentelemetry/exporter-trace-otlp-http';
import { detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import { MeterProvider, PeriodicExportingMetricReader, type MetricReader } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, BatchSpanProcessor, SimpleSpanProcessor, type SpanExporter, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { createInstruments, type Instruments } from './instruments.js';

export interface TelemetryOptions {
  serviceName?: string;
  serviceVersion?: string;
  /** OTLP/HTTP base URL (traces to /v1/traces, metrics to /v1/metrics); default OTEL_EXPORTER_OTLP_ENDPOINT. */
  otlpEndpoint?: string | undefined;
  /** Extra span exporter, exported span by span (tests use an InMemorySpanExporter). */
  spanExporter?: SpanExporter;
  /** Extra metric reader (tests read metrics through one). */
  metricReader?: MetricReader;
  /** Milliseconds between OTLP metric exports. */
  exportIntervalMs?: number;
}

/**
 * The process's OpenTelemetry: a tracer and a meter that belong to this server (nothing is
 * registered globally, so several servers in one process — tests — do not mix), Prometheus text
 * for `GET /metrics` always, and OTLP export when an endpoint is configured.
 *
 * @example
 * const telemetry = Telemetry.create({ serviceName: 'deltaserve' });
 * await telemetry.prometheus(); // '# HELP gen_ai_server_request_duration_seconds ...'
 */
export class Telemetry {
  private constructor(
    readonly tracer: Tracer,
    readonly meter: Meter,
    readonly instruments: Instruments,
    private readonly tracerProvider: BasicTracerProvider,
    private readonly meterProvider: MeterProvider,
    private readonly prometheusReader: PrometheusExporter,
  ) {}

  static create(options: TelemetryOptions = {}): Telemetry {
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (e.g. the pod's name) override the defaults.
    const resource = resourceFromAttributes({ 'service.name': options.serviceName ?? 'deltaserve', 'service.version': options.serviceVersion ?? '0.1.0' }).merge(detectResources({ detectors: [envDetector] }));
    const endpoint = options.otlpEndpoint ?? process.env['OTEL_EXPORTER_OTLP_ENDPOINT'];
    const spanProcessors: SpanProcessor[] = [];
    if (options.spanExporter) spanProcessors.push(new SimpleSpanProcessor(options.spanExporter));
    const exporters = endpoint ? otlp() : undefined;
    if (endpoint) spanProcessors.push(new BatchSpanProcessor(new exporters!.traces.OTLPTraceExporter({ url: joinUrl(endpoint, 'v1/traces') })));
    const tracerProvider = new BasicTracerProvider({ resource, spanProcessors });
    const prometheusReader = new PrometheusExporter({ preventServerStart: true });
    const readers: MetricReader[] = [prometheusReader];
    if (options.metricReader) readers.push(options.metricReader);
    if (endpoint) {
      readers.push(new PeriodicExportingMetricReader({ exporter: new exporters!.metrics.OTLPMetricExporter({ url: joinUrl(endpoint, 'v1/metrics') }), exportIntervalMillis: options.exportIntervalMs ?? 15_000 }));
    }
    const meterProvider = new MeterProvider({ resource, readers });
    const meter = meterProvider.getMeter('deltaserve');
    return new Telemetry(tracerProvider.getTracer('deltaserve'), meter, createInstruments(meter), tracerProvider, meterProvider, prometheusReader);
  }

  /** Every metric in Prometheus text exposition format (OpenTelemetry names, dots as underscores, unit suffixes). */
  async prometheus(): Promise<string> {
    const { resourceMetrics } = await this.prometheusReader.collect();
    return new PrometheusSerializer().serialize(resourceMetrics);
  }

  async shutdown(): Promise<void> {
    await Promise.allSettled([this.tracerProvider.shutdown(), this.meterProvider.shutdown()]);
  }
}

/**
 * The OTLP exporters, loaded only when an endpoint is configured: with their protobuf and HTTP
 * stacks they take a few hundred milliseconds to import, a cost every cold start would otherwise
 * pay. (Synchronously, through their CommonJS builds, so Telemetry.create stays synchronous.)
 */
function otlp(): { traces: typeof OtlpTraces; metrics: typeof OtlpMetrics } {
  const require = createRequire(import.meta.url);
  return { traces: require('@opentelemetry/exporter-trace-otlp-http'), metrics: require('@opentelemetry/exporter-metrics-otlp-http') };
}

function joinUrl(base: string, path: string): string {
  return `${base.replace(/\/+$/, '')}/${path}`;
}
