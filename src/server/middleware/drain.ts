import type { MiddlewareHandler } from 'hono';
import { ApiError } from '../errors.js';
import { whenFinished } from './finished.js';

/** The part of the server state a drain reads and this middleware writes. */
export interface DrainState {
  /** Shutting down: new requests on drainable routes are refused. */
  draining: boolean;
  /** Requests on drainable routes not yet finished (their last byte not yet written). */
  inFlight: number;
}

export interface DrainableOptions {
  state: DrainState;
}

/**
 * Makes a route one a graceful shutdown waits for: while `state.draining` a new request is refused
 * with 503 `shutting_down` and `Retry-After` (another replica can take it), otherwise it counts in
 * `state.inFlight` until its response's last byte is out, which the drain polls.
 *
 * @example app.use('/v1/completions', drainable({ state }));
 */
export function drainable(options: DrainableOptions): MiddlewareHandler {
  const state = options?.state;
  if (!state || typeof state !== 'object') throw new Error('drainable: options.state must be the server state (draining, inFlight)');
  return async function drainable(c, next) {
    if (state.draining) throw new ApiError(503, 'the server is shutting down; retry on another replica', null, 'shutting_down', { 'Retry-After': '1' });
    state.inFlight = (state.inFlight ?? 0) + 1;
    try {
      await next();
    } catch (err) {
      state.inFlight--;
      throw err;
    }
    whenFinished(c, () => state.inFlight--);
  };
}
