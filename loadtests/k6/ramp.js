// (b) Ramp: the arrival rate climbs from START_RATE to PEAK_RATE, holds, then drains, to find
// where latency and TTFT start to climb (and whether the server sheds load with 429s rather than
// failing). Deltas are drawn by Zipf(ZIPF_S) over the server's deltas.
//
//   k6 run loadtests/k6/ramp.js                                     # 1 → 8 req/s over ~3 minutes
//   k6 run -e PEAK_RATE=16 -e RAMP=2m -e HOLD=2m -e MAX_VUS=256 loadtests/k6/ramp.js
//
// Env: DELTASERVE_URL (http://127.0.0.1:8000, loopback only), DELTASERVE_MODELS, START_RATE (1),
// PEAK_RATE (8), RAMP (1m), HOLD (1m), DRAIN (30s), PRE_VUS (16), MAX_VUS (128), MAX_TOKENS (32),
// PROMPT_TOKENS (32), VOCAB (256), ZIPF_S (1.1), thresholds ERROR_RATE, P95_MS, TTFT_P95_MS.
import { commonThresholds, setupZipfModels, zipfModelCompletion } from './lib.js';

const peak = Number(__ENV.PEAK_RATE || '8');

export const options = {
  scenarios: {
    ramp: {
      executor: 'ramping-arrival-rate',
      startRate: Number(__ENV.START_RATE || '1'),
      timeUnit: '1s',
      preAllocatedVUs: Number(__ENV.PRE_VUS || '16'),
      maxVUs: Number(__ENV.MAX_VUS || '128'),
      stages: [
        { target: peak, duration: __ENV.RAMP || '1m' },
        { target: peak, duration: __ENV.HOLD || '1m' },
        { target: 0, duration: __ENV.DRAIN || '30s' },
      ],
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
