import { Hono } from 'hono';
import type { ServerState } from '../context.js';
import { errorBody } from '../errors.js';

/**
 * Liveness answers as long as the process serves HTTP and its engine has not been given up on;
 * readiness only once the model is loaded and the delta store read, while the engine thread is up
 * (not while it restarts after a crash), and not while draining.
 */
export function healthRoutes(state: ServerState): Hono {
  const app = new Hono();
  app.get('/health/live', (c) => (state.engine?.status === 'failed' ? c.json(errorBody(503, 'the engine thread could not be restarted'), 503) : c.json({ status: 'ok' })));
  app.get('/health/ready', (c) => {
    if (state.draining) return c.json(errorBody(503, 'shutting down'), 503);
    if (!state.engine) return c.json(errorBody(503, state.startupStatus ?? 'model is loading'), 503);
    const { status } = state.engine;
    if (status === 'restarting' || status === 'failed') return c.json(errorBody(503, status === 'failed' ? 'the engine thread could not be restarted' : 'the engine is restarting after a crash'), 503);
    return c.json({ status: 'ready', model: state.modelName });
  });
  return app;
}
