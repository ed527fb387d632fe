import { Hono } from 'hono';
import type { ServerState } from '../context.js';

/**
 * GET /v1/models: the base (no parent) and the deltas the caller may use, each with the base as
 * parent and its owner as `owned_by`.
 *
 * Ids are what the caller can send back as `model` without ambiguity: the caller's own deltas by
 * their plain `name` (a plain name resolves to the caller's own delta first), other tenants' public
 * deltas as `owner/name` (a plain name could be ambiguous between two owners, and could later be
 * shadowed by a delta of the caller's own with the same name).
 */
export function modelRoutes(state: ServerState): Hono {
  const app = new Hono();
  app.get('/v1/models', async (c) => {
    await state.deltaService?.refreshList();
    const tenant = c.get('tenant');
    const created = Math.floor(state.startedAt / 1000);
    const base = { id: state.modelName, object: 'model', created, owned_by: 'deltaserve', root: state.modelName, parent: null };
    const deltas = state.deltas.visibleTo(tenant).map((d) => ({
      id: d.owner === tenant ? d.name : `${d.owner}/${d.name}`,
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
