import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { postgresMissing, startPostgres, type TestPostgres } from '../../../test/postgres.js';
import { PostgresClaims } from './claims-postgres.js';
import { PostgresConnection, parsePostgresUrl } from './postgres.js';

const missing = postgresMissing();

describe('PostgreSQL claims (a real server, started for the test)', { skip: missing ?? false }, () => {
  let pg: TestPostgres;
  before(async () => {
    pg = await startPostgres();
  });
  after(() => pg?.stop());

  it('speaks the protocol: SCRAM login, parameters, rows, NULLs, command tags and errors with their SQLSTATE', async () => {
    const conn = new PostgresConnection(parsePostgresUrl(pg.url));
    try {
      const { rows, command } = await conn.query("SELECT $1::text || 'ü', NULL::text, 42", ['a"b\\c']);
      assert.deepEqual(rows, [['a"b\\cü', null, '42']]);
      assert.equal(command, 'SELECT 1');
      await assert.rejects(conn.query('SELECT * FROM no_such_table'), (error: Error & { sqlstate?: string }) => error.sqlstate === '42P01' && /no_such_table/.test(error.message));
      // The connection is usable after an error.
      assert.deepEqual((await conn.query('SELECT 1')).rows, [['1']]);
    } finally {
      await conn.close();
    }
    const wrong = new PostgresConnection(parsePostgresUrl(pg.url.replace(/:([0-9a-f]+)@/, ':wrong@')));
    await assert.rejects(wrong.query('SELECT 1'), /password authentication failed/);
    await wrong.close();
  });

  it('of many concurrent claims of one key, from several connections, exactly one wins; release frees it', async () => {
    const replicas = await Promise.all([PostgresClaims.open(pg.url), PostgresClaims.open(pg.url), PostgresClaims.open(pg.url)]);
    try {
      const results = await Promise.all(Array.from({ length: 30 }, (_, i) => replicas[i % 3]!.claim('s3://b/acme/sql/v1/adapter_config.json')));
      assert.equal(results.filter(Boolean).length, 1);
      assert.equal(await replicas[1]!.claim('s3://b/acme/sql/v2/adapter_config.json'), true);
      await replicas[2]!.release(['s3://b/acme/sql/v1/adapter_config.json', 'with "quotes" and \\']);
      assert.equal(await replicas[0]!.claim('s3://b/acme/sql/v1/adapter_config.json'), true);
      assert.equal(await replicas[0]!.claim('s3://b/acme/sql/v2/adapter_config.json'), false);
    } finally {
      await Promise.all(replicas.map((r) => r.close()));
    }
  });

  it('--control-db URLs: scheme, user and TLS modes are checked, the password is hidden in the location', async () => {
    assert.deepEqual(parsePostgresUrl('postgres://u:p%40ss@db.example:6543/ds'), { host: 'db.example', port: 6543, user: 'u', password: 'p@ss', database: 'ds' });
    assert.deepEqual(parsePostgresUrl('postgresql://u@[::1]/'), { host: '::1', port: 5432, user: 'u', database: 'u' });
    assert.throws(() => parsePostgresUrl('mysql://u@h/d'), /--control-db: expected postgres:/);
    assert.throws(() => parsePostgresUrl('postgres://h/d'), /names no user/);
    assert.throws(() => parsePostgresUrl('postgres://u@h/d?sslmode=require'), /sslmode=require is not supported/);
    const claims = await PostgresClaims.open(pg.url);
    assert.doesNotMatch(claims.location, new RegExp(parsePostgresUrl(pg.url).password!));
    await claims.close();
  });
});
