import crypto from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import type { Logger } from '../../telemetry/logger.js';

export interface RequestLogOptions {
  logger: Logger;
  /** Paths that get no line (probes and scrapes would drown the log). */
  quiet: (path: string) => boolean;
}

/**
 * Gives every request an id (the client's `x-request-id`, else a new UUID, echoed in the
 * response) and writes one `request` log line when the handler is done: method, path, status,
 * duration, tenant, and the fields routes and onError add (`c.get('logFields')`). A streamed
 * generation also gets a `generation` line when its last byte is out (traceGeneration).
 *
 * @example app.use(requestLog({ logger, quiet: (path) => path.startsWith('/health') }));
 */
export function requestLog(options: RequestLogOptions): MiddlewareHandler {
  const { logger, quiet } = options ?? {};
  if (typeof logger?.info !== 'function') throw new Error('requestLog: options.logger must be a Logger');
  if (typeof quiet !== 'function') throw new Error('requestLog: options.quiet must be a function of the path');
  return async function requestLog(c, next) {
    const requestId = c.req.header('x-request-id') ?? crypto.randomUUID();
    c.set('requestId', requestId);
    c.set('logFields', {});
    c.header('x-request-id', requestId);
    const started = performance.now();
    await next();
    if (quiet(c.req.path)) return;
    const durationMs = Math.round((performance.now() - started) * 10) / 10;
    logger.info({ requestId, tenant: c.get('tenant'), method: c.req.method, path: c.req.path, status: c.res.status, durationMs, ...c.get('logFields') }, 'request');
  };
}
