import { Hono, type Context } from 'hono';
import { deltaKey, type DeltaRecord } from '../../deltas/catalog.js';
import type { ServerState } from '../context.js';
import { ApiError } from '../errors.js';
import { requireEngine } from '../resolve.js';

/**
 * Operator control of the delta cache tiers (admin keys; open mode is admin):
 * - `POST /admin/v1/deltas/{id}/prefetch` loads a delta version into host memory, and into a free
 *   or least recently used unpinned slot if there is one;
 * - `POST /admin/v1/deltas/{id}/pin` keeps it resident in a slot, never evicted (at most
 *   deltaSlots - 1 pins, so serving can always proceed: 409 `pin_limit` otherwise);
 * - `DELETE /admin/v1/deltas/{id}/pin` lets it be evicted again.
 * `{id}` is `name` (the admin tenant's own, else the one delta of that name) or `owner/name`,
 * optionally `@N`; without a version, the latest.
 */
export function adminDeltaRoutes(state: ServerState): Hono {
  const app = new Hono();
  const action = (op: 'prefetch' | 'pin' | 'unpin') => async (c: Context) => {
    if (!c.get('isAdmin')) throw new ApiError(403, 'only admin keys may manage the delta cache', null, 'permission_denied');
    const engine = requireEngine(state);
    const suffix = op === 'prefetch' ? '/prefetch' : '/pin';
    const id = decodeURIComponent(c.req.path.slice('/admin/v1/deltas/'.length, -suffix.length));
    const { record, version } = find(state, id, c.get('tenant'));
    const key = deltaKey(record.owner, record.name, version);
    const residency = op === 'prefetch' ? await engine.prefetchDelta(key) : op === 'pin' ? await engine.pinDelta(key) : await engine.unpinDelta(key);
    return c.json({ id: `${record.owner}/${record.name}@${version}`, object: 'delta.residency', host: residency.host, slot: residency.slot, pinned: residency.pinned });
  };
  app.post('/admin/v1/deltas/*', async (c) => {
    if (c.req.path.endsWith('/prefetch')) return action('prefetch')(c);
    if (c.req.path.endsWith('/pin')) return action('pin')(c);
    throw new ApiError(404, `no route for POST ${c.req.path}`);
  });
  app.delete('/admin/v1/deltas/*', async (c) => {
    if (c.req.path.endsWith('/pin')) return action('unpin')(c);
    throw new ApiError(404, `no route for DELETE ${c.req.path}`);
  });
  return app;
}

function find(state: ServerState, id: string, tenant: string): { record: DeltaRecord; version: number } {
  const at = id.lastIndexOf('@');
  const ref = at >= 0 ? id.slice(0, at) : id;
  const slash = ref.indexOf('/');
  let record: DeltaRecord | undefined;
  if (slash >= 0) record = state.deltas.get(ref.slice(0, slash), ref.slice(slash + 1));
  else {
    record = state.deltas.get(tenant, ref);
    if (!record) {
      const named = state.deltas.find(ref);
      if (named.length > 1) throw new ApiError(400, `several tenants have a delta called '${ref}'; name one as owner/name`, 'id', 'model_ambiguous');
      record = named[0];
    }
  }
  if (!record) throw new ApiError(404, `delta '${ref}' does not exist`, 'id', 'model_not_found');
  if (at < 0) return { record, version: record.version };
  const version = /^[1-9]\d*$/.test(id.slice(at + 1)) ? Number(id.slice(at + 1)) : NaN;
  if (!record.versions.includes(version)) throw new ApiError(404, `delta '${ref}' has no version '${id.slice(at + 1)}'`, 'id', 'model_not_found');
  return { record, version };
}
