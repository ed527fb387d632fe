import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { Hono } from 'hono';
import { AuthFileError, authenticate, hashKey, loadAuthFile, lookupKey, parseAuthTable, type AuthTable } from './auth.js';
import { onError } from './middleware/on-error.js';
import { createLogger } from '../telemetry/logger.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-auth-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

const ACME_KEY = 'sk-acme-1';
const ACME_KEY_2 = 'sk-acme-2';
const GLOBEX_KEY = 'sk-globex';
const ADMIN_KEY = 'sk-admin';
const file = {
  tenants: { acme: { keys: [hashKey(ACME_KEY), hashKey(ACME_KEY_2)] }, globex: { keys: [hashKey(GLOBEX_KEY)] } },
  admin_keys: [hashKey(ADMIN_KEY)],
};

/** Asserts loading `text` as `name` fails naming the file and matching every pattern. */
function assertBadFile(name: string, text: string, ...patterns: RegExp[]): void {
  const f = write(name, text);
  assert.throws(
    () => loadAuthFile(f),
    (err: Error) => {
      assert.ok(err instanceof AuthFileError, `expected AuthFileError, got ${err.name}: ${err.message}`);
      assert.ok(err.message.includes(f), `message should name the file: ${err.message}`);
      for (const p of patterns) assert.match(err.message, p);
      return true;
    },
  );
}

