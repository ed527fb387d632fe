// Shared pieces of the deltaserve k6 scripts: target URL (loopback only), workload (token-id
// prompts, Zipf-distributed delta choice), one completion request, and the custom metrics.
//
// k6 cannot see the first byte of a streamed body, so requests are non-streamed and time to first
// token comes from the server's `x-deltaserve-ttft-ms` response header.
import http from 'k6/http';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';

export const BASE_URL = loopbackUrl(__ENV.DELTASERVE_URL || 'http://127.0.0.1:8000');
export const MAX_TOKENS = intEnv('MAX_TOKENS', 32);
export const PROMPT_TOKENS = intEnv('PROMPT_TOKENS', 32);
// Prompt token ids are drawn from [1, VOCAB); 256 is safe for any model (the embedded model is byte-level).
export const VOCAB = intEnv('VOCAB', 256);
export const ZIPF_S = Number(__ENV.ZIPF_S || '1.1');
export const REQUEST_TIMEOUT = __ENV.REQUEST_TIMEOUT || '120s';

// Custom metrics. isTime=true makes k6 display and threshold them as milliseconds.
export const ttft = new Trend('deltaserve_ttft_ms', true);
export const timePerOutputToken = new Trend('deltaserve_tpot_ms', true);
export const errors = new Rate('deltaserve_errors');
export const ttftHeaderMissing = new Rate('deltaserve_ttft_header_missing');
export const outputTokens = new Counter('deltaserve_output_tokens');

/**
 * The thresholds every script shares; limits come from the environment:
 * ERROR_RATE (0.01), P95_MS (end-to-end latency, 30000), TTFT_P95_MS (5000).
 */
export function commonThresholds() {
  return {
    deltaserve_errors: [`rate<${__ENV.ERROR_RATE || '0.01'}`],
    http_req_failed: [`rate<${__ENV.ERROR_RATE || '0.01'}`],
    http_req_duration: [`p(95)<${__ENV.P95_MS || '30000'}`],
    deltaserve_ttft_ms: [`p(95)<${__ENV.TTFT_P95_MS || '5000'}`],
  };
}

/** Load goes only to a server on this machine that you run yourself. */
function loopbackUrl(url) {
  const match = /^(https?):\/\/(localhost|127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\])(:\d+)?\/?$/.exec(url);
  if (!match) throw new Error(`DELTASERVE_URL must be a loopback server you run (http://127.0.0.1:PORT, http://localhost:PORT or http://[::1]:PORT), got '${url}'`);
  return `${match[1]}://${match[2]}${match[3] || ''}`;
}

function intEnv(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got '${raw}'`);
  return n;
}

/** Cumulative distribution of Zipf(s) over n ranks: P(k) ∝ 1/(k+1)^s. */
export function zipfCdf(n, s) {
  const weights = [];
  let total = 0;
  for (let k = 0; k < n; k++) {
    weights.push(1 / Math.pow(k + 1, s));
    total += weights[k];
  }
  const cdf = [];
  let acc = 0;
  for (let k = 0; k < n; k++) cdf.push((acc += weights[k] / total));
  cdf[n - 1] = 1;
  return cdf;
}

/** A rank drawn from a CDF built by zipfCdf (0 is the most popular). */
export function sampleRank(cdf) {
  const u = Math.random();
  let lo = 0;
  let hi = cdf.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (u < cdf[mid]) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

export function randomPrompt() {
  const ids = [];
  for (let i = 0; i < PROMPT_TOKENS; i++) ids.push(1 + Math.floor(Math.random() * (VOCAB - 1)));
  return ids;
}

/**
 * The models to load: DELTASERVE_MODELS (comma-separated delta names, most popular first) or,
 * when unset, every delta the server lists in /v1/models (sorted by id). Call from setup().
 */
export function discoverModels() {
  if (__ENV.DELTASERVE_MODELS) return __ENV.DELTASERVE_MODELS.split(',').map((s) => s.trim()).filter(Boolean);
  const res = http.get(`${BASE_URL}/v1/models`, { headers: authHeaders(__ENV.DELTASERVE_API_KEY), tags: { name: 'models' } });
  if (res.status !== 200) throw new Error(`GET ${BASE_URL}/v1/models answered ${res.status}; is the server running and ready?`);
  const data = res.json('data') || [];
  const deltas = data.filter((m) => m.parent).map((m) => m.id).sort();
  if (deltas.length === 0) throw new Error(`${BASE_URL} serves no deltas; start it with --delta NAME=DIR or set DELTASERVE_MODELS`);
  return deltas;
}

function authHeaders(apiKey) {
  return apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
}

/** Response headers are canonicalised by k6 (X-Deltaserve-Ttft-Ms); look up case-insensitively anyway. */
function header(res, name) {
  const lower = name.toLowerCase();
  for (const key in res.headers) if (key.toLowerCase() === lower) return res.headers[key];
  return undefined;
}

/**
 * One greedy, non-streamed completion for `model`, recorded into the custom metrics. `tags` are
 * added to the request's metrics (e.g. { tenant }). Returns the response.
 */
export function completion(model, { apiKey, tags } = {}) {
  const body = JSON.stringify({ model, prompt: randomPrompt(), max_tokens: MAX_TOKENS, temperature: 0 });
  const res = http.post(`${BASE_URL}/v1/completions`, body, {
    headers: Object.assign({ 'Content-Type': 'application/json' }, authHeaders(apiKey)),
    tags: Object.assign({ name: 'completions', delta: model }, tags || {}),
    timeout: REQUEST_TIMEOUT,
  });
  let parsed = null;
  if (res.status === 200) {
    try {
      parsed = JSON.parse(res.body);
    } catch (_) {
      parsed = null;
    }
  }
  const completionTokens = parsed && parsed.usage ? Number(parsed.usage.completion_tokens) || 0 : 0;
  const ok = check(res, {
    'status is 200': (r) => r.status === 200,
    'body has choices': () => parsed !== null && Array.isArray(parsed.choices) && parsed.choices.length > 0,
  });
  errors.add(!ok, { delta: model });
  if (!ok) return res;
  outputTokens.add(completionTokens, { delta: model });
  const serverTtft = Number(header(res, 'x-deltaserve-ttft-ms'));
  const hasTtft = header(res, 'x-deltaserve-ttft-ms') !== undefined && Number.isFinite(serverTtft);
  ttftHeaderMissing.add(!hasTtft);
  if (hasTtft) {
    ttft.add(serverTtft, { delta: model });
    if (completionTokens > 1) timePerOutputToken.add(Math.max(0, res.timings.duration - serverTtft) / (completionTokens - 1), { delta: model });
  }
  return res;
}

/** setup() for scripts that load the server's deltas with Zipf popularity (steady, ramp). */
export function setupZipfModels() {
  const models = discoverModels();
  return { models, cdf: zipfCdf(models.length, ZIPF_S) };
}

/** One iteration of those scripts: a completion for a Zipf-drawn delta. */
export function zipfModelCompletion(data) {
  completion(data.models[sampleRank(data.cdf)]);
}
