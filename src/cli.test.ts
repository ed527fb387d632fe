import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from './cli.js';

describe('parseConfig: tenancy flags', () => {
  it('--auth, repeatable --public-delta ([TENANT/]NAME, no prefix is the default tenant)', () => {
    const config = parseConfig(['--auth', 'keys.yaml', '--delta', 'acme/sql=/a', '--delta', 'chat=/b', '--public-delta', 'acme/sql', '--public-delta', 'chat'], {});
    assert.equal(config.auth, 'keys.yaml');
    assert.deepEqual(config.publicDeltas, [{ owner: 'acme', name: 'sql' }, { owner: 'default', name: 'chat' }]);
  });

  it('DELTASERVE_AUTH and comma-separated DELTASERVE_PUBLIC_DELTA; flags win', () => {
    const env = { DELTASERVE_AUTH: 'env.json', DELTASERVE_DELTA: 'acme/sql=/a, globex/x=/b', DELTASERVE_PUBLIC_DELTA: 'acme/sql, globex/x' };
    const config = parseConfig([], env);
    assert.equal(config.auth, 'env.json');
    assert.deepEqual(config.publicDeltas, [{ owner: 'acme', name: 'sql' }, { owner: 'globex', name: 'x' }]);
    assert.equal(parseConfig(['--auth', 'flag.json'], env).auth, 'flag.json');
  });

  it('a --public-delta that is not a --delta, and a --delta given twice, are configuration errors naming the flag', () => {
    assert.throws(() => parseConfig(['--delta', 'acme/sql=/a', '--public-delta', 'sql'], {}), /--public-delta: 'default\/sql' is not a --delta/);
    assert.throws(() => parseConfig(['--delta', 'sql=/a', '--delta', 'default/sql=/b'], {}), /--delta: delta 'default\/sql' is given twice/);
    assert.throws(() => parseConfig(['--delta', 'a=/a', '--public-delta', 'a/b/c'], {}), /--public-delta: expected \[TENANT\/\]NAME/);
  });
});
