import type { Engine } from '../engine/client.js';
import type { ServerState } from './context.js';
import { ApiError } from './errors.js';

export function requireEngine(state: ServerState): Engine {
  if (!state.engine) throw new ApiError(503, 'the model is still loading; retry shortly', null, 'model_loading', { 'Retry-After': '1' });
  return state.engine;
}

/** `model` names the base or a delta; anything else is 404 (the same answer as a delta the caller may not see). */
export function resolveModel(state: ServerState, model: string): string | null {
  if (model === state.modelName) return null;
  if (state.deltas.get(model)) return model;
  throw new ApiError(404, `model '${model}' does not exist`, 'model', 'model_not_found');
}

