import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { ZodError } from 'zod';
import { isStorageFull, StorageFullError, StoreUnavailableError } from '../deltas/store/unavailable.js';
import { EngineError, type EngineErrorCode } from '../engine/types.js';
import { MultipartFieldMissing } from './form.js';
import { MultipartError } from './multipart.js';

/** OpenAI's error body. */
export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** A request the server refuses; `param` names the offending field. */
export class ApiError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const TYPE_BY_STATUS: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'invalid_request_error',
  415: 'invalid_request_error',
  422: 'invalid_request_error',
  429: 'rate_limit_error',
  503: 'service_unavailable',
  507: 'server_error',
};

/** Engine error codes mapped to HTTP once, here. */
const ENGINE_STATUS: Record<EngineErrorCode, ContentfulStatusCode> = {
  delta_not_found: 404,
  context_length_exceeded: 400,
  queue_full: 429,
  invalid_delta: 422,
  internal_error: 500,
  pin_limit: 409,
  slots_busy: 409, training_busy: 409, training_not_found: 404, training_cancelled: 409,
  store_unavailable: 503,
  engine_restarting: 503,
};

/** Seconds a client should wait before retrying, by engine error code (the rest are not worth retrying as they are). */
const RETRY_AFTER: Partial<Record<EngineErrorCode, string>> = { queue_full: '1', store_unavailable: '5', engine_restarting: '2' };

const MULTIPART_CODES = { 400: 'invalid_request', 413: 'body_too_large', 415: 'unsupported_media_type' } as const;

export function errorBody(status: number, message: string, param: string | null = null, code: string | null = null): ErrorBody {
  return { error: { message, type: TYPE_BY_STATUS[status] ?? (status >= 500 ? 'server_error' : 'invalid_request_error'), param, code } };
}

/** Turns zod issues into one message naming every bad field; `param` is the first. */
export function fromZod(err: ZodError): ApiError {
  const issues = err.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`);
  const first = err.issues[0]?.path.join('.') || null;
  return new ApiError(400, issues.join('; '), first, 'invalid_value');
}

/**
 * Any failure as an ApiError: the one mapping of error types to statuses. Store outages are 503
 * with Retry-After and a full disk 507, both with messages that name no endpoint or path (the
 * raw cause goes to `detail`, for the request's log line); anything unknown is a 500.
 *
 * @example const { status, message } = toApiError(new StoreUnavailableError('S3', 'connection refused', 'connect ECONNREFUSED 10.0.0.5:9000'));
 */
export function toApiError(err: Error): { error: ApiError; detail?: string; unexpected?: boolean } {
  if (err instanceof ApiError) return { error: err };
  if (err instanceof ZodError) return { error: fromZod(err) };
  if (err instanceof MultipartError) return { error: new ApiError(err.status, err.message, err.param, MULTIPART_CODES[err.status]) };
  if (err instanceof MultipartFieldMissing) return { error: new ApiError(400, err.message, err.field, err.code) };
  if (err instanceof EngineError) {
    const status = ENGINE_STATUS[err.code] ?? 500;
    const retry = RETRY_AFTER[err.code];
    return { error: new ApiError(status, err.message, err.code === 'delta_not_found' ? 'model' : null, err.code, retry ? { 'Retry-After': retry } : {}), detail: err.detail };
  }
  if (err instanceof StoreUnavailableError) return { error: new ApiError(503, err.message, null, err.code, { 'Retry-After': RETRY_AFTER.store_unavailable! }), detail: err.detail };
  if (err instanceof StorageFullError) return { error: new ApiError(507, err.message, null, err.code), detail: err.detail };
  if (isStorageFull(err)) {
    const errno = (err as { code?: string }).code ?? 'ENOSPC';
    return { error: new ApiError(507, `no space left on the server's storage (${errno}); nothing was stored; retry later`, null, 'storage_full'), detail: err.message };
  }
  if (err instanceof HTTPException) return { error: new ApiError(err.status as ContentfulStatusCode, err.message || 'request failed') };
  return { error: new ApiError(500, 'internal server error'), detail: err.message, unexpected: true };
}

/** The single onError handler: every failure leaves as an OpenAI-shaped JSON error. */
export function handleError(err: Error, c: Context): Response {
  const { error, detail, unexpected } = toApiError(err);
  if (unexpected) console.error('unhandled error', err);
  // Operators see the raw cause on the request's log line; the client sees the message only.
  const fields = c.get('logFields') as Record<string, unknown> | undefined;
  if (detail !== undefined && fields) fields['error'] = detail;
  for (const [k, v] of Object.entries(error.headers)) c.header(k, v);
  return c.json(errorBody(error.status, error.message, error.param, error.code), error.status);
}
