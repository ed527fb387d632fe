import { Hono, type MiddlewareHandler } from 'hono';
import { parseDeltaKey } from '../../deltas/ref.js';
import { modelServerMetrics } from '../../telemetry/model-server-metrics.js';
import { authenticateKey, type AuthTable } from '../auth.js';
import type { ServerState } from '../context.js';
import { ApiError } from '../errors.js';

/**
 * `GET /metrics`: every OpenTelemetry metric in Prometheus text, followed by the model-server
 * protocol gauges (vLLM names) that inference routers' endpoint pickers scrape.
 *
 * Delta names are tenants' private data, and `vllm:lora_requests_info` lists the deltas in use.
 * So with an auth file the route needs a metrics key or an admin key (`metrics_keys` in the auth
 * file; scrapers send it as a bearer token), unless `--public-metrics` opens it, in which case the
 * adapter labels list public deltas only. Metric attributes never carry client-chosen names
 * (see tracing's bounded `gen_ai.request.model`).
 */
export function metricsRoutes(state: ServerState, options: { publicMetrics: boolean }): Hono {
  const app = new Hono();
  app.get('/metrics', metricsAccess({ table: state.auth, publicMetrics: options.publicMetrics }), async (c) => {
    let text = await state.telemetry.prometheus();
    const engine = state.engine;
    const stats = await engine?.stats().catch(() => undefined);
    if (engine && stats) {
      const { maxRows, deltaSlots } = engine.info;
      const names = (keys: string[]) => adapterNames(state, keys, c.get('metricsPrivate'));
      text += modelServerMetrics({ modelName: state.modelName, waiting: stats.waiting, running: stats.running, maxRows, runningAdapters: names(stats.runningDeltas), waitingAdapters: names(stats.waitingDeltas), maxLora: deltaSlots });
      text += hookedKinds(stats.servedKinds);
    }
    return c.text(text, 200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
  });
  return app;
}

/** Which delta kinds are hooked into the graph now: each one's hooks cost every pass (docs/delta-kinds.md). */
function hookedKinds(kinds: string[]): string {
  const name = 'deltaserve_delta_kind_hooked';
  return `# HELP ${name} Delta kinds hooked into the inference graph (1 each); others are hooked in on first use.\n# TYPE ${name} gauge\n${kinds.map((k) => `${name}{kind="${k}"} 1\n`).join('')}`;
}

declare module 'hono' {
  interface ContextVariableMap {
    /** The metrics reader may see private delta names. */
    metricsPrivate: boolean;
  }
}

/**
 * Who may read `/metrics`: anyone in open single-tenant mode (no auth file) or with
 * `publicMetrics` (private delta names then withheld); otherwise a metrics or admin key.
 *
 * @example app.get('/metrics', metricsAccess({ table, publicMetrics: false }), handler)
 */
export function metricsAccess(options: { table: AuthTable | null; publicMetrics: boolean }): MiddlewareHandler {
  if (!options || typeof options.publicMetrics !== 'boolean') throw new Error('metricsAccess needs { table, publicMetrics: boolean }');
  const { table, publicMetrics } = options;
  return async function metricsAccess(c, next) {
    if (!table) {
      c.set('metricsPrivate', true);
      return next();
    }
    const header = c.req.header('authorization');
    if (publicMetrics && header === undefined) {
      c.set('metricsPrivate', false);
      return next();
    }
    const who = authenticateKey(table, header);
    if (!who.admin && !('metrics' in who)) throw new ApiError(403, 'GET /metrics needs a metrics key or an admin key', null, 'permission_denied');
    c.set('metricsPrivate', true);
    await next();
  };
}

/**
 * Each delta under the names a request's `model` may carry for it (`name`, `owner/name`,
 * `owner/name@version`), so the picker's match on the request's model name finds it; private
 * deltas only for a reader that may see them.
 */
function adapterNames(state: ServerState, keys: string[], includePrivate: boolean): string[] {
  const names = new Set<string>();
  for (const key of keys) {
    const ref = parseDeltaKey(key);
    if (!ref) continue;
    if (!includePrivate && !state.deltas.get(ref.owner, ref.name)?.public) continue;
    names.add(ref.name).add(`${ref.owner}/${ref.name}`).add(key);
  }
  return [...names];
}
