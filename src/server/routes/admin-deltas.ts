import { Hono, type Context } from 'hono';
import type { DeltaRecord } from '../../deltas/catalog.js';
import { decodePathSegment, deltaKey, parseDeltaRef } from '../../deltas/ref.js';
import type { ServerState } from '../context.js';
import { ApiError } from '../errors.js';
import { audit } from '../audit.js';

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
    const engine = c.get('engine');
    const suffix = op === 'prefetch' ? '/prefetch' : '/pin';
    const id = decodePathSegment(c.req.path.slice('/admin/v1/deltas/'.length, -suffix.length));
    if (id === undefined) throw new ApiError(400, 'the delta id in the path is not valid percent-encoding', 'id', 'invalid_value');
    await state.deltaService?.freshen(id, c.get('tenant'));
    const { record, version } = find(state, id, c.get('tenant'));
    const key = deltaKey(record.owner, record.name, version);
    const residency = op === 'prefetch' ? await engine.prefetchDelta(key) : op === 'pin' ? await engine.pinDelta(key) : await engine.unpinDelta(key);
    audit(state, c, `delta.${op}`, { delta: key });
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

/**
 * An admin names any tenant's delta: `owner/name`, or a plain `name` that is the acting tenant's
 * own (an admin key without X-Deltaserve-Tenant acts as 'admin'), else the one delta of that name
 * whoever owns it (400 when several tenants have one).
 */
function find(state: ServerState, id: string, tenant: string): { record: DeltaRecord; version: number } {
  const parsed = parseDeltaRef(id);
  if (!parsed.ok) throw new ApiError(404, `delta '${id.slice(0, 160)}' does not exist: it ${parsed.problem}`, 'id', 'model_not_found');
  const { owner, name, version } = parsed.ref;
  let record: DeltaRecord | undefined;
  if (owner !== undefined) record = state.deltas.get(owner, name);
  else {
    record = state.deltas.get(tenant, name);
    if (!record) {
      const named = state.deltas.find(name);
      if (named.length > 1) throw new ApiError(400, `several tenants have a delta called '${name}'; name one as owner/name`, 'id', 'model_ambiguous');
      record = named[0];
    }
  }
  if (!record) throw new ApiError(404, `delta '${id}' does not exist`, 'id', 'model_not_found');
  if (version === undefined) return { record, version: record.version };
  if (!record.versions.includes(version)) throw new ApiError(404, `delta '${record.owner}/${record.name}' has no version '${version}'`, 'id', 'model_not_found');
  return { record, version };
}
