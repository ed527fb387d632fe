import type { Context } from 'hono';
import type { ServerState } from '../context.js';
import { ApiError } from '../errors.js';
import type { TrainingService } from '../training-service.js';

export function requireAdmin(c: Context): void {
  if (!c.get('isAdmin')) throw new ApiError(403, 'this endpoint needs an admin key', null, 'permission_denied');
}

export function requireTraining(state: ServerState): TrainingService {
  if (state.training) return state.training;
  if (state.engine) throw new ApiError(501, 'this model has no tokenizer.json, which training data needs', null, 'training_unavailable');
  throw new ApiError(503, 'the model is still loading; retry shortly', null, 'model_loading', { 'Retry-After': '1' });
}
