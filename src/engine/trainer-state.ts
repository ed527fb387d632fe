/**
 * What a training step takes and keeps, as data: it crosses the engine's message protocol, and the
 * job runner, checkpoints and batch planning (src/training/) build and store it without reaching
 * into the trainer itself.
 */

/** A micro-batch as the step graph takes it: [rows, seqLen] row-major, already shifted. */
export interface MicroBatch {
  inputIds: BigInt64Array;
  targetIds: Int32Array;
  /** 1 where a target exists, else 0. */
  targetMask: Float32Array;
}

export interface AdamWHyperparameters {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Global-norm clip; Infinity disables clipping. */
  maxGradNorm: number;
}

/** Parameters and AdamW moments by parameter name (the kind's, see TrainableKind.params), plus the number of steps taken. */
export interface TrainerState {
  step: number;
  params: Map<string, Float32Array>;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

/**
 * A trainer state at step 0 from starting parameters: AdamW's moments at zero, as torch.optim.AdamW
 * starts them.
 *
 * @example const state = freshTrainerState(trainable.init(arch, options, seed));
 */
export function freshTrainerState(params: Map<string, Float32Array>): TrainerState {
  const zeros = () => new Map([...params].map(([name, p]) => [name, new Float32Array(p.length)]));
  return { step: 0, params, m: zeros(), v: zeros() };
}
