import { Hono } from 'hono';
import crypto from 'node:crypto';
import type { ServerState } from './context.js';
import { errorBody, handleError } from './errors.js';
import { completionRoutes } from './routes/completions.js';
import { healthRoutes } from './routes/health.js';
import { modelRoutes } from './routes/models.js';

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
    c.header('x-request-id', requestId);
    await next();
  });
  app.route('/', healthRoutes(state));
  app.route('/', modelRoutes(state));
  app.route('/', completionRoutes(state));
  app.notFound((c) => c.json(errorBody(404, `no route for ${c.req.method} ${c.req.path}`), 404));
  app.onError(handleError);
  return app;
}
