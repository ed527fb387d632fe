import { Hono, type Context } from 'hono';
import { DELTA_NAME_PATTERN } from '../../config.js';
import type { DeltaRecord } from '../../deltas/catalog.js';
import type { DeltaFiles, DeltaVersion } from '../../deltas/store/types.js';
import type { ServerState } from '../context.js';
import type { DeltaService } from '../delta-service.js';
import { ApiError } from '../errors.js';
import { fileField, parseForm, textField } from '../form.js';
import { findVisible } from '../resolve.js';

const FILES = { 'adapter_config.json': 'config', 'adapter_model.safetensors': 'weights' } as const;

/**
 * The delta management API: upload (multipart, PEFT files as-is; every upload a new immutable
 * version), list, describe, delete, and download byte-identical files. Tenants see their own
 * deltas and public ones; anything else is 404, as if it did not exist.
 */
export function deltaRoutes(state: ServerState): Hono {
  const app = new Hono();

  app.post('/v1/deltas', async (c) => {
    const service = requireService(state);
    const declared = Number(c.req.header('content-length') ?? NaN);
    if (declared > state.maxDeltaBytes + 64 * 1024) throw new ApiError(413, `upload of ${declared} bytes exceeds the limit of ${state.maxDeltaBytes}`, null, 'body_too_large');
    const form = await parseForm(c, 'fields name, adapter_config and adapter_model');
    const name = textField(form, 'name');
    if (!DELTA_NAME_PATTERN.test(name) || name === state.modelName) throw new ApiError(400, `name '${name}' must be 1-64 letters, digits, '_', '-' or '.' (not starting with '.') and differ from the base model`, 'name', 'invalid_value');
    const isPublic = textField(form, 'public', 'false') === 'true';
    if (isPublic && !c.get('isAdmin')) throw new ApiError(403, 'only admin keys may upload public deltas', 'public', 'permission_denied');
    const files: DeltaFiles = { config: await fileField(form, 'adapter_config'), weights: await fileField(form, 'adapter_model') };
    const size = files.config.length + files.weights.length;
    if (size > state.maxDeltaBytes) throw new ApiError(413, `delta of ${size} bytes exceeds the limit of ${state.maxDeltaBytes}`, 'adapter_model', 'body_too_large');
    const version = await service.upload(c.get('tenant'), name, files, { public: isPublic });
    return c.json(describe(state, state.deltas.get(version.owner, version.name)!, version, c.get('tenant')), 201);
  });

  app.get('/v1/deltas', (c) => {
    requireService(state);
    const tenant = c.get('tenant');
    return c.json({ object: 'list', data: state.deltas.visibleTo(tenant).map((r) => describe(state, r, undefined, tenant)) });
  });

  app.get('/v1/deltas/*', async (c) => {
    const service = requireService(state);
    const { record, version, file } = lookup(c, state);
    const versions = await service.versions(record);
    const chosen = versions.find((v) => v.version === (version ?? record.version));
    if (!chosen) throw new ApiError(404, `delta '${record.name}' has no version ${version}`, 'id', 'model_not_found');
    if (!file) return c.json({ ...describe(state, record, chosen, c.get('tenant')), versions: versions.map((v) => ({ version: v.version, sha256: v.sha256, size: v.size, created_at: seconds(v.createdAt) })) });
    const bytes = (await service.read(chosen))[FILES[file]];
    const type = file.endsWith('.json') ? 'application/json' : 'application/octet-stream';
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, { 'content-type': type, 'content-disposition': `attachment; filename="${file}"`, 'x-delta-sha256': chosen.sha256 });
  });

  app.delete('/v1/deltas/*', async (c) => {
    const service = requireService(state);
    const { record, version, file } = lookup(c, state);
    if (file || version !== undefined) throw new ApiError(400, 'DELETE takes a delta id (name or owner/name), without a version or file', 'id');
    if (record.owner !== c.get('tenant') && !c.get('isAdmin')) throw new ApiError(403, `only ${record.owner} may delete '${record.owner}/${record.name}'`, 'id', 'permission_denied');
    await service.remove(record);
    return c.json({ id: `${record.owner}/${record.name}`, object: 'delta', deleted: true });
  });

  return app;
}

function requireService(state: ServerState): DeltaService {
  if (!state.deltaService) throw new ApiError(503, 'the model is still loading; retry shortly', null, 'model_loading', { 'Retry-After': '1' });
  return state.deltaService;
}

/** Parses `/v1/deltas/{name|owner/name}[@N][/files/{file}]` and finds the delta as the caller sees it. */
function lookup(c: Context, state: ServerState): { record: DeltaRecord; version?: number; file?: keyof typeof FILES } {
  const rest = decodeURIComponent(c.req.path.slice('/v1/deltas/'.length));
  const match = /^(.+?)(?:\/files\/([^/]+))?$/.exec(rest);
  const [ref, versionText] = (match?.[1] ?? '').split('@') as [string, string | undefined];
  const file = match?.[2];
  if (file !== undefined && !(file in FILES)) throw new ApiError(404, `no file '${file}'; a delta has adapter_config.json and adapter_model.safetensors`, 'file');
  const record = findVisible(state, ref, c.get('tenant'));
  if (!record) throw new ApiError(404, `delta '${ref}' does not exist`, 'id', 'model_not_found');
  const version = versionText === undefined ? undefined : /^[1-9]\d*$/.test(versionText) ? Number(versionText) : NaN;
  if (Number.isNaN(version)) throw new ApiError(404, `delta '${ref}' has no version '${versionText}'`, 'id', 'model_not_found');
  return { record, version, file: file as keyof typeof FILES | undefined };
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
    rank: version?.rank ?? record.rank,
    modules: version?.modules ?? record.modules,
    ...(version ? { sha256: version.sha256, size: version.size } : {}),
    created_at: Math.floor(record.createdAt / 1000),
    parent: state.modelName,
  };
}

const seconds = (iso: string) => Math.floor(Date.parse(iso) / 1000);

