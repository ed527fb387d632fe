/**
 * Store failures that are the store's state, not the request's fault: the store did not answer
 * in time, could not be reached, answered 5xx (503 + Retry-After to the client), or its disk is
 * full (507). Clients are told the store's kind and what went wrong, never its endpoint, bucket
 * or paths; `detail` keeps the raw cause for operators' logs.
 */

/** The kinds of store a message may name. */
export type StoreKind = 'S3' | 'filesystem';

/** The store could not serve a call now; retrying later may succeed. */
export class StoreUnavailableError extends Error {
  readonly code = 'store_unavailable';
  constructor(
    readonly store: StoreKind,
    reason: string,
    /** The raw cause (may name endpoints and paths): for logs, never for clients. */
    readonly detail: string,
    options?: { cause?: unknown },
  ) {
    super(`the delta store (${store}) is unavailable: ${reason}; retry shortly`, options);
    this.name = 'StoreUnavailableError';
  }
}

/** A write found no space left (ENOSPC, EDQUOT, or EFBIG from a file size limit); nothing was kept. */
export class StorageFullError extends Error {
  readonly code = 'storage_full';
  constructor(
    /** What ran out, for the client: e.g. 'the filesystem of --data-dir'. */
    readonly where: string,
    readonly errno: string,
    readonly detail: string,
    options?: { cause?: unknown },
  ) {
    super(`no space left on ${where} (${errno}); nothing was stored`, options);
    this.name = 'StorageFullError';
  }
}

const FULL = new Set(['ENOSPC', 'EDQUOT', 'EFBIG']);
/** Socket-level failures: the store is down, restarting, or the network between us is. */
const UNREACHABLE: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection closed',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host lookup failed',
};

/** The errno-style code of an error or of any error in its cause chain (the SDK nests them). */
function errnoOf(error: unknown): string | undefined {
  for (let e = error, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (code in UNREACHABLE || FULL.has(code))) return code;
    // AggregateError (happy eyeballs tried several addresses): the first is as good as any.
    const inner = (e as { errors?: unknown[] }).errors?.[0];
    if (inner) return errnoOf(inner);
  }
  return undefined;
}

/** True when the error is a disk-full condition (see StorageFullError). */
export function isStorageFull(error: unknown): boolean {
  const code = errnoOf(error);
  return code !== undefined && FULL.has(code);
}

/**
 * The unavailability an error means, or undefined when it means something else (a 404, a bad
 * request, a digest mismatch): socket failures, an S3 5xx or throttling answer, or a deadline.
 *
 * @example
 * try { await client.send(command); } catch (e) { throw classifyStoreError(e, 'S3') ?? e; }
 */
export function classifyStoreError(error: unknown, store: StoreKind): StoreUnavailableError | undefined {
  if (error instanceof StoreUnavailableError) return error;
  const detail = (error as Error | undefined)?.message ?? String(error);
  const errno = errnoOf(error);
  if (errno && errno in UNREACHABLE) return new StoreUnavailableError(store, UNREACHABLE[errno]!, detail, { cause: error });
  const status = (error as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
  if (status !== undefined && (status >= 500 || status === 429)) return new StoreUnavailableError(store, `it answered HTTP ${status}`, detail, { cause: error });
  const name = (error as { name?: string } | null)?.name;
  if (name === 'TimeoutError' || name === 'RequestTimeout' || name === 'SlowDown' || /socket hang up/i.test(detail)) return new StoreUnavailableError(store, 'the connection failed', detail, { cause: error });
  return undefined;
}

/**
 * Runs one store call under a deadline: `fn` gets a signal that aborts after `timeoutMs`, and the
 * call fails with StoreUnavailableError then even if `fn` ignores the signal. Failures that mean
 * unavailability are classified; others are rethrown as they are.
 *
 * @example const bytes = await withStoreDeadline('S3', 10_000, 'GetObject', (signal) => get(key, signal));
 */
export async function withStoreDeadline<T>(store: StoreKind, timeoutMs: number, operation: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new StoreUnavailableError(store, `no answer within ${timeoutMs} ms (--store-timeout-ms)`, `${operation} timed out after ${timeoutMs} ms`);
      controller.abort(error);
      reject(error);
    }, timeoutMs);
  });
  try {
    return await Promise.race([fn(controller.signal), deadline]);
  } catch (error) {
    // An abort we caused surfaces from the SDK as an AbortError: report the deadline instead.
    if (controller.signal.aborted) throw controller.signal.reason;
    throw classifyStoreError(error, store) ?? error;
  } finally {
    clearTimeout(timer);
  }
}
