import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { ZodError } from 'zod';
import { isStorageFull, StorageFullError, StoreUnavailableError } from '../deltas/store/unavailable.js';
import { EngineError, type EngineErrorCode } from '../engine/types.js';
import { MultipartFieldMissing } from './form.js';
import { MultipartError } from './multipart.js';
import { InvalidDeltaNameError } from '../deltas/store/common.js';

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

/**
 * OpenAI's error body; `type` follows the status.
 *
 * @example errorBody(404, "model 'x' does not exist", 'model', 'model_not_found')
 */
export function errorBody(status: number, message: string, param: string | null = null, code: string | null = null): ErrorBody {
  return { error: { message, type: TYPE_BY_STATUS[status] ?? (status >= 500 ? 'server_error' : 'invalid_request_error'), param, code } };
}

/** Turns zod issues into one message naming every bad field; `param` is the first. */
export function fromZod(err: ZodError): ApiError {
  const issues = err.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`);
  const first = err.issues[0]?.path.join('.') || null;
  return new ApiError(400, issues.join('; '), first, 'invalid_value');
}

/** What one failure becomes: the ApiError the client sees, and the raw cause for the log line only. */
export interface MappedError {
  error: ApiError;
  /** The raw cause (it may name store endpoints or paths): the request's log line, never the client. */
  detail?: string;
  /** Nothing in the table matched: a 500 with a generic message, the error logged in full. */
  unexpected?: boolean;
}

type ErrorClass<E> = abstract new (...args: never[]) => E;

/** One row of the table: a class (or a predicate, for errno-style errors) and what it becomes. */
interface ErrorMapping {
  matches: (err: Error) => boolean;
  map: (err: Error) => MappedError;
}

function row<E extends Error>(cls: ErrorClass<E>, map: (err: E) => MappedError): ErrorMapping {
  return { matches: (err) => err instanceof cls, map: map as (err: Error) => MappedError };
}

/**
 * The one table from error classes to HTTP answers, first match wins. Every class that may reach
 * the client with a status other than 500 is listed here; anything else is a 500 whose body says
 * only "internal server error" (its message could name paths, endpoints or another tenant's data).
 */
const ERROR_TABLE: readonly ErrorMapping[] = [
  row(ApiError, (err) => ({ error: err })),
  row(ZodError, (err) => ({ error: fromZod(err) })),
  row(MultipartError, (err) => ({ error: new ApiError(err.status, err.message, err.param, MULTIPART_CODES[err.status]) })),
  row(MultipartFieldMissing, (err) => ({ error: new ApiError(400, err.message, err.field, err.code) })),
  row(EngineError, (err) => {
    const retry = RETRY_AFTER[err.code];
    return { error: new ApiError(ENGINE_STATUS[err.code] ?? 500, err.message, err.code === 'delta_not_found' ? 'model' : null, err.code, retry ? { 'Retry-After': retry } : {}), detail: err.detail };
  }),
  row(StoreUnavailableError, (err) => ({ error: new ApiError(503, err.message, null, err.code, { 'Retry-After': RETRY_AFTER.store_unavailable! }), detail: err.detail })),
  row(StorageFullError, (err) => ({ error: new ApiError(507, err.message, null, err.code), detail: err.detail })),
  {
    matches: isStorageFull,
    map: (err) => {
      const errno = (err as { code?: string }).code ?? 'ENOSPC';
      return { error: new ApiError(507, `no space left on the server's storage (${errno}); nothing was stored; retry later`, null, 'storage_full'), detail: err.message };
    },
  },
  row(InvalidDeltaNameError, (err) => ({ error: new ApiError(400, err.message, err.field === 'owner' ? 'tenant' : 'name', 'invalid_value') })),
  row(HTTPException, (err) => ({ error: new ApiError(err.status as ContentfulStatusCode, err.message || 'request failed') })),
];

/**
 * Any failure as an ApiError, through ERROR_TABLE: store outages are 503 with Retry-After and a
 * full disk 507, both with messages that name no endpoint or path (the raw cause goes to
 * `detail`, for the request's log line); anything not in the table is a 500 saying nothing more.
 *
 * @example const { error } = toApiError(new StoreUnavailableError('S3', 'connection refused', 'connect ECONNREFUSED 10.0.0.5:9000')); // error.status 503
 */
export function toApiError(err: Error): MappedError {
  const mapping = ERROR_TABLE.find((m) => m.matches(err));
  if (mapping) return mapping.map(err);
  return { error: new ApiError(500, 'internal server error', null, 'internal_error'), detail: `${err?.constructor?.name ?? typeof err}: ${err?.message}`, unexpected: true };
}