describe('hashKey', () => {
  it('is sha256:<hex of SHA-256 of the UTF-8 key>', () => {
    assert.equal(hashKey('abc'), 'sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    assert.equal(hashKey('ключ'), `sha256:${crypto.createHash('sha256').update(Buffer.from('ключ', 'utf8')).digest('hex')}`);
  });
});

describe('loadAuthFile', () => {
  it('reads JSON and maps each key to its tenant, admin keys to admin', () => {
    const table = loadAuthFile(write('keys.json', JSON.stringify(file)));
    assert.deepEqual([...table.tenants], [['acme', 2], ['globex', 1]]);
    assert.deepEqual(lookupKey(table, ACME_KEY), { tenant: 'acme', admin: false });
    assert.deepEqual(lookupKey(table, ACME_KEY_2), { tenant: 'acme', admin: false });
    assert.deepEqual(lookupKey(table, GLOBEX_KEY), { tenant: 'globex', admin: false });
    assert.deepEqual(lookupKey(table, ADMIN_KEY), { tenant: null, admin: true });
    assert.equal(lookupKey(table, 'sk-nobody'), null);
    assert.equal(lookupKey(table, hashKey(ACME_KEY)), null, 'the stored hash is not itself a key');
  });

  it('reads the same structure as YAML (.yaml and .yml), hex in either case', () => {
    const yaml = `# keys\ntenants:\n  acme:\n    keys:\n      - ${hashKey(ACME_KEY).toUpperCase().replace('SHA256:', 'sha256:')}\n      - "${hashKey(ACME_KEY_2)}"\n  globex:\n    keys: ["${hashKey(GLOBEX_KEY)}"]\nadmin_keys:\n  - ${hashKey(ADMIN_KEY)}\n`;
    for (const name of ['keys.yaml', 'keys.yml']) {
      const table = loadAuthFile(write(name, yaml));
      assert.deepEqual(lookupKey(table, ACME_KEY), { tenant: 'acme', admin: false });
      assert.deepEqual(lookupKey(table, GLOBEX_KEY), { tenant: 'globex', admin: false });
      assert.deepEqual(lookupKey(table, ADMIN_KEY), { tenant: null, admin: true });
    }
  });

  it('admin_keys is optional', () => {
    const table = parseAuthTable({ tenants: { acme: { keys: [hashKey(ACME_KEY)] } } }, 'inline');
    assert.equal(lookupKey(table, ADMIN_KEY), null);
  });

  it('bad files fail naming the file and the field', () => {
    assertBadFile('short.json', JSON.stringify({ tenants: { acme: { keys: ['sha256:abcd'] } } }), /tenants\.acme\.keys\[0\]/, /sha256/);
    assertBadFile('plain.json', JSON.stringify({ tenants: { acme: { keys: [hashKey(ACME_KEY)] } }, admin_keys: ['sk-admin'] }), /admin_keys\[0\]/);
    assert.throws(() => loadAuthFile(write('leak.json', JSON.stringify({ tenants: {}, admin_keys: ['sk-secret-admin'] }))), (err: Error) => !err.message.includes('sk-secret-admin'), 'a plaintext key must not be echoed');
    assertBadFile('nokeys.json', JSON.stringify({ tenants: { acme: { keys: [] } } }), /tenants\.acme\.keys/);
    assertBadFile('notenants.json', JSON.stringify({ admin_keys: [hashKey(ADMIN_KEY)] }), /tenants/);
    assertBadFile('typo.json', JSON.stringify({ tenants: { acme: { keys: [hashKey(ACME_KEY)], key: [] } } }), /tenants\.acme/, /key/);
    assertBadFile('toplevel.json', JSON.stringify({ ...file, admins: [] }), /admins/);
    assertBadFile('badname.json', JSON.stringify({ tenants: { 'ac/me': { keys: [hashKey(ACME_KEY)] } } }), /ac\/me|tenants/);
    assertBadFile('reserved.json', JSON.stringify({ tenants: { admin: { keys: [hashKey(ACME_KEY)] } } }), /tenants/, /reserved/);
    assertBadFile('dup.json', JSON.stringify({ tenants: { acme: { keys: [hashKey(ACME_KEY)] }, globex: { keys: [hashKey(ACME_KEY)] } } }), /tenants\.globex\.keys\[0\]/, /tenant 'acme'/);
    assertBadFile('dupadmin.json', JSON.stringify({ tenants: { acme: { keys: [hashKey(ACME_KEY)] } }, admin_keys: [hashKey(ACME_KEY)] }), /admin_keys\[0\]/);
    assertBadFile('broken.json', '{"tenants": {', /not valid JSON/);
    assertBadFile('broken.yaml', 'tenants: [a\n  b: c: d', /not valid YAML/);
    assertBadFile('empty.yaml', '', /expected object/);
    assertBadFile('yaml-field.yml', `tenants:\n  acme:\n    keys:\n      - sha256:xyz\n`, /tenants\.acme\.keys\[0\]/);
  });

  it('a missing file names it', () => {
    const missing = path.join(dir, 'nope.json');
    assert.throws(() => loadAuthFile(missing), (err: Error) => err instanceof AuthFileError && err.message.includes(missing));
  });
});

describe('authenticate middleware', () => {
  const table: AuthTable = parseAuthTable(file, 'inline');
  const app = (t: AuthTable | null) => {
    const a = new Hono();
    a.use('/v1/*', authenticate({ table: t }));
    a.get('/v1/whoami', (c) => c.json({ tenant: c.get('tenant'), isAdmin: c.get('isAdmin') }));
    a.get('/health/live', (c) => c.json({ status: 'ok' }));
    a.onError(onError({ logger: createLogger({ level: 'silent' }) }));
    return a;
  };
  const authed = app(table);
  const who = (key?: string, headers: Record<string, string> = {}) =>
    authed.request('/v1/whoami', { headers: { ...(key === undefined ? {} : { authorization: `Bearer ${key}` }), ...headers } });

  async function assert401(res: Response): Promise<void> {
    assert.equal(res.status, 401);
    const body = await res.json();
    assert.equal(body.error.type, 'authentication_error');
    assert.equal(body.error.code, 'invalid_api_key');
    assert.equal(body.error.param, null);
    assert.equal(typeof body.error.message, 'string');
    assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer/);
  }

  it('validates its options once, when created', () => {
    assert.throws(() => authenticate({} as never), /options\.table/);
    assert.throws(() => authenticate({ table: {} as never }), /AuthTable/);
  });

  it('sets tenant and isAdmin from the key', async () => {
    assert.deepEqual(await (await who(ACME_KEY)).json(), { tenant: 'acme', isAdmin: false });
    assert.deepEqual(await (await who(ACME_KEY_2)).json(), { tenant: 'acme', isAdmin: false });
    assert.deepEqual(await (await who(GLOBEX_KEY)).json(), { tenant: 'globex', isAdmin: false });
    assert.deepEqual(await (await who(ACME_KEY, { authorization: `bearer  ${ACME_KEY}` })).json(), { tenant: 'acme', isAdmin: false });
  });

  it('admin keys act as tenant admin, or as the tenant X-Deltaserve-Tenant names', async () => {
    assert.deepEqual(await (await who(ADMIN_KEY)).json(), { tenant: 'admin', isAdmin: true });
    assert.deepEqual(await (await who(ADMIN_KEY, { 'x-deltaserve-tenant': 'globex' })).json(), { tenant: 'globex', isAdmin: true });
    assert.equal((await who(ADMIN_KEY, { 'x-deltaserve-tenant': '../x' })).status, 400);
  });

  it('a tenant key may not act for another tenant', async () => {
    const res = await who(ACME_KEY, { 'x-deltaserve-tenant': 'globex' });
    assert.equal(res.status, 403);
    assert.equal((await res.json()).error.type, 'permission_error');
    assert.deepEqual(await (await who(ACME_KEY, { 'x-deltaserve-tenant': 'acme' })).json(), { tenant: 'acme', isAdmin: false });
  });

  it('a missing, malformed or unknown key is 401 in the OpenAI shape', async () => {
    await assert401(await who());
    await assert401(await who('sk-nobody'));
    await assert401(await who(hashKey(ACME_KEY)));
    await assert401(await who(undefined, { authorization: ACME_KEY }));
    await assert401(await who(undefined, { authorization: `Basic ${ACME_KEY}` }));
    await assert401(await who(undefined, { authorization: 'Bearer ' }));
  });

  it('routes outside its path need no key', async () => {
    assert.equal((await authed.request('/health/live')).status, 200);
  });

  it('open mode (no table): every request is the default tenant and admin, keys are ignored', async () => {
    const open = app(null);
    assert.deepEqual(await (await open.request('/v1/whoami')).json(), { tenant: 'default', isAdmin: true });
    const withKey = await open.request('/v1/whoami', { headers: { authorization: 'Bearer whatever', 'x-deltaserve-tenant': 'acme' } });
    assert.deepEqual(await withKey.json(), { tenant: 'default', isAdmin: true });
  });
});
