import { Hono, type Context } from 'hono';
import type { DeltaRecord } from '../../deltas/catalog.js';
import { decodePathSegment, isValidName, nameError, parseDeltaRef } from '../../deltas/ref.js';
import { deltaKinds } from '../../deltas/kind.js';
import '../../deltas/kinds/index.js';
import type { DeltaFiles, DeltaVersion } from '../../deltas/store/types.js';
import type { ServerState } from '../context.js';
import { ApiError } from '../errors.js';
import { fileBytes, readUpload, textField } from '../form.js';
import { findVisible } from '../resolve.js';
import { audit } from '../audit.js';
import { IdempotencyError } from '../../deltas/store/idempotency.js';
import { idempotencyKeyOf } from './admin-common.js';

const FILES = { 'adapter_config.json': 'config', 'adapter_model.safetensors': 'weights' } as const;

/**
 * The delta management API: upload (multipart, PEFT files as-is; every upload a new immutable
 * version), list, describe, delete, and download byte-identical files. Tenants see their own
 * deltas and public ones; anything else is 404, as if it did not exist.
 */
export function deltaRoutes(state: ServerState): Hono {
  const app = new Hono();

  app.post('/v1/deltas', async (c) => {
    const service = c.get('deltaService');
    const declared = Number(c.req.header('content-length') ?? NaN);
    if (declared > state.maxDeltaBytes + 256 * 1024) throw new ApiError(413, `upload of ${declared} bytes exceeds the limit of ${state.maxDeltaBytes}`, null, 'body_too_large');
    const form = await readUpload(c, { fields: ['name', 'public'], files: { adapter_config: Math.min(state.maxDeltaBytes, 1024 * 1024), adapter_model: state.maxDeltaBytes }, spoolDir: state.spoolDir });
    let files: DeltaFiles;
    let name: string;
    let isPublic: boolean;
    try {
      name = textField(form, 'name');
      checkDeltaName(state, name, 'name');
      isPublic = booleanField(textField(form, 'public', 'false'), 'public');
      if (isPublic && !c.get('isAdmin')) throw new ApiError(403, 'only admin keys may upload public deltas', 'public', 'permission_denied');
      files = { config: await fileBytes(form, 'adapter_config'), weights: await fileBytes(form, 'adapter_model') };
    } finally {
      await form.cleanup();
    }
    const size = files.config.length + files.weights.length;
    if (size > state.maxDeltaBytes) throw new ApiError(413, `delta of ${size} bytes exceeds the limit of ${state.maxDeltaBytes}`, 'adapter_model', 'body_too_large');
    const idempotencyKey = idempotencyKeyOf(c);
    await service.refresh(c.get('tenant'), name);
    state.quotas.checkDeltaUpload(c.get('tenant'), name, size);
    const { version, warnings } = await service.upload(c.get('tenant'), name, files, { public: isPublic, ...(idempotencyKey !== undefined ? { idempotencyKey } : {}) }).catch((error: unknown) => {
      if (!(error instanceof IdempotencyError)) throw error;
      throw new ApiError(error.code === 'idempotency_key_reused' ? 422 : 409, error.message, 'Idempotency-Key', error.code);
    });
    audit(state, c, 'delta.create', { delta: `${version.owner}/${version.name}@${version.version}`, size: version.size, public: version.public });
    return c.json({ ...describe(state, state.deltas.get(version.owner, version.name)!, version, c.get('tenant')), warnings }, 201);
  });

  app.get('/v1/deltas', async (c) => {
    await c.get('deltaService').refreshList();
    const tenant = c.get('tenant');
    return c.json({ object: 'list', data: state.deltas.visibleTo(tenant).map((r) => describe(state, r, undefined, tenant)) });
  });

  app.get('/v1/deltas/*', async (c) => {
    const service = c.get('deltaService');
    const { record, version, file } = await lookup(c, state);
    const versions = await service.versions(record);
    const chosen = versions.find((v) => v.version === (version ?? record.version));
    if (!chosen) throw new ApiError(404, `delta '${record.name}' has no version ${version}`, 'id', 'model_not_found');
    if (!file) return c.json({ ...describe(state, record, chosen, c.get('tenant')), versions: versions.map((v) => ({ version: v.version, sha256: v.sha256, size: v.size, created_at: seconds(v.createdAt) })) });
    const bytes = (await service.read(chosen))[FILES[file]];
    const type = file.endsWith('.json') ? 'application/json' : 'application/octet-stream';
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, { 'content-type': type, 'content-disposition': `attachment; filename="${file}"`, 'x-delta-sha256': chosen.sha256 });
  });

  app.delete('/v1/deltas/*', async (c) => {
    const service = c.get('deltaService');
    const { record, version, file } = await lookup(c, state);
    if (file || version !== undefined) throw new ApiError(400, 'DELETE takes a delta id (name or owner/name), without a version or file', 'id');
    if (record.owner !== c.get('tenant') && !c.get('isAdmin')) throw new ApiError(403, `only ${record.owner} may delete '${record.owner}/${record.name}'`, 'id', 'permission_denied');
    await service.remove(record);
    audit(state, c, 'delta.delete', { delta: `${record.owner}/${record.name}`, versions: record.versions.length });
    return c.json({ id: `${record.owner}/${record.name}`, object: 'delta', deleted: true });
  });

  return app;
}

