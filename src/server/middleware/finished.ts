import type { Context } from 'hono';

/**
 * Calls `done` once the response of `c` is finished: for a streamed response (`text/event-stream`,
 * or `Transfer-Encoding: chunked`, as hono's `streamSSE` and `streamText` send) when its body ends,
 * fails or is cancelled by the client; for any other response at once, since its body is complete
 * when the handler returns. Middleware that must outlive the handler (in-flight counts, the
 * generation trace, rate-limit admissions) call it after `await next()`. A streamed body that is
 * never read nor cancelled never finishes; @hono/node-server always does one or the other.
 *
 * @example
 * await next();
 * whenFinished(c, () => inFlight--);
 */
export function whenFinished(c: Context, done: (how: FinishedHow) => void): void {
  const body = isStreamed(c.res.headers) ? c.res.body : null;
  if (!body) return done('ended');
  c.res = new Response(passThrough(body, once(done)), c.res);
}

/** How a response finished: its body ended, failed while being read, or the client cancelled it. */
export type FinishedHow = 'ended' | 'failed' | 'cancelled';

function isStreamed(headers: Headers): boolean {
  return /^text\/event-stream\b/i.test(headers.get('content-type') ?? '') || /\bchunked\b/i.test(headers.get('transfer-encoding') ?? '');
}

function once(fn: (how: FinishedHow) => void): (how: FinishedHow) => void {
  let called = false;
  return (how) => {
    if (called) return;
    called = true;
    fn(how);
  };
}

/**
 * `body` passed through unchanged, calling `done` when it ends, fails or is cancelled. It reads
 * only when its reader asks (high-water mark 0), so the client's backpressure reaches the source.
 */
function passThrough(body: ReadableStream<Uint8Array>, done: (how: FinishedHow) => void): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let cancelled = false;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (err) {
          done('failed');
          if (!cancelled) controller.error(err);
          return;
        }
        if (chunk.done) done('ended');
        // A cancel while this read waited has closed the stream already.
        if (cancelled) return;
        if (chunk.done) controller.close();
        else controller.enqueue(chunk.value);
      },
      cancel(reason) {
        cancelled = true;
        done('cancelled');
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}
