/**
 * What every DeltaStore implementation shares: name validation (owner and name become path
 * segments or object-key segments, so they must never traverse), the digest, and meta.json.
 */
import crypto from 'node:crypto';
import { isValidName, nameProblem } from '../ref.js';
import { DeltaIntegrityError, type DeltaFiles, type DeltaVersion, type NewDeltaVersion } from './types.js';

export const CONFIG_FILE = 'adapter_config.json';
export const WEIGHTS_FILE = 'adapter_model.safetensors';
export const META_FILE = 'meta.json';

const VERSION_DIR = /^v([1-9][0-9]{0,15})$/;

/** An owner or delta name that cannot be stored (it would not be a single safe path segment). */
export class InvalidDeltaNameError extends Error {
  readonly code = 'invalid_delta_name';
  constructor(readonly field: 'owner' | 'name', readonly value: unknown) {
    super(`invalid delta ${field} ${JSON.stringify(value)}: it ${nameProblem(value)}`);
    this.name = 'InvalidDeltaNameError';
  }
}

export function assertValidDeltaName(field: 'owner' | 'name', value: unknown): asserts value is string {
  if (!isValidName(value)) throw new InvalidDeltaNameError(field, value);
}

export function isValidVersion(version: unknown): version is number {
  return typeof version === 'number' && Number.isSafeInteger(version) && version >= 1;
}

/** `v12` → 12; anything else (including `v012`, `v0`) → undefined. */
export function parseVersionSegment(segment: string): number | undefined {
  const match = VERSION_DIR.exec(segment);
  if (!match) return undefined;
  const version = Number(match[1]);
  return Number.isSafeInteger(version) ? version : undefined;
}

export function versionSegment(version: number): string {
  return `v${version}`;
}

export function deltaLabel(owner: string, name: string, version?: number): string {
  return version === undefined ? `${owner}/${name}` : `${owner}/${name}@${version}`;
}

/** SHA-256 (hex) of the config bytes followed by the weight bytes. */
export function digestFiles(files: DeltaFiles): string {
  return crypto.createHash('sha256').update(files.config).update(files.weights).digest('hex');
}

export function makeVersion(delta: NewDeltaVersion, files: DeltaFiles, version: number, sha256: string): DeltaVersion {
  return {
    owner: delta.owner,
    name: delta.name,
    version,
    sha256,
    size: files.config.byteLength + files.weights.byteLength,
    createdAt: new Date().toISOString(),
    public: delta.public,
    kind: delta.kind,
    summary: delta.summary,
    virtualTokens: delta.virtualTokens,
  };
}

export function encodeMeta(version: DeltaVersion): Uint8Array {
  const { owner, name, sha256, size, createdAt, kind, summary, virtualTokens } = version;
  const record = { owner, name, version: version.version, sha256, size, createdAt, public: version.public, kind, summary, virtualTokens };
  return new TextEncoder().encode(`${JSON.stringify(record, null, 2)}\n`);
}

/**
 * Parses a stored meta.json, checking its shape and that it describes the location it was read
 * from (a meta.json copied to another name or version must not masquerade as that one).
 */
export function decodeMeta(bytes: Uint8Array, where: string, expected: { owner: string; name: string; version: number }): DeltaVersion {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new Error(`${where}: meta.json is not valid JSON`, { cause: error });
  }
  const record = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  const problems: string[] = [];
  const need = (field: string, ok: boolean) => {
    if (!ok) problems.push(`${field} is ${JSON.stringify(record[field])}`);
  };
  need('owner', record.owner === expected.owner);
  need('name', record.name === expected.name);
  need('version', record.version === expected.version);
  need('sha256', typeof record.sha256 === 'string' && /^[0-9a-f]{64}$/.test(record.sha256));
  need('size', typeof record.size === 'number' && Number.isSafeInteger(record.size) && record.size >= 0);
  need('createdAt', typeof record.createdAt === 'string');
  need('public', typeof record.public === 'boolean');
  // Kind names may hold digits ('ia3'): a lowercase letter, then letters, digits or '_'.
  need('kind', typeof record.kind === 'string' && /^[a-z][a-z0-9_]{0,31}$/.test(record.kind));
  need('summary', isSummary(record.summary));
  need('virtualTokens', typeof record.virtualTokens === 'number' && Number.isSafeInteger(record.virtualTokens) && record.virtualTokens >= 0);
  if (problems.length > 0) throw new Error(`${where}: meta.json is malformed (${problems.join(', ')})`);
  return {
    owner: expected.owner,
    name: expected.name,
    version: expected.version,
    sha256: record.sha256 as string,
    size: record.size as number,
    createdAt: record.createdAt as string,
    public: record.public as boolean,
    kind: record.kind as string,
    summary: record.summary as DeltaVersion['summary'],
    virtualTokens: record.virtualTokens as number,
  };
}

/** A summary is a flat object of JSON scalars (see DeltaVersion.summary). */
function isSummary(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  return Object.values(value).every((v) => typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v)));
}

/** Throws DeltaIntegrityError unless the files' digest (and total size) match the version's record. */
export function verifyFiles(version: DeltaVersion, files: DeltaFiles): DeltaFiles {
  // Synchronous on purpose: OpenSSL's SHA-256 hashes a 20 MB delta in ~12 ms here, while
  // WebCrypto's thread-pool digest of the same bytes took 70-130 ms.
  const actual = digestFiles(files);
  const size = files.config.byteLength + files.weights.byteLength;
  if (actual !== version.sha256 || size !== version.size) {
    throw new DeltaIntegrityError(deltaLabel(version.owner, version.name, version.version), version.sha256, actual);
  }
  return files;
}

/** Validates the identity fields of a DeltaVersion passed back in by a caller (e.g. to read()). */
export function assertVersionRef(version: Pick<DeltaVersion, 'owner' | 'name' | 'version'>): void {
  assertValidDeltaName('owner', version.owner);
  assertValidDeltaName('name', version.name);
  if (!isValidVersion(version.version)) throw new Error(`invalid delta version ${JSON.stringify(version.version)}`);
}

/** The files of a version that is not (or no longer) stored. */
export class DeltaNotFoundError extends Error {
  readonly code = 'delta_not_found';
  constructor(readonly delta: string, location: string, options?: { cause?: unknown }) {
    super(`delta ${delta} does not exist in ${location}`, options);
    this.name = 'DeltaNotFoundError';
  }
}

/** Where a delete records the highest version it removed: `<owner>/<name>/deleted/v<N>` (never removed). */
export function tombstoneKey(owner: string, name: string, version: number): string {
  return `${owner}/${name}/deleted/${versionSegment(version)}`;
}

/** The highest version number in a delta's tombstone keys (`deleted/v<N>` names), 0 when none. */
export function deletedThrough(tombstones: readonly string[]): number {
  let highest = 0;
  for (const key of tombstones) {
    const version = parseVersionSegment(key.slice(key.lastIndexOf('/') + 1));
    if (version !== undefined) highest = Math.max(highest, version);
  }
  return highest;
}

export function tombstoneRecord(): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify({ deletedAt: new Date().toISOString() })}\n`);
}
