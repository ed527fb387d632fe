import fs from 'node:fs/promises';
import type { Context } from 'hono';
import { readMultipart, type MultipartForm } from './multipart.js';

export interface UploadSpec {
  /** Text fields accepted. */
  fields: readonly string[];
  /** File fields and the largest size of each, in bytes. */
  files: Record<string, number>;
  /** Where file parts are spooled while they arrive. */
  spoolDir: string;
}

/**
 * Reads an upload as it arrives, enforcing every limit on the way (with or without a
 * Content-Length) and spooling files to disk; see readMultipart. MultipartError becomes the
 * matching 400/413/415 in the error handler.
 *
 * @example const form = await readUpload(c, { fields: ['purpose'], files: { file: 64 << 20 }, spoolDir });
 */
export async function readUpload(c: Context, spec: UploadSpec): Promise<MultipartForm> {
  const maxBodyBytes = Object.values(spec.files).reduce((sum, n) => sum + n, 0) + spec.fields.length * 64 * 1024 + 64 * 1024;
  return readMultipart(c.req.raw.body, c.req.header('content-type'), { spoolDir: spec.spoolDir, maxBodyBytes, files: spec.files, fields: spec.fields });
}

/** A spooled file's bytes, or a 400 naming the field when it was not sent. */
export async function fileBytes(form: MultipartForm, field: string): Promise<Uint8Array> {
  const file = form.files[field];
  if (!file) throw new MultipartFieldMissing(field, 'a file');
  return new Uint8Array(await fs.readFile(file.path));
}

/** A text field, its fallback when absent, or a 400 naming it. */
export function textField(form: MultipartForm, field: string, fallback?: string): string {
  const value = form.fields[field];
  if (value !== undefined) return value;
  if (fallback !== undefined) return fallback;
  throw new MultipartFieldMissing(field, 'text');
}

export class MultipartFieldMissing extends Error {
  readonly status = 400;
  readonly code = 'invalid_value';
  constructor(readonly field: string, kind: string) {
    super(`form field '${field}' is required and must be ${kind}`);
  }
}
