import type { TypedGraph } from '../typed-graph.js';

/** Scalar graph inputs of an AdamW step; the host computes them in float64 from the schedule. */
export interface AdamWInputs {
  /** 1 - lr * weight_decay (decoupled decay, applied before the update). */
  decayFactor: string;
  oneMinusBeta1: string;
  beta2: string;
  oneMinusBeta2: string;
  eps: string;
  /** lr / (1 - beta1^t) */
  stepSize: string;
  /** sqrt(1 - beta2^t) */
  biasCorrection2Sqrt: string;
}

/**
 * One AdamW update of a parameter, with PyTorch's (non-capturable, single-tensor) arithmetic:
 *   p *= 1 - lr*wd;  m = m + (1-b1)(g - m);  v = b2 v + (1-b2) g^2
 *   p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
 *
 * @example const next = adamwUpdate(g, { param, grad, m, v }, hyper); g.output(next.param, 'new.w');
 */
export function adamwUpdate(
  g: TypedGraph,
  state: { param: string; grad: string; m: string; v: string },
  h: AdamWInputs,
): { param: string; m: string; v: string } {
  const { param, grad, m, v } = state;
  const decayed = g.apply('Mul', [param, h.decayFactor]);
  const m1 = g.apply('Add', [m, g.apply('Mul', [g.apply('Sub', [grad, m]), h.oneMinusBeta1])]);
  const v1 = g.apply('Add', [g.apply('Mul', [v, h.beta2]), g.apply('Mul', [g.apply('Mul', [grad, grad]), h.oneMinusBeta2])]);
  const denom = g.apply('Add', [g.apply('Div', [g.apply('Sqrt', [v1]), h.biasCorrection2Sqrt]), h.eps]);
  const next = g.apply('Sub', [decayed, g.apply('Mul', [g.apply('Div', [m1, denom]), h.stepSize])]);
  return { param: next, m: m1, v: v1 };
}

/**
 * Global-norm clipping as torch.nn.utils.clip_grad_norm_: the norm over all gradients, and each
 * gradient scaled by min(max_norm / (norm + 1e-6), 1). Feeding max_norm = +Infinity disables it.
 */
export function clipByGlobalNorm(g: TypedGraph, grads: string[], maxNorm: string): { clipped: string[]; norm: string } {
  const squares = grads.map((grad) => g.apply('ReduceSum', [g.apply('Mul', [grad, grad])], { keepdims: 0 }));
  const norm = g.apply('Sqrt', [squares.reduce((acc, s) => g.apply('Add', [acc, s]))]);
  const coef = g.apply('Min', [g.apply('Div', [maxNorm, g.apply('Add', [norm, g.scalar(1e-6, norm)])]), g.scalar(1, norm)]);
  return { clipped: grads.map((grad) => g.apply('Mul', [grad, coef])), norm };
}
