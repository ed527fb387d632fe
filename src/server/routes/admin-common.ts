import type { Context } from 'hono';
import type { ServerState } from '../context.js';
import { ApiError } from '../errors.js';
import type { TrainingService } from '../training-service.js';
import { MAX_IDEMPOTENCY_KEY_LENGTH } from '../../deltas/store/idempotency.js';

/**
 * The training service of a route mounted behind `requireReady({ needs: ['training'] })`, which
 * answers 503/501 before the handler runs; reaching here without it is a wiring mistake.
 *
 * @example const jobs = requireTraining(state).jobs;
 */
export function requireTraining(state: ServerState): TrainingService {
  if (!state.training) throw new Error('a training route ran without requireReady({ needs: [\'training\'] }) in front of it');
  return state.training;
}

/**
 * The optional `Idempotency-Key` header (uploads, training files, job creation): 1-255 printable
 * ASCII characters, else a 400 naming it. A retry with the same key returns what the first created.
 */
export function idempotencyKeyOf(c: Context): string | undefined {
  const key = c.req.header('idempotency-key');
  if (key === undefined) return undefined;
  if (key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY_LENGTH || !/^[\x21-\x7e]+$/.test(key)) {
    throw new ApiError(400, `Idempotency-Key must be 1-${MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters without spaces, got ${key.length} characters`, 'Idempotency-Key', 'invalid_value');
  }
  return key;
}
