import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { MiddlewareHandler } from 'hono';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { DEFAULT_TENANT, isValidName, nameError, nameProblem } from '../deltas/ref.js';
import { ApiError } from './errors.js';

/**
 * API keys and who they belong to. Keys are stored only as SHA-256 digests; a presented key is
 * hashed and compared against every digest in constant time.
 */
export interface AuthTable {
  /** The file it was read from (for messages). */
  source: string;
  /** Tenant name → how many keys it has. */
  tenants: ReadonlyMap<string, number>;
  /** One entry per key digest: the tenant it belongs to, or admin. */
  entries: readonly AuthEntry[];
}

export type AuthEntry = { digest: Buffer } & Principal;

/** Who a key belongs to: a tenant, an admin, or a scraper that may only read `/metrics`. */
export type Principal = { tenant: string; admin: false } | { tenant: null; admin: true } | { tenant: null; admin: false; metrics: true };

/** The tenant an admin key acts as unless `X-Deltaserve-Tenant` names another. */
export const ADMIN_TENANT = 'admin';

/** The header an admin key uses to act for a tenant. */
export const TENANT_HEADER = 'X-Deltaserve-Tenant';

/** A bad auth file; the message names the file and the field. */
export class AuthFileError extends Error {
  override readonly name = 'AuthFileError';
}

const KEY_HASH = /^sha256:[0-9a-fA-F]{64}$/;
const keyHash = z.string().regex(KEY_HASH, { error: "expected 'sha256:' followed by the key's 64-hex-digit SHA-256 (never the key itself)" });
const tenantName = z
  .string()
  .refine(isValidName, { error: (issue) => `tenant name ${nameProblem(issue.input)}` })
  .refine((name) => name !== ADMIN_TENANT, { error: `'${ADMIN_TENANT}' is reserved for admin keys` });

/**
 * The auth file: `{"tenants": {"acme": {"keys": ["sha256:<hex>"]}}, "admin_keys": ["sha256:<hex>"]}`.
 * Unknown fields are errors, so a misspelt field is not silently ignored.
 */
export const AuthFileSchema = z.strictObject({
  tenants: z.record(tenantName, z.strictObject({ keys: z.array(keyHash).min(1, { error: 'a tenant needs at least one key' }) })),
  admin_keys: z.array(keyHash).default([]),
  /** Keys that may read GET /metrics and nothing else (Prometheus, an endpoint picker). */
  metrics_keys: z.array(keyHash).default([]),
});

export type AuthFile = z.infer<typeof AuthFileSchema>;

/**
 * Whether `tenant` exists: a tenant of the auth file or the admin tenant; in open mode (no
 * table) only the default tenant. A delta owned by anyone else could never be used.
 */
export function isKnownTenant(table: AuthTable | null, tenant: string): boolean {
  if (!table) return tenant === DEFAULT_TENANT;
  return tenant === ADMIN_TENANT || table.tenants.has(tenant);
}

/** SHA-256 of a key, as stored in the auth file: `sha256:<64 lowercase hex>`. */
export function hashKey(key: string): string {
  return `sha256:${crypto.createHash('sha256').update(key, 'utf8').digest('hex')}`;
}

/** Reads and validates an auth file: YAML for `.yaml`/`.yml`, JSON otherwise. Throws AuthFileError naming the file and the field. */
export function loadAuthFile(file: string): AuthTable {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new AuthFileError(`auth file ${file}: cannot read it: ${(err as Error).message}`);
  }
  const yaml = /\.ya?ml$/i.test(path.extname(file));
  let raw: unknown;
  try {
    raw = yaml ? parseYaml(text) : JSON.parse(text);
  } catch (err) {
    throw new AuthFileError(`auth file ${file}: not valid ${yaml ? 'YAML' : 'JSON'}: ${(err as Error).message}`);
  }
  return parseAuthTable(raw, file);
}

/** Validates an already parsed auth file (`source` names it in messages). */
export function parseAuthTable(raw: unknown, source: string): AuthTable {
  const parsed = AuthFileSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => {
      // A bad record key (tenant name) carries its reasons as nested issues.
      const message = i.code === 'invalid_key' ? `invalid tenant name: ${i.issues.map((n) => n.message).join('; ')}` : i.message;
      return `${fieldPath(i.path) || '(top level)'}: ${message}`;
    });
    throw new AuthFileError(`auth file ${source}: ${problems.join('; ')}`);
  }
  const entries: AuthEntry[] = [];
  const owners = new Map<string, string>();
  const claim = (hash: string, who: string, field: string) => {
    const digest = hash.slice('sha256:'.length).toLowerCase();
    const previous = owners.get(digest);
    if (previous) throw new AuthFileError(`auth file ${source}: ${field}: the same key hash is already given for ${previous}`);
    owners.set(digest, who);
    return Buffer.from(digest, 'hex');
  };
  const tenants = new Map<string, number>();
  for (const [tenant, { keys }] of Object.entries(parsed.data.tenants)) {
    tenants.set(tenant, keys.length);
    keys.forEach((hash, i) => entries.push({ digest: claim(hash, `tenant '${tenant}'`, `tenants.${tenant}.keys[${i}]`), tenant, admin: false }));
  }
  parsed.data.admin_keys.forEach((hash, i) => entries.push({ digest: claim(hash, 'admin_keys', `admin_keys[${i}]`), tenant: null, admin: true }));
  parsed.data.metrics_keys.forEach((hash, i) => entries.push({ digest: claim(hash, 'metrics_keys', `metrics_keys[${i}]`), tenant: null, admin: false, metrics: true }));
  return { source, tenants, entries };
}

