import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { allowedMethods } from './allowed-methods.js';

describe('allowedMethods', () => {
  const routes = [
    { method: 'ALL', path: '/v1/*' },
    { method: 'POST', path: '/v1/completions' },
    { method: 'GET', path: '/v1/deltas' },
    { method: 'POST', path: '/v1/deltas' },
    { method: 'GET', path: '/v1/deltas/*' },
    { method: 'DELETE', path: '/v1/deltas/*' },
    { method: 'GET', path: '/admin/v1/files/:id' },
    { method: 'POST', path: '/admin/v1/fine_tuning/jobs/:id/cancel' },
  ];

  it('lists the methods of every route matching the path, middleware aside', () => {
    assert.deepEqual(allowedMethods(routes, '/v1/completions'), ['POST']);
    // As in hono, a trailing /* also matches the bare prefix.
    assert.deepEqual(allowedMethods(routes, '/v1/deltas'), ['DELETE', 'GET', 'HEAD', 'POST']);
    assert.deepEqual(allowedMethods(routes, '/v1/deltas/acme/style@2'), ['DELETE', 'GET', 'HEAD']);
  });

  it('matches :param as one segment only, and nothing for unknown paths', () => {
    assert.deepEqual(allowedMethods(routes, '/admin/v1/files/file-1'), ['GET', 'HEAD']);
    assert.deepEqual(allowedMethods(routes, '/admin/v1/files/a/b'), []);
    assert.deepEqual(allowedMethods(routes, '/admin/v1/fine_tuning/jobs/j1/cancel'), ['POST']);
    assert.deepEqual(allowedMethods(routes, '/v1/nothing'), []);
    assert.deepEqual(allowedMethods(routes, '/v1/completions.json'), []);
  });
});
