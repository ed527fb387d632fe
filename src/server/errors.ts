import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { ZodError } from 'zod';
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
};

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

/** The single onError handler: every failure leaves as an OpenAI-shaped JSON error. */
export function handleError(err: Error, c: Context): Response {
  if (err instanceof ApiError) {
    for (const [k, v] of Object.entries(err.headers)) c.header(k, v);
    return c.json(errorBody(err.status, err.message, err.param, err.code), err.status);
  }
  if (err instanceof ZodError) return handleError(fromZod(err), c);
  if (err instanceof MultipartError) return handleError(new ApiError(err.status, err.message, err.param, MULTIPART_CODES[err.status]), c);
  if (err instanceof MultipartFieldMissing) return handleError(new ApiError(400, err.message, err.field, err.code), c);
  if (err instanceof EngineError) {
    const status = ENGINE_STATUS[err.code];
    if (status === 429) c.header('Retry-After', '1');
    return c.json(errorBody(status, err.message, err.code === 'delta_not_found' ? 'model' : null, err.code), status);
  }
  if (err instanceof HTTPException) {
    const status = err.status as ContentfulStatusCode;
    return c.json(errorBody(status, err.message || 'request failed'), status);
  }
  console.error('unhandled error', err);
  return c.json(errorBody(500, 'internal server error'), 500);
}
