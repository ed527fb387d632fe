import type { Context } from 'hono';
import { ApiError } from './errors.js';

/**
 * Reads a JSON body with a size cap: an oversized body is 413 before it is buffered whole,
 * malformed JSON is 400.
 */
export async function parseJsonBody(c: Context, maxBytes: number): Promise<unknown> {
  const declared = Number(c.req.header('content-length') ?? NaN);
  if (declared > maxBytes) throw new ApiError(413, `request body of ${declared} bytes exceeds the limit of ${maxBytes}`, null, 'body_too_large');
  const reader = c.req.raw.body?.getReader();
  if (!reader) throw new ApiError(400, 'request body is required', null, 'invalid_json');
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > maxBytes) {
      await reader.cancel();
      throw new ApiError(413, `request body exceeds the limit of ${maxBytes} bytes`, null, 'body_too_large');
    }
    chunks.push(value);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ApiError(400, `request body is not valid JSON: ${(err as Error).message}`, null, 'invalid_json');
  }
}
