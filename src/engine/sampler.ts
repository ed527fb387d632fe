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
  /** log-probability of the token under the model's (unmodified) distribution; NaN when not asked for. */
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
   * Log-probabilities cost a pass over the vocabulary, so they are computed only when asked for.
   *
   * @example new Sampler({ temperature: 0, topP: 1, topK: 0 }).sample(logits, { logprobs: true, top: 5 }).token
   */
  sample(logits: Float32Array, want: { logprobs: boolean; top: number } = { logprobs: false, top: 0 }): SampledToken {
    const token = this.params.temperature <= 0 ? argmax(logits) : this.draw(logits);
    if (!want.logprobs && want.top <= 0) return { token, logprob: NaN };
    const topLogprobs = want.top;
    const lse = logSumExp(logits, 1);
    const top = topLogprobs > 0 ? topK(logits, topLogprobs).map((t) => ({ token: t.token, logprob: t.logprob - lse })) : undefined;
    return { token, logprob: logits[token]! - lse, top };
  }

  /** Samples from softmax(logits / T) restricted to top-k and the top-p nucleus, without sorting the vocabulary. */
  private draw(logits: Float32Array): number {
    const { temperature, topP, topK: k } = this.params;
    // Shifted before dividing: a tiny temperature (5e-324 passes the API's range) sends v / T to
    // ±Infinity and Infinity - Infinity to NaN, which left no candidate (an undefined token that
    // stopped the engine's decode loop); (v - max) / T is at most 0, so weights lie in [0, 1].
    const max = logits.reduce((m, v) => (v > m ? v : m), -Infinity);
    const weights = Float64Array.from(logits, (v) => Math.exp((v - max) / temperature));
    if (k <= 0 && topP >= 1) return pick(weights, this.random());
    const candidates = k > 0 ? topK(weights, k).map((t) => t.token) : nucleusCandidates(weights, topP);
    let kept = candidates.length;
    if (topP < 1) {
      const total = k > 0 ? candidates.reduce((s, t) => s + weights[t]!, 0) : weights.reduce((a, b) => a + b, 0);
      let mass = 0;
      kept = 0;
      while (kept < candidates.length && mass < topP * total) mass += weights[candidates[kept++]!]!;
    }
    const restricted = new Float64Array(kept);
    for (let i = 0; i < kept; i++) restricted[i] = weights[candidates[i]!]!;
    return candidates[pick(restricted, this.random())]!;
  }
}

/** Index drawn with probability proportional to weights[i]. */
function pick(weights: Float64Array, u: number): number {
  let total = 0;
  for (let i = 0; i < weights.length; i++) total += weights[i]!;
  let remaining = u * total;
  for (let i = 0; i < weights.length; i++) {
    remaining -= weights[i]!;
    if (remaining <= 0) return i;
  }
  return weights.length - 1;
}

/**
 * Tokens sorted by weight that surely contain the top-p nucleus: the tokens above a small
 * fraction of the largest weight, unless their mass falls short of topP, then the whole vocabulary.
 */
function nucleusCandidates(weights: Float64Array, topP: number): number[] {
  let total = 0;
  let max = 0;
  for (const w of weights) {
    total += w;
    if (w > max) max = w;
  }
  const sortDesc = (ids: number[]) => ids.sort((a, b) => weights[b]! - weights[a]! || a - b);
  const bound = max * 1e-6;
  const large: number[] = [];
  let mass = 0;
  for (let t = 0; t < weights.length; t++) {
    if (weights[t]! >= bound) {
      large.push(t);
      mass += weights[t]!;
    }
  }
  if (mass >= topP * total) return sortDesc(large);
  return sortDesc(Array.from(weights.keys()));
}

function logSumExp(values: ArrayLike<number>, scale: number): number {
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) if (values[i]! * scale > max) max = values[i]! * scale;
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += Math.exp(values[i]! * scale - max);
  return max + Math.log(sum);
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

/** The k largest values with their indices, largest first (ties by lower index). */
export function topK(logprobs: ArrayLike<number>, k: number): { token: number; logprob: number }[] {
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
