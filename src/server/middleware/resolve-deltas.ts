import type { MiddlewareHandler } from 'hono';
import { z } from 'zod';
import type { ServerState } from '../context.js';
import { freshenDeltas, resolveDeltas, type ResolvedDeltas } from '../resolve.js';

export interface ResolveRequestDeltasOptions {
  /** The catalog, the delta service and the base model's name. */
  state: ServerState;
}

/** What every generation body names (both request schemas have these fields). */
const Names = z.object({ model: z.string(), delta_ids: z.array(z.string()).nullish() });

/**
 * Resolves the deltas a generation names (`model`, joined by `+`, and `delta_ids`) for the
 * request's tenant, after jsonBody validated the body: the catalog is brought up to date with the
 * store for those names, resolution runs in the trace's span, and the result is the context
 * variable `deltas` (engine keys and virtual tokens). A name the tenant may not see is the same
 * 404 as one that does not exist; stacking two of a kind is a 400 (see resolveDeltas).
 *
 * @example app.on('POST', ['/v1/completions'], resolveRequestDeltas({ state }));
 */
export function resolveRequestDeltas(options: ResolveRequestDeltasOptions): MiddlewareHandler {
  const state = options?.state;
  if (!state?.deltas || typeof state.modelName !== 'string') throw new Error('resolveRequestDeltas: options.state must be the server state (deltas, modelName)');
  return async function resolveRequestDeltas(c, next) {
    const { model, delta_ids: ids } = Names.parse(c.get('body')?.value);
    const tenant = c.get('tenant');
    const trace = c.get('trace');
    trace.request(model, {});
    await freshenDeltas(state, model, tenant, ids ?? []);
    c.set('deltas', trace.resolveDeltas(() => resolveDeltas(state, model, tenant, ids ?? [])));
    await next();
  };
}

declare module 'hono' {
  interface ContextVariableMap {
    /** The deltas a generation runs on (set by resolveRequestDeltas). */
    deltas: ResolvedDeltas;
  }
}
