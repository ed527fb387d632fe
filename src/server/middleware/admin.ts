import type { MiddlewareHandler } from 'hono';
import { ApiError } from '../errors.js';

/**
 * Lets only admin keys through (open mode is admin): anything else is 403 `permission_denied`.
 * Mount it after `authenticate`, which sets `isAdmin`, on `/admin/*`.
 *
 * @example app.use('/admin/*', authenticate({ table }), adminOnly());
 */
export function adminOnly(options: Record<string, never> = {}): MiddlewareHandler {
  if (options && Object.keys(options).length) throw new Error(`adminOnly takes no options, got ${Object.keys(options).join(', ')}`);
  return async function adminOnly(c, next) {
    const isAdmin = c.get('isAdmin');
    if (typeof isAdmin !== 'boolean') throw new Error('adminOnly found no isAdmin: mount it after authenticate');
    if (!isAdmin) throw new ApiError(403, 'this endpoint needs an admin key', null, 'permission_denied');
    await next();
  };
}
