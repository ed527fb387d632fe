import { Hono } from 'hono';
import crypto from 'node:crypto';
import { allowedMethods } from './allowed-methods.js';
import { authenticate } from './auth.js';
import { rateLimit } from './limits/rate-limit.js';
import type { ServerState } from './context.js';
import { errorBody, handleError } from './errors.js';
import { openApiDocument } from './openapi.js';
import { chatRoutes } from './routes/chat.js';
import { completionRoutes } from './routes/completions.js';
import { adminDeltaRoutes } from './routes/admin-deltas.js';
import { adminFileRoutes } from './routes/admin-files.js';
import { adminFineTuningRoutes } from './routes/admin-fine-tuning.js';
import { deltaRoutes } from './routes/deltas.js';
import { healthRoutes } from './routes/health.js';
import { metricsRoutes } from './routes/metrics.js';
import { modelRoutes } from './routes/models.js';

const PACKAGE_VERSION = '0.1.0';

/**
 * The HTTP app. Routes read the shared state; the engine arrives once the model is loaded.
 *
 * @example const app = createApp(state); await app.request('/health/live');
 */
export function createApp(state: ServerState): Hono {
  const app = new Hono();
  app.use(async (c, next) => {
    const requestId = c.req.header('x-request-id') ?? crypto.randomUUID();
    c.set('requestId', requestId);
    c.set('logFields', {});
    c.header('x-request-id', requestId);
    const started = performance.now();
    await next();
    // One line per request; a streamed generation also logs a 'generation' line when its last byte is out.
    if (c.req.path.startsWith('/health') || c.req.path === '/metrics') return;
    const tenant = c.get('tenant');
    state.logger.info({ requestId, tenant, method: c.req.method, path: c.req.path, status: c.res.status, durationMs: Math.round((performance.now() - started) * 10) / 10, ...c.get('logFields') }, 'request');
  });
  // Every /v1 and /admin route needs a key when there is an auth file; health routes never do.
  app.use('/v1/*', authenticate({ table: state.auth }));
  app.use('/admin/*', authenticate({ table: state.auth }));
  for (const route of ['/v1/completions', '/v1/chat/completions']) app.use(route, rateLimit({ limits: state.limits }));
  app.route('/', healthRoutes(state));
  app.route('/', metricsRoutes(state, { publicMetrics: state.publicMetrics }));
  const openapi = openApiDocument(PACKAGE_VERSION);
  app.get('/openapi.json', (c) => c.json(openapi));
  app.route('/', modelRoutes(state));
  app.route('/', completionRoutes(state));
  app.route('/', chatRoutes(state));
  app.route('/', deltaRoutes(state));
  app.route('/', adminDeltaRoutes(state));
  app.route('/', adminFileRoutes(state));
  app.route('/', adminFineTuningRoutes(state));
  app.notFound((c) => {
    const allowed = allowedMethods(app.routes, c.req.path);
    if (allowed.length) return c.json(errorBody(405, `${c.req.method} is not allowed on ${c.req.path}; use ${allowed.join(', ')}`, null, 'method_not_allowed'), 405, { allow: allowed.join(', ') });
    return c.json(errorBody(404, `no route for ${c.req.method} ${c.req.path}`), 404);
  });
  app.onError(handleError);
  return app;
}
