import { Hono } from 'hono';
import type { ServerState } from '../context.js';
import { errorBody } from '../errors.js';

/** Liveness answers as long as the process serves HTTP; readiness only once the model is loaded, and not while draining. */
export function healthRoutes(state: ServerState): Hono {
  const app = new Hono();
  app.get('/health/live', (c) => c.json({ status: 'ok' }));
  app.get('/health/ready', (c) => {
    if (state.draining) return c.json(errorBody(503, 'shutting down'), 503);
    return state.engine ? c.json({ status: 'ready', model: state.modelName }) : c.json(errorBody(503, 'model is loading'), 503);
  });
  return app;
}