/** A form's boolean: 'true' or 'false', anything else a 400 naming the field. */
function booleanField(value: string, field: string): boolean {
  if (value === 'true' || value === 'false') return value === 'true';
  throw new ApiError(400, `${field} must be 'true' or 'false', got '${value.slice(0, 40)}'`, field, 'invalid_value');
}

/** A name a new delta may take (uploads and fine-tuning results): a valid name, not the base model's. */
export function checkDeltaName(state: ServerState, name: string, param: string): void {
  if (!isValidName(name)) throw new ApiError(400, nameError('delta name', name), param, 'invalid_value');
  if (name === state.modelName) throw new ApiError(400, `delta name '${name}' is the base model's name`, param, 'invalid_value');
}

/** Parses `/v1/deltas/{name|owner/name}[@N][/files/{file}]` and finds the delta as the caller sees it (the store asked first when the catalog's entry is stale). */
async function lookup(c: Context, state: ServerState): Promise<{ record: DeltaRecord; version?: number; file?: keyof typeof FILES }> {
  const rest = decodePathSegment(c.req.path.slice('/v1/deltas/'.length));
  if (rest === undefined) throw new ApiError(400, 'the delta id in the path is not valid percent-encoding', 'id', 'invalid_value');
  const match = /^(.+?)(?:\/files\/([^/]+))?$/.exec(rest);
  const id = match?.[1] ?? '';
  const file = match?.[2];
  if (file !== undefined && !(file in FILES)) throw new ApiError(404, `no file '${file.slice(0, 80)}'; a delta has adapter_config.json and adapter_model.safetensors`, 'file');
  const parsed = parseDeltaRef(id);
  if (!parsed.ok) throw new ApiError(404, `delta '${id.slice(0, 160)}' does not exist: it ${parsed.problem}`, 'id', 'model_not_found');
  await state.deltaService?.freshen(id, c.get('tenant'));
  // Admins reach any tenant's delta as owner/name (without acting as that tenant).
  const asAdmin = c.get('isAdmin') && parsed.ref.owner !== undefined ? state.deltas.get(parsed.ref.owner, parsed.ref.name) : undefined;
  const record = asAdmin ?? findVisible(state, parsed.ref, c.get('tenant'));
  if (!record) throw new ApiError(404, `delta '${id}' does not exist`, 'id', 'model_not_found');
  // A public delta may be used by every tenant, but its weights stay its owner's.
  if (file !== undefined && record.owner !== c.get('tenant') && !c.get('isAdmin')) throw new ApiError(403, `only ${record.owner} and admins may download the files of '${record.owner}/${record.name}'; other tenants may use it as a model`, 'id', 'permission_denied');
  return { record, version: parsed.ref.version, file: file as keyof typeof FILES | undefined };
}

function describe(state: ServerState, record: DeltaRecord, version: DeltaVersion | undefined, tenant: string) {
  return {
    id: record.owner === tenant ? record.name : `${record.owner}/${record.name}`,
    object: 'delta',
    name: record.name,
    owner: record.owner,
    version: version?.version ?? record.version,
    latest_version: record.version,
    public: record.public,
    kind: version?.kind ?? record.kind,
    family: familyOf(version?.kind ?? record.kind),
    summary: version?.summary ?? record.summary,
    virtual_tokens: version?.virtualTokens ?? record.virtualTokens,
    ...(version ? { sha256: version.sha256, size: version.size } : {}),
    created_at: Math.floor(record.createdAt / 1000),
    parent: state.modelName,
  };
}

const seconds = (iso: string) => Math.floor(Date.parse(iso) / 1000);

/** A kind's delta-tuning family, or null for a kind this server no longer serves. */
function familyOf(kind: string): string | null {
  return deltaKinds().find((k) => k.name === kind)?.family ?? null;
}

