import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DeltaCatalog } from '../deltas/catalog.js';
import type { ServerState } from './context.js';
import { ApiError } from './errors.js';
import { resolveModel } from './resolve.js';

function catalog(entries: [owner: string, name: string, isPublic: boolean][]): DeltaCatalog {
  const c = new DeltaCatalog();
  entries.forEach(([owner, name, isPublic], i) => c.add({ owner, name, public: isPublic, kind: 'lora', summary: { rank: 8, modules: 1 }, virtualTokens: 0, createdAt: i, version: 1, versions: [1], bytes: 100 }));
  return c;
}

const state = {
  modelName: 'base',
  deltas: catalog([
    ['acme', 'sql', false],
    ['acme', 'support', false],
    ['globex', 'support', true],
    ['globex', 'chat', false],
    ['initech', 'support', true],
    ['initech', 'docs', true],
  ]),
} as unknown as ServerState;

function resolves(model: string, tenant: string, expected: string | null): void {
  assert.equal(resolveModel(state, model, tenant), expected, `${tenant} → ${model}`);
}

function fails(model: string, tenant: string, status: number, message: string | RegExp): void {
  assert.throws(
    () => resolveModel(state, model, tenant),
    (err: unknown) => {
      assert.ok(err instanceof ApiError, `${tenant} → ${model}: ${String(err)}`);
      assert.equal(err.status, status, `${tenant} → ${model}: ${err.message}`);
      assert.equal(err.param, 'model');
      if (typeof message === 'string') assert.equal(err.message, message);
      else assert.match(err.message, message);
      return true;
    },
  );
}

const missing = (model: string) => `model '${model}' does not exist`;

describe('resolveModel', () => {
  it('the base name is the base model for everyone', () => {
    for (const t of ['acme', 'globex', 'nobody']) resolves('base', t, null);
  });

  it('own deltas by plain name or owner/name; the engine key is owner/name', () => {
    resolves('sql', 'acme', 'acme/sql@1');
    resolves('acme/sql', 'acme', 'acme/sql@1');
    resolves('chat', 'globex', 'globex/chat@1');
  });

  it('a plain name prefers the tenant’s own delta over public ones of the same name', () => {
    resolves('support', 'acme', 'acme/support@1');
    resolves('support', 'globex', 'globex/support@1');
    resolves('support', 'initech', 'initech/support@1');
  });

  it('another tenant’s public delta by owner/name, or plain name when unambiguous', () => {
    resolves('globex/support', 'acme', 'globex/support@1');
    resolves('initech/support', 'globex', 'initech/support@1');
    resolves('initech/docs', 'acme', 'initech/docs@1');
    resolves('docs', 'acme', 'initech/docs@1');
  });

  it('a plain name matching several visible public deltas is 400 listing them', () => {
    fails('support', 'nobody', 400, /ambiguous.*'globex\/support'.*'initech\/support'/);
  });

  it('private deltas of others answer exactly like deltas that do not exist', () => {
    fails('acme/sql', 'globex', 404, missing('acme/sql'));
    fails('sql', 'globex', 404, missing('sql'));
    fails('globex/chat', 'acme', 404, missing('globex/chat'));
    fails('chat', 'acme', 404, missing('chat'));
    fails('acme/nope', 'globex', 404, missing('acme/nope'));
    fails('nope', 'acme', 404, missing('nope'));
    fails('sql@2', 'globex', 404, missing('sql@2'));
    fails('acme/sql@1', 'globex', 404, missing('acme/sql@1'));
  });

  it('malformed references are 404', () => {
    for (const m of ['', '/', 'acme/', '/sql', 'acme/sql/x', '@1', 'sql@', 'base/sql']) fails(m, 'acme', 404, new RegExp(`^model '${m.replace(/[/@]/g, '\\$&')}' does not exist`));
  });

  it('@N pins a stored version (here only 1); any other version is 404 naming the version', () => {
    resolves('sql@1', 'acme', 'acme/sql@1');
    resolves('acme/sql@1', 'acme', 'acme/sql@1');
    resolves('globex/support@1', 'acme', 'globex/support@1');
    fails('sql@2', 'acme', 404, /^model 'sql@2' does not exist: delta 'sql' has no version '2'$/);
    fails('acme/sql@latest', 'acme', 404, /version 'latest'/);
  });
});
