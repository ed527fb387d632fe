/**
 * The load harness's building blocks, free of any server: the workload (Zipf-distributed delta
 * choice, token-id prompts), one timed completion request (streamed or not), and percentiles.
 */
import { mulberry32 } from '../src/model/random.js';
import { isLoopback } from '../src/config.js';

/** Server-reported time to first token on non-streamed completions (milliseconds). */
export const TTFT_HEADER = 'x-deltaserve-ttft-ms';

/**
 * Samples ranks 0..n-1 with P(k) ∝ 1/(k+1)^s (Zipf), by inverting the CDF with a seeded PRNG.
 *
 * @example const next = zipfSampler(16, 1.1, mulberry32(1)); next() // 0 most often
 */
export function zipfSampler(n: number, s: number, random: () => number): () => number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`zipf: n must be a positive integer, got ${n}`);
  const weights = Array.from({ length: n }, (_, k) => 1 / (k + 1) ** s);
  const total = weights.reduce((a, b) => a + b, 0);
  const cdf: number[] = [];
  let acc = 0;
  for (const w of weights) cdf.push((acc += w / total));
  cdf[n - 1] = 1;
  return () => {
    const u = random();
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (u < cdf[mid]!) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  };
}

export interface PlannedRequest {
  index: number;
  /** The `model` field: a delta name. */
  model: string;
  prompt: number[];
}

/**
 * The run's requests, reproducible from the seed: each picks a delta by Zipf(s) over `models`
 * (the first is the most popular) and a prompt of `promptTokens` token ids in [1, vocab).
 */
export function planRequests(options: { count: number; models: string[]; zipfS: number; promptTokens: number; vocab: number; seed: number }): PlannedRequest[] {
  const random = mulberry32(options.seed);
  const pick = zipfSampler(options.models.length, options.zipfS, random);
  const idSpan = Math.max(1, options.vocab - 1);
  return Array.from({ length: options.count }, (_, index) => ({
    index,
    model: options.models[pick()]!,
    prompt: Array.from({ length: options.promptTokens }, () => 1 + Math.floor(random() * idSpan)),
  }));
}

export interface RequestResult {
  index: number;
  model: string;
  ok: boolean;
  status: number;
  /** Why it failed: `http <status>`, `no [DONE]`, or the exception's message. */
  error?: string;
  outputTokens: number;
  latencyMs: number;
  /** Client-side: request sent → first SSE data chunk (streamed requests only). */
  ttftMs?: number;
  /** The server's `x-deltaserve-ttft-ms` header, when it sends one. */
  serverTtftMs?: number;
}

/**
 * POSTs one greedy completion and times it. Streamed: TTFT is the first `data:` chunk; output
 * tokens are the chunks' `token_ids` (or their non-empty texts if a server omits token_ids); a
 * stream that ends without `data: [DONE]` is an error. Not streamed: output tokens come from
 * `usage.completion_tokens`. Never throws; failures are results with `ok: false`.
 */
export async function runCompletion(
  baseUrl: string,
  request: PlannedRequest,
  options: { maxTokens: number; stream: boolean; signal: AbortSignal; headers?: Record<string, string> },
): Promise<RequestResult> {
  const started = performance.now();
  const result: RequestResult = { index: request.index, model: request.model, ok: false, status: 0, outputTokens: 0, latencyMs: 0 };
  try {
    const res = await fetch(`${baseUrl}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...options.headers },
      body: JSON.stringify({ model: request.model, prompt: request.prompt, max_tokens: options.maxTokens, temperature: 0, stream: options.stream }),
      signal: options.signal,
    });
    result.status = res.status;
    const header = res.headers.get(TTFT_HEADER);
    if (header !== null && header !== '' && Number.isFinite(Number(header))) result.serverTtftMs = Number(header);
    if (res.status < 200 || res.status >= 300) {
      const text = await res.text().catch(() => '');
      result.error = `http ${res.status}${text ? `: ${text.slice(0, 200)}` : ''}`;
      return result;
    }
    if (options.stream) {
      const seen = await readSse(res, () => {
        result.ttftMs ??= performance.now() - started;
      });
      result.outputTokens = seen.tokens;
      if (!seen.done) {
        result.error = 'no [DONE]';
        return result;
      }
    } else {
      const body = (await res.json()) as { usage?: { completion_tokens?: number } };
      result.outputTokens = body.usage?.completion_tokens ?? 0;
    }
    result.ok = true;
    return result;
  } catch (err) {
    result.error = (err as Error).name === 'AbortError' || (err as Error).name === 'TimeoutError' ? `aborted (${(err as Error).message})` : (err as Error).message;
    return result;
  } finally {
    result.latencyMs = performance.now() - started;
  }
}

/** Reads a server-sent-events body; `onData` fires at each non-[DONE] data event. */
async function readSse(res: Response, onData: () => void): Promise<{ tokens: number; done: boolean }> {
  if (!res.body) return { tokens: 0, done: false };
  const decoder = new TextDecoder();
  let buffer = '';
  let tokens = 0;
  let done = false;
  const handleEvent = (event: string) => {
    const data = event
      .split(/\r?\n/)
      .filter((line) => line.startsWith('data:'))
      .map((line) => line.slice(5).replace(/^ /, ''))
      .join('\n');
    if (!data) return;
    if (data === '[DONE]') {
      done = true;
      return;
    }
    onData();
    const chunk = JSON.parse(data) as { choices?: { text?: string; token_ids?: number[] }[] };
    for (const choice of chunk.choices ?? []) tokens += Array.isArray(choice.token_ids) ? choice.token_ids.length : choice.text ? 1 : 0;
  };
  for await (const bytes of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(bytes, { stream: true });
    let at: number;
    while ((at = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const event = buffer.slice(0, at);
      buffer = buffer.slice(at).replace(/^\r?\n\r?\n/, '');
      handleEvent(event);
    }
  }
  buffer += decoder.decode();
  if (buffer.trim()) handleEvent(buffer);
  return { tokens, done };
}

/** Linear interpolation between the closest ranks (numpy's default); NaN for no values. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (rank - lo);
}

export function percentiles(values: number[]): { p50: number; p95: number; p99: number } {
  return { p50: percentile(values, 50), p95: percentile(values, 95), p99: percentile(values, 99) };
}

/** Load may only go to loopback servers: throws for any other host. */
export function assertLoopbackUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`--url: '${url}' is not a URL`);
  }
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error(`--url: only http(s) URLs, got '${url}'`);
  if (!isLoopback(host)) throw new Error(`--url: ${host} is not a loopback address; the harness only loads servers on this machine (127.0.0.1, ::1, localhost)`);
  return parsed.origin;
}
