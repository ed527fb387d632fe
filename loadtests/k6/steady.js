// (a) Steady load: a constant arrival rate of completions, each for a delta drawn by Zipf(ZIPF_S)
// over the server's deltas. Open model: new requests start on schedule whether or not earlier
// ones have finished, so queueing in the server shows up as latency and TTFT.
//
//   k6 run loadtests/k6/steady.js                                  # 2 req/s for 1 minute
//   k6 run -e RATE=4 -e DURATION=5m -e MAX_VUS=128 loadtests/k6/steady.js
//
// Env: DELTASERVE_URL (http://127.0.0.1:8000, loopback only), DELTASERVE_MODELS (delta names,
// most popular first; default: every delta in /v1/models), RATE (2), TIME_UNIT (1s), DURATION
// (1m), PRE_VUS (16), MAX_VUS (64), MAX_TOKENS (32), PROMPT_TOKENS (32), VOCAB (256), ZIPF_S (1.1),
// thresholds ERROR_RATE (0.01), P95_MS (30000), TTFT_P95_MS (5000).
import { commonThresholds, setupZipfModels, zipfModelCompletion } from './lib.js';

export const options = {
  scenarios: {
    steady: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || '2'),
      timeUnit: __ENV.TIME_UNIT || '1s',
      duration: __ENV.DURATION || '1m',
      preAllocatedVUs: Number(__ENV.PRE_VUS || '16'),
      maxVUs: Number(__ENV.MAX_VUS || '64'),
      gracefulStop: '60s',
    },
  },
  thresholds: commonThresholds(),
};

export function setup() {
  return setupZipfModels();
}

export default function (data) {
  zipfModelCompletion(data);
}
