// (c) Many tenants: every tenant has an API key and its own deltas; each request picks one
// (tenant, delta) pair by Zipf(ZIPF_S) over all pairs in the order the config lists them (the
// first is the most popular), and sends the tenant's key as `Authorization: Bearer <key>`.
// Metrics are tagged with `tenant` and `delta`, and a per-tenant TTFT threshold can be added as
// 'deltaserve_ttft_ms{tenant:acme}'.
//
//   k6 run -e TENANTS_FILE=$PWD/loadtests/k6/tenants.example.json loadtests/k6/tenants.js
//   k6 run -e TENANTS='key-a:acme/sql|acme/support,key-b:globex/chat' -e RATE=4 loadtests/k6/tenants.js
//
// Config: TENANTS_FILE, a JSON file {"tenants": [{"name", "api_key", "deltas": [names]}]} (give an
// absolute path: k6 resolves open()'s relative paths against the script, not the shell), or TENANTS, 'KEY:DELTA|DELTA,KEY:DELTA' (tenant name =
// the key). Without either, one keyless tenant owns every delta in /v1/models.
// Env: DELTASERVE_URL (loopback only), RATE (4), TIME_UNIT (1s), DURATION (2m), PRE_VUS (32),
// MAX_VUS (128), MAX_TOKENS, PROMPT_TOKENS, VOCAB, ZIPF_S (1.1), thresholds ERROR_RATE, P95_MS,
// TTFT_P95_MS.
import { SharedArray } from 'k6/data';
import { commonThresholds, completion, discoverModels, sampleRank, zipfCdf, ZIPF_S } from './lib.js';

// Flattened (tenant, key, delta) pairs in popularity order; read once and shared between VUs.
const configured = new SharedArray('deltaserve tenant deltas', function () {
  let tenants = [];
  if (__ENV.TENANTS_FILE) {
    tenants = JSON.parse(open(__ENV.TENANTS_FILE)).tenants;
  } else if (__ENV.TENANTS) {
    tenants = __ENV.TENANTS.split(',').filter(Boolean).map((entry) => {
      const at = entry.indexOf(':');
      const key = entry.slice(0, at).trim();
      return { name: key, api_key: key, deltas: entry.slice(at + 1).split('|').map((d) => d.trim()).filter(Boolean) };
    });
  }
  const pairs = [];
  for (const t of tenants || []) for (const delta of t.deltas || []) pairs.push({ tenant: t.name || t.api_key, apiKey: t.api_key || '', delta });
  return pairs;
});

export const options = {
  scenarios: {
    tenants: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || '4'),
      timeUnit: __ENV.TIME_UNIT || '1s',
      duration: __ENV.DURATION || '2m',
      preAllocatedVUs: Number(__ENV.PRE_VUS || '32'),
      maxVUs: Number(__ENV.MAX_VUS || '128'),
      gracefulStop: '60s',
    },
  },
  thresholds: commonThresholds(),
};

export function setup() {
  let pairs = [];
  for (const p of configured) pairs.push({ tenant: p.tenant, apiKey: p.apiKey, delta: p.delta });
  if (pairs.length === 0) pairs = discoverModels().map((delta) => ({ tenant: 'default', apiKey: __ENV.DELTASERVE_API_KEY || '', delta }));
  return { pairs, cdf: zipfCdf(pairs.length, ZIPF_S) };
}

export default function (data) {
  const pick = data.pairs[sampleRank(data.cdf)];
  completion(pick.delta, { apiKey: pick.apiKey, tags: { tenant: pick.tenant } });
}
