import { isVisible, type DeltaRecord } from '../deltas/catalog.js';
import { deltaKey, formatDeltaRef, parseDeltaKey, parseDeltaRef, type DeltaRef } from '../deltas/ref.js';
import type { ServerState } from './context.js';
import { ApiError } from './errors.js';

/** The one answer for a model that does not exist *or that the caller may not see*: nothing tells them apart. */
function notFound(model: string, detail?: string): ApiError {
  return new ApiError(404, `model '${model}' does not exist${detail ? `: ${detail}` : ''}`, 'model', 'model_not_found');
}

/**
 * Resolves the request's `model` for `tenant`: null for the base model, otherwise the engine key
 * of the delta version (`owner/name@version`, what the engine registered it under).
 *
 * Forms, after the base model's exact name (which always wins):
 * - `name`: the tenant's own delta `name` if it has one; otherwise the one public delta called
 *   `name` of another tenant; several such public deltas is a 400 asking for `owner/name`.
 * - `owner/name`: delta `name` in `owner`'s namespace; the tenant's own (`owner` = tenant) or a
 *   public one.
 * - either form with `@N`: version N of that delta; without it, the latest version. A version
 *   that does not exist is 404 naming it (only once the delta itself is visible, so a version
 *   never reveals a hidden delta).
 *
 * A delta the tenant may not see answers exactly as one that does not exist:
 * 404 `model 'X' does not exist`, param `model`, code `model_not_found`.
 */
export function resolveModel(state: ServerState, model: string, tenant: string): string | null {
  if (model === state.modelName) return null;
  const parsed = parseDeltaRef(model);
  // A malformed reference cannot name anything: it answers as a model that does not exist.
  if (!parsed.ok) throw notFound(model, `it ${parsed.problem}`);
  const { ref } = parsed;
  const record = findVisible(state, ref, tenant, model);
  if (!record) throw notFound(model);
  if (ref.version === undefined) return deltaKey(record.owner, record.name, record.version);
  if (!record.versions.includes(ref.version)) throw notFound(model, `delta '${formatDeltaRef({ ...ref, version: undefined })}' has no version '${ref.version}'`);
  return deltaKey(record.owner, record.name, ref.version);
}

/**
 * Brings this replica's catalog up to date with the store for what a request names, before the
 * synchronous resolution below reads it (see DeltaService.freshen); nothing before the store is open.
 */
export async function freshenDeltas(state: ServerState, model: string, tenant: string, ids: readonly string[] = []): Promise<void> {
  await state.deltaService?.freshen(model === state.modelName ? '' : model, tenant, ids);
}

/** What a request runs on: the engine keys of the deltas it stacks on its row ([] for the base) and the virtual tokens they add. */
export interface ResolvedDeltas {
  keys: string[];
  virtualTokens: number;
}

/**
 * Resolves a request's deltas: `model` (the base, one delta reference, or several joined by `+`,
 * as `style+domain`) and optionally `delta_ids` (more references). A row takes at most one delta
 * of each kind, and at most one that adds virtual tokens (prompt or prefix tuning); anything else
 * would be ambiguous (which LoRA wins? whose virtual tokens come first?) and is a 400 saying so.
 */
export function resolveDeltas(state: ServerState, model: string, tenant: string, deltaIds: readonly string[] = []): ResolvedDeltas {
  const parts = model === state.modelName ? [] : model.split('+');
  const keys = [...parts.map((part) => resolveModel(state, part, tenant)), ...deltaIds.map((id) => resolveModel(state, id, tenant))].filter((k): k is string => k !== null);
  const records = keys.map((key) => {
    const ref = parseDeltaKey(key)!;
    return { key, record: state.deltas.get(ref.owner, ref.name)! };
  });
  const byKind = new Map<string, string[]>();
  for (const { key, record } of records) byKind.set(record.kind, [...(byKind.get(record.kind) ?? []), key]);
  for (const [kind, same] of byKind) {
    if (same.length > 1) throw new ApiError(400, `model '${model}' stacks ${same.length} ${kind} deltas (${same.join(', ')}); a row takes at most one delta of each kind, so their order would be ambiguous`, deltaIds.length ? 'delta_ids' : 'model', 'ambiguous_composition');
  }
  const virtual = records.filter((r) => r.record.virtualTokens > 0);
  if (virtual.length > 1) throw new ApiError(400, `model '${model}' stacks ${virtual.map((v) => v.key).join(' and ')}, which both add virtual tokens before the prompt; a row may take one`, deltaIds.length ? 'delta_ids' : 'model', 'ambiguous_composition');
  return { keys: [...new Set(keys)], virtualTokens: virtual[0]?.record.virtualTokens ?? 0 };
}

/** The delta `ref` (its owner and name; the version is ignored) as `tenant` sees it, or undefined. */
export function findVisible(state: ServerState, ref: DeltaRef, tenant: string, model: string = formatDeltaRef(ref)): DeltaRecord | undefined {
  if (ref.owner !== undefined) {
    const record = state.deltas.get(ref.owner, ref.name);
    return record && isVisible(record, tenant) ? record : undefined;
  }
  const own = state.deltas.get(tenant, ref.name);
  if (own) return own;
  const shared = state.deltas.find(ref.name).filter((r) => isVisible(r, tenant));
  if (shared.length > 1) {
    const names = shared.map((r) => `'${r.owner}/${r.name}'`).join(', ');
    throw new ApiError(400, `model '${model}' is ambiguous: several tenants share a public delta called '${ref.name}'; name one of ${names}`, 'model', 'model_ambiguous');
  }
  return shared[0];
}