/** `tenants.acme.keys[0]` from zod's path. */
function fieldPath(p: readonly PropertyKey[]): string {
  return p.map((k, i) => (typeof k === 'number' ? `[${k}]` : `${i ? '.' : ''}${String(k)}`)).join('');
}

/**
 * Who `key` belongs to, or null. Hashes the key and compares the digest with every entry in
 * constant time, without stopping at a match, so timing says nothing about which digest matched.
 */
export function lookupKey(table: AuthTable, key: string): Principal | null {
  const digest = crypto.createHash('sha256').update(key, 'utf8').digest();
  let found: AuthEntry | null = null;
  for (const entry of table.entries) {
    if (crypto.timingSafeEqual(entry.digest, digest) && !found) found = entry;
  }
  if (!found) return null;
  const { digest: _, ...principal } = found;
  return principal;
}

/**
 * What audit lines and logs name a key by: `sha256:` and the first 12 hex digits of its digest,
 * the same prefix the auth file holds, so an operator can tell keys apart without the key.
 */
export function keyId(key: string): string {
  return `sha256:${crypto.createHash('sha256').update(key, 'utf8').digest('hex').slice(0, 12)}`;
}

/** Reads the bearer key of a request: the principal, or throws 401 (missing, malformed, unknown). */
export function authenticateKey(table: AuthTable, header: string | undefined): Principal & { keyId: string } {
  if (!header) throw unauthorized('missing API key: send it as Authorization: Bearer <key>');
  const match = BEARER.exec(header);
  if (!match) throw unauthorized('malformed Authorization header: expected Bearer <key>');
  const who = lookupKey(table, match[1]!);
  if (!who) throw unauthorized('invalid API key');
  return { ...who, keyId: keyId(match[1]!) };
}

export interface AuthenticateOptions {
  /** The keys; null is open single-tenant mode (every request is the default tenant, and admin). */
  table: AuthTable | null;
}

const BEARER = /^Bearer +(\S+) *$/i;

function unauthorized(message: string): ApiError {
  return new ApiError(401, message, null, 'invalid_api_key', { 'WWW-Authenticate': 'Bearer realm="deltaserve"' });
}

/**
 * Authenticates `Authorization: Bearer <key>` and sets the `tenant` and `isAdmin` context
 * variables. A missing or unknown key is 401 (`authentication_error`, code `invalid_api_key`).
 *
 * - Tenant keys act as their tenant; `X-Deltaserve-Tenant` naming any other tenant is 403.
 * - Admin keys act as tenant `admin` (no deltas of its own, so it sees public ones) unless
 *   `X-Deltaserve-Tenant: <tenant>` names the tenant they act for; `isAdmin` is true.
 * - With `table: null` (no auth file) the server is open and single-tenant: every request is the
 *   default tenant (which owns `--delta NAME=DIR` deltas) and admin; the header is ignored.
 *
 * @example app.use('/v1/*', authenticate({ table: loadAuthFile('keys.yaml') }))
 */
export function authenticate(options: AuthenticateOptions): MiddlewareHandler {
  if (!options || typeof options !== 'object' || !('table' in options)) {
    throw new Error('authenticate middleware requires options.table (an AuthTable, or null for open single-tenant mode)');
  }
  const table = options.table;
  if (table !== null && !Array.isArray(table.entries)) throw new Error('authenticate middleware: options.table is not an AuthTable (use loadAuthFile)');
  return async function authenticate(c, next) {
    if (!table) {
      c.set('tenant', DEFAULT_TENANT);
      c.set('isAdmin', true);
      c.set('keyId', null);
      return next();
    }
    const who = authenticateKey(table, c.req.header('authorization'));
    if ('metrics' in who) throw new ApiError(403, 'this key may only read GET /metrics', null, 'permission_denied');
    c.set('keyId', who.keyId);
    const actAs = c.req.header(TENANT_HEADER);
    if (who.admin) {
      if (actAs !== undefined && !isValidName(actAs)) throw new ApiError(400, nameError(`${TENANT_HEADER}: tenant`, actAs), TENANT_HEADER, 'invalid_tenant');
      c.set('tenant', actAs ?? ADMIN_TENANT);
      c.set('isAdmin', true);
    } else {
      if (actAs !== undefined && actAs !== who.tenant) throw new ApiError(403, `only admin keys may act for another tenant (${TENANT_HEADER})`, null, 'permission_denied');
      c.set('tenant', who.tenant);
      c.set('isAdmin', false);
    }
    await next();
  };
}
