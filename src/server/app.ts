import { Hono, type MiddlewareHandler } from 'hono';
import { allowedMethods } from './allowed-methods.js';
import { authenticate } from './auth.js';
import { admitChoices, rateLimit } from './limits/rate-limit.js';
import type { ServerState } from './context.js';
import { errorBody } from './errors.js';
import { adminOnly } from './middleware/admin.js';
import { drainable } from './middleware/drain.js';
import { jsonBody, validBody } from './middleware/json-body.js';
import { onError } from './middleware/on-error.js';
import { requireReady } from './middleware/readiness.js';
import { resolveRequestDeltas } from './middleware/resolve-deltas.js';
import { requestLog } from './middleware/request-log.js';
import { traceGeneration } from './middleware/trace.js';
import { openApiDocument } from './contract/openapi.js';
import { ROUTES } from './contract/routes.js';
import { chatRoutes } from './routes/chat.js';
import { completionChoices, completionRoutes } from './routes/completions.js';
import { ChatCompletionRequest, CompletionRequest } from './schemas.js';
import { adminDeltaRoutes } from './routes/admin-deltas.js';
import { adminFileRoutes } from './routes/admin-files.js';
import { adminFineTuningRoutes } from './routes/admin-fine-tuning.js';
import { deltaRoutes } from './routes/deltas.js';
import { healthRoutes } from './routes/health.js';
import { metricsRoutes } from './routes/metrics.js';
import { modelRoutes } from './routes/models.js';

const PACKAGE_VERSION = '0.1.0';

/**
 * The HTTP app: cross-cutting concerns as middleware, in this order —
 * request id and log line; `authenticate` on `/v1/*` and `/admin/*`, `adminOnly` on `/admin/*`;
 * on the generation routes `drainable` (refused while draining, counted in flight),
 * `traceGeneration` (spans, metrics, the generation log line), `rateLimit` and `requireReady`;
 * `requireReady` on the delta, cache and training routes; `jsonBody` on every route with a JSON
 * request (its route table schema); `resolveRequestDeltas` and `admitChoices` on the generation
 * routes; one `onError` for every failure.
 * Routes read the shared state; the engine arrives once the model is loaded.
 *
 * @example const app = createApp(state); await app.request('/health/live');
 */
export function createApp(state: ServerState): Hono {
  const app = new Hono();
  app.use(requestLog({ logger: state.logger, quiet: (path) => path.startsWith('/health') || path === '/metrics' }));
  // Every /v1 and /admin route needs a key when there is an auth file; health routes never do.
  app.use('/v1/*', authenticate({ table: state.auth }));
  app.use('/admin/*', authenticate({ table: state.auth }), adminOnly());
  // Per-route middleware (POST only), so a 405 for another method is neither traced nor counted.
  app.on('POST', ['/v1/completions'], ...generationMiddleware(state, 'text_completion'));
  app.on('POST', ['/v1/chat/completions'], ...generationMiddleware(state, 'chat'));
  // Each JSON request is validated by its route table entry's schema: on the generation routes
  // after their readiness and limits, on job creation before training readiness (as it was).
  for (const route of ROUTES) if (route.request?.json) app.on(route.method, [route.route], jsonBody({ schema: route.request.json, maxBytes: state.maxBodyBytes }));
  // Then a generation's deltas are resolved (404 before any charge) and its choices admitted.
  app.on('POST', ['/v1/completions', '/v1/chat/completions'], resolveRequestDeltas({ state }));
  app.on('POST', ['/v1/completions'], admitChoices({ maxChoices: state.maxChoices, choices: (c) => completionChoices(validBody(c, CompletionRequest)) }));
  app.on('POST', ['/v1/chat/completions'], admitChoices({ maxChoices: state.maxChoices, choices: (c) => ({ prompts: 1, n: validBody(c, ChatCompletionRequest).n ?? 1, param: 'n' }) }));
  const deltas = requireReady({ state, needs: ['deltaService'] });
  const training = requireReady({ state, needs: ['training'] });
  app.use('/v1/deltas', deltas).use('/v1/deltas/*', deltas);
  app.use('/admin/v1/deltas/*', requireReady({ state, needs: ['engine'] }));
  app.use('/admin/v1/files', training).use('/admin/v1/files/*', training).use('/admin/v1/fine_tuning/*', training);
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
  app.onError(onError({ logger: state.logger }));
  return app;
}

/** A generation route's middleware, outermost first: a draining refusal is not traced, a rate-limit or loading refusal is. */
function generationMiddleware(state: ServerState, operation: 'text_completion' | 'chat'): MiddlewareHandler[] {
  return [
    drainable({ state }),
    traceGeneration({ operation, telemetry: state.telemetry, logger: state.logger, modelName: state.modelName, logPrompts: () => state.logPrompts }),
    rateLimit({ limits: state.limits }),
    requireReady({ state, needs: ['engine'] }),
  ];
}
