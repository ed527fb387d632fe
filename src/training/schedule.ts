export type LrSchedulerKind = 'constant' | 'linear' | 'cosine';

/**
 * The learning rate of 0-based optimiser step `step`, as transformers' schedulers
 * (get_constant_schedule_with_warmup, get_linear_schedule_with_warmup,
 * get_cosine_schedule_with_warmup): a linear warmup from 0 over `warmup` steps, then constant,
 * linear decay to 0 at `total`, or a half cosine to 0 at `total`.
 *
 * @example learningRate({ base: 1e-3, step: 0, total: 100, warmup: 10, kind: 'linear' }) // 0
 */
export function learningRate(o: { base: number; step: number; total: number; warmup: number; kind: LrSchedulerKind }): number {
  if (o.step < o.warmup) return (o.base * o.step) / Math.max(1, o.warmup);
  if (o.kind === 'constant') return o.base;
  const progress = (o.step - o.warmup) / Math.max(1, o.total - o.warmup);
  if (o.kind === 'linear') return o.base * Math.max(0, 1 - progress);
  return o.base * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}
