import { Hono } from 'hono';
import { modelServerMetrics } from '../../telemetry/model-server-metrics.js';
import type { ServerState } from '../context.js';

/**
 * `GET /metrics`: every OpenTelemetry metric in Prometheus text, followed by the model-server
 * protocol gauges (vLLM names) that inference routers' endpoint pickers scrape. No key needed,
 * like the health routes: scrapers do not carry tenant keys, and nothing here names a prompt.
 */
export function metricsRoutes(state: ServerState): Hono {
  const app = new Hono();
  app.get('/metrics', async (c) => {
    let text = await state.telemetry.prometheus();
    const engine = state.engine;
    const stats = await engine?.stats().catch(() => undefined);
    if (engine && stats) {
      const { maxRows, deltaSlots } = engine.info;
      text += modelServerMetrics({ modelName: state.modelName, waiting: stats.waiting, running: stats.running, maxRows, runningDeltas: stats.runningDeltas, waitingDeltas: stats.waitingDeltas, maxLora: deltaSlots });
    }
    return c.text(text, 200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
  });
  return app;
}
