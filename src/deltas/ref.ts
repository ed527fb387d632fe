/**
 * Names of tenants and deltas, and references to deltas: `[owner/]name[@version]`. One parser
 * for every place a name arrives (routes, the auth file, `--delta`, fine-tuning jobs, the engine
 * key, metrics), so a name that one layer accepts is never refused by another (`a..b` once passed
 * the route and failed in the store with a 500).
 *
 * A name is 1-64 characters from `A-Z a-z 0-9 _ . -`, does not start with `.` and contains no
 * `..`, so it is always one safe path segment or object-key segment, and never holds `/` or `@`,
 * which references use as separators.
 */

export const MAX_NAME_LENGTH = 64;

/** The tenant that owns startup deltas named without a TENANT/ prefix, and every request in open mode. */
export const DEFAULT_TENANT = 'default';
const NAME_CHARACTERS = /^[A-Za-z0-9_.-]+$/;

/** A delta reference; `owner` and `version` are optional until resolved. */
export interface DeltaRef {
  owner?: string;
  name: string;
  version?: number;
}

/** A resolved reference: the key a delta version is registered under in the engine. */
export interface DeltaVersionRef {
  owner: string;
  name: string;
  version: number;
}

/** Why `value` is not a valid tenant or delta name, or null when it is. */
export function nameProblem(value: unknown): string | null {
  if (typeof value !== 'string') return `expected a string, got ${describeType(value)}`;
  if (value.length === 0) return 'must not be empty';
  if (value.length > MAX_NAME_LENGTH) return `is ${value.length} characters long; at most ${MAX_NAME_LENGTH}`;
  if (!NAME_CHARACTERS.test(value)) return "may only contain letters, digits, '_', '.' and '-'";
  if (value.startsWith('.')) return "must not start with '.'";
  if (value.includes('..')) return "must not contain '..'";
  return null;
}

export function isValidName(value: unknown): value is string {
  return nameProblem(value) === null;
}

/** The message a refused name gets everywhere: `delta name 'a..b' must not contain '..'`. */
export function nameError(what: string, value: unknown): string {
  const shown = typeof value === 'string' ? `'${value.length > 80 ? `${value.slice(0, 80)}…` : value}'` : describeType(value);
  return `${what} ${shown} ${nameProblem(value) ?? 'is invalid'}`;
}

/** `[owner/]name[@version]` → its parts, or the reason it is malformed. */
export function parseDeltaRef(text: string): { ok: true; ref: DeltaRef } | { ok: false; problem: string } {
  if (typeof text !== 'string' || text.length === 0) return { ok: false, problem: 'is empty' };
  if (text.length > 2 * MAX_NAME_LENGTH + 24) return { ok: false, problem: `is ${text.length} characters long` };
  const at = text.indexOf('@');
  const body = at >= 0 ? text.slice(0, at) : text;
  const versionText = at >= 0 ? text.slice(at + 1) : undefined;
  const parts = body.split('/');
  if (parts.length > 2) return { ok: false, problem: "has more than one '/'" };
  const [owner, name] = parts.length === 2 ? [parts[0]!, parts[1]!] : [undefined, parts[0]!];
  if (owner !== undefined && !isValidName(owner)) return { ok: false, problem: `owner ${nameProblem(owner)}` };
  if (!isValidName(name)) return { ok: false, problem: `name ${nameProblem(name)}` };
  if (versionText === undefined) return { ok: true, ref: { ...(owner !== undefined ? { owner } : {}), name } };
  const version = parseVersion(versionText);
  if (version === undefined) return { ok: false, problem: `version '${versionText.slice(0, 24)}' is not a positive integer` };
  return { ok: true, ref: { ...(owner !== undefined ? { owner } : {}), name, version } };
}

/** A version as written after `@`: a positive integer without leading zeros, at most 2^53 - 1. */
export function parseVersion(text: string): number | undefined {
  if (!/^[1-9][0-9]{0,15}$/.test(text)) return undefined;
  const version = Number(text);
  return Number.isSafeInteger(version) ? version : undefined;
}

/** `owner/name@version`, `owner/name`, `name@version` or `name`, whichever parts are present. */
export function formatDeltaRef(ref: DeltaRef): string {
  return `${ref.owner !== undefined ? `${ref.owner}/` : ''}${ref.name}${ref.version !== undefined ? `@${ref.version}` : ''}`;
}

/** The engine key of a delta version: `owner/name@version` (unique even when tenants share a name). */
export function deltaKey(owner: string, name: string, version: number): string {
  return `${owner}/${name}@${version}`;
}

/** An engine key back to its parts, or undefined when it is not one. */
export function parseDeltaKey(key: string): DeltaVersionRef | undefined {
  const parsed = parseDeltaRef(key);
  if (!parsed.ok || parsed.ref.owner === undefined || parsed.ref.version === undefined) return undefined;
  return { owner: parsed.ref.owner, name: parsed.ref.name, version: parsed.ref.version };
}

/**
 * Decodes one percent-encoded path segment; undefined for a malformed encoding (`%`, `%zz`,
 * invalid UTF-8), which `decodeURIComponent` would throw on.
 */
export function decodePathSegment(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

function describeType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : typeof value;
}
