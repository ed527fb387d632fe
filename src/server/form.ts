import type { Context } from 'hono';
import { ApiError } from './errors.js';

export type Form = Record<string, string | File | (string | File)[]>;

/** A multipart body; `expected` names its fields for the error a wrong content type gets. */
export async function parseForm(c: Context, expected: string): Promise<Form> {
  if (!(c.req.header('content-type') ?? '').startsWith('multipart/form-data')) {
    throw new ApiError(400, `upload a multipart/form-data body with ${expected}`, null, 'invalid_request');
  }
  try {
    return (await c.req.parseBody({ all: true })) as Form;
  } catch (err) {
    throw new ApiError(400, `malformed multipart body: ${(err as Error).message}`, null, 'invalid_request');
  }
}

export function textField(form: Form, field: string, fallback?: string): string {
  const value = form[field];
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== 'string') throw new ApiError(400, `form field '${field}' is required and must be text`, field, 'invalid_value');
  return value;
}

export async function fileField(form: Form, field: string): Promise<Uint8Array> {
  const value = form[field];
  if (!(value instanceof File)) throw new ApiError(400, `form field '${field}' is required and must be a file`, field, 'invalid_value');
  return new Uint8Array(await value.arrayBuffer());
}
