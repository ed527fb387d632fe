import { Hono } from 'hono';
import type { ServerState } from '../context.js';

/** GET /v1/models: the base (no parent) and every delta, each with the base as parent. */
export function modelRoutes(state: ServerState): Hono {
  const app = new Hono();
  app.get('/v1/models', (c) => {
    const created = Math.floor(state.startedAt / 1000);
    const base = { id: state.modelName, object: 'model', created, owned_by: 'deltaserve', root: state.modelName, parent: null };
    const deltas = state.deltas.list().map((d) => ({
      id: d.name,
      object: 'model',
      created: Math.floor(d.createdAt / 1000),
      owned_by: d.owner,
      root: state.modelName,
      parent: state.modelName,
    }));
    return c.json({ object: 'list', data: [base, ...deltas] });
  });
  return app;
}
