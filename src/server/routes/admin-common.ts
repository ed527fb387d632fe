import type { Context } from 'hono';
import type { ServerState } from '../context.js';
import { ApiError } from '../errors.js';
import type { TrainingService } from '../training-service.js';
import { MAX_IDEMPOTENCY_KEY_LENGTH } from '../../deltas/store/idempotency.js';

export function requireAdmin(c: Context): void {
  if (!c.get('isAdmin')) throw new ApiError(403, 'this endpoint needs an admin key', null, 'permission_denied');
}

export function requireTraining(state: ServerState): TrainingService {
  if (state.training) return state.training;
  if (state.engine) throw new ApiError(501, 'this model has no tokenizer.json, which training data needs', null, 'training_unavailable');
  throw new ApiError(503, 'the model is still loading; retry shortly', null, 'model_loading', { 'Retry-After': '1' });
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
