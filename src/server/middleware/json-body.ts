import type { MiddlewareHandler } from 'hono';
import type { z, ZodType } from 'zod';
import { parseJsonBody } from '../body.js';

export interface JsonBodyOptions {
  /** The request schema of the route (its contract entry's `request.json`). */
  schema: ZodType;
  /** Largest accepted body in bytes (413 above it, before the body is buffered whole). */
  maxBytes: number;
}

/**
 * Reads and validates a route's JSON body before its handler runs: 413 over `maxBytes`, 400 for
 * malformed JSON, 400 naming every bad field (zod) otherwise; the handler takes the parsed body
 * with {@link validBody}. app.ts mounts one per route table entry with a JSON request, so the
 * schema the document shows is the one that validates.
 *
 * @example app.on('POST', ['/v1/completions'], jsonBody({ schema: CompletionRequest, maxBytes: 4 << 20 }));
 */
export function jsonBody(options: JsonBodyOptions): MiddlewareHandler {
  const { schema, maxBytes } = options ?? {};
  if (typeof schema?.parse !== 'function') throw new Error('jsonBody: options.schema must be a zod schema');
  if (!Number.isInteger(maxBytes) || maxBytes <= 0) throw new Error(`jsonBody: options.maxBytes must be a positive integer, got ${maxBytes}`);
  return async function jsonBody(c, next) {
    c.set('body', { schema, value: schema.parse(await parseJsonBody(c, maxBytes)) });
    await next();
  };
}

/**
 * The body jsonBody validated with `schema`, typed by it. Asking with another schema than the
 * one the route's validator used is a wiring mistake, and throws rather than mistyping the body.
 *
 * @example const body = validBody(c, CompletionRequest);
 */
export function validBody<T extends ZodType>(c: { get(key: 'body'): ValidatedBody | undefined }, schema: T): z.output<T> {
  const body = c.get('body');
  if (body?.schema !== schema) throw new Error('validBody: the route has no jsonBody validator for this schema (see the route table)');
  return body.value as z.output<T>;
}

/** A body and the schema that validated it. */
export interface ValidatedBody {
  schema: ZodType;
  value: unknown;
}

declare module 'hono' {
  interface ContextVariableMap {
    /** The request body, validated by jsonBody against its route's schema. */
    body: ValidatedBody;
  }
}
