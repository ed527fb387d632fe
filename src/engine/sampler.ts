import { mulberry32 } from '../model/random.js';

export interface SamplingParams {
  /** 0 means greedy. */
  temperature: number;
  topP: number;
  /** 0 or less means no top-k cut. */
  topK: number;
  seed?: number;
}

export interface SampledToken {
  token: number;
  /** log-probability of the token under the model's (unmodified) distribution. */
  logprob: number;
  top?: { token: number; logprob: number }[];
}

/** A per-sequence sampler: its own seeded stream, so batching never changes a seeded result. */
export class Sampler {
  private readonly random: () => number;

  constructor(private readonly params: SamplingParams) {
    this.random = mulberry32(params.seed ?? Math.floor(Math.random() * 2 ** 32));
  }

  /**
   * Picks the next token from one row of logits and reports its log-probability.
   *
   * @example new Sampler({ temperature: 0, topP: 1, topK: 0 }).sample(logits, 5).token
   */
  sample(logits: Float32Array, topLogprobs = 0): SampledToken {
    const logprobs = logSoftmax(logits);
    const token = this.params.temperature <= 0 ? argmax(logits) : this.draw(logits);
    const top = topLogprobs > 0 ? topK(logprobs, topLogprobs) : undefined;
    return { token, logprob: logprobs[token]!, top };
  }

  private draw(logits: Float32Array): number {
    const { temperature, topP, topK: k } = this.params;
    let candidates = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]! || a - b);
    if (k > 0) candidates = candidates.slice(0, k);
    const max = logits[candidates[0]!]!;
    const weights = candidates.map((t) => Math.exp((logits[t]! - max) / temperature));
    const total = weights.reduce((a, b) => a + b, 0);
    let kept = candidates.length;
    if (topP < 1) {
      let mass = 0;
      kept = 0;
      while (kept < candidates.length && mass < topP * total) mass += weights[kept++]!;
    }
    const keptTotal = weights.slice(0, kept).reduce((a, b) => a + b, 0);
    let u = this.random() * keptTotal;
    for (let i = 0; i < kept; i++) {
      u -= weights[i]!;
      if (u <= 0) return candidates[i]!;
    }
    return candidates[kept - 1]!;
  }
}

export function logSoftmax(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i]! - lse;
  return out;
}

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

/** The k most likely tokens, most likely first (ties by lower id). */
export function topK(logprobs: Float64Array, k: number): { token: number; logprob: number }[] {
  const best: { token: number; logprob: number }[] = [];
  for (let t = 0; t < logprobs.length; t++) {
    const lp = logprobs[t]!;
    if (best.length === k && lp <= best[k - 1]!.logprob) continue;
    let i = best.length;
    while (i > 0 && best[i - 1]!.logprob < lp) i--;
    best.splice(i, 0, { token: t, logprob: lp });
    if (best.length > k) best.pop();
  }
  return best;
}
