import type { ErrorHandler } from 'hono';
import type { Logger } from '../../telemetry/logger.js';
import { errorBody, toApiError } from '../errors.js';

export interface OnErrorOptions {
  /** Where an error the table does not know is logged in full (stack included). */
  logger: Logger;
}

/**
 * The app's one `onError`: every failure leaves as OpenAI's `{error: {message, type, param, code}}`
 * with the status, code and headers ERROR_TABLE (errors.ts) gives its class. The raw cause goes on
 * the request's log line (`error`), never to the client; an error of a class the table does not
 * know is a 500 "internal server error" (code `internal_error`), logged with its class and stack.
 *
 * @example app.onError(onError({ logger }));
 */
export function onError(options: OnErrorOptions): ErrorHandler {
  const logger = options?.logger;
  if (typeof logger?.error !== 'function') throw new Error('onError: options.logger must be a Logger');
  return function onError(err, c) {
    const { error, detail, unexpected } = toApiError(err);
    const fields = c.get('logFields') as Record<string, unknown> | undefined;
    if (detail !== undefined && fields) fields['error'] = detail;
    if (unexpected) logger.error({ requestId: c.get('requestId'), method: c.req.method, path: c.req.path, errorClass: err?.constructor?.name, stack: err?.stack }, 'unexpected error');
    for (const [k, v] of Object.entries(error.headers)) c.header(k, v);
    return c.json(errorBody(error.status, error.message, error.param, error.code), error.status);
  };
}
