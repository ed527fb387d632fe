import type { MiddlewareHandler } from 'hono';
import type { Engine } from '../../engine/client.js';
import type { ServerState } from '../context.js';
import type { DeltaService } from '../delta-service.js';
import { ApiError } from '../errors.js';
import type { TrainingService } from '../training-service.js';

/** What a route may need from a started server: the engine, the delta store's service, the training service. */
export type Readiness = 'engine' | 'deltaService' | 'training';

export interface RequireReadyOptions {
  /** Filled in as startup proceeds (see startServer). */
  state: Pick<ServerState, 'engine' | 'deltaService' | 'training'>;
  needs: readonly Readiness[];
}

const LOADING = () => new ApiError(503, 'the model is still loading; retry shortly', null, 'model_loading', { 'Retry-After': '1' });

/**
 * Refuses a request until what its route needs exists: 503 `model_loading` with `Retry-After`
 * while the server starts, 501 `training_unavailable` for training on a model without a tokenizer.
 * Sets each as a context variable (`c.get('engine')`, ...), so handlers need no checks of their own.
 *
 * @example app.use('/v1/deltas/*', requireReady({ state, needs: ['deltaService'] }));
 */
export function requireReady(options: RequireReadyOptions): MiddlewareHandler {
  const { state, needs } = options ?? {};
  if (!state || typeof state !== 'object') throw new Error('requireReady: options.state must be the server state');
  const known: readonly Readiness[] = ['engine', 'deltaService', 'training'];
  if (!Array.isArray(needs) || !needs.length || needs.some((n) => !known.includes(n))) throw new Error(`requireReady: options.needs must list some of ${known.join(', ')}, got ${JSON.stringify(needs)}`);
  return async function requireReady(c, next) {
    for (const need of needs) {
      if (need === 'engine') c.set('engine', state.engine ?? throwing(LOADING()));
      else if (need === 'deltaService') c.set('deltaService', state.deltaService ?? throwing(LOADING()));
      else if (state.training) c.set('training', state.training);
      else if (state.engine) throw new ApiError(501, 'this model has no tokenizer.json, which training data needs', null, 'training_unavailable');
      else throw LOADING();
    }
    await next();
  };
}

function throwing(error: ApiError): never {
  throw error;
}

declare module 'hono' {
  interface ContextVariableMap {
    /** The engine (set by requireReady on routes that need it). */
    engine: Engine;
    /** Uploads, stored versions and their registration (set by requireReady). */
    deltaService: DeltaService;
    /** Training files and fine-tuning jobs (set by requireReady). */
    training: TrainingService;
  }
}
