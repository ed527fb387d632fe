import type { MicroBatch } from '../engine/trainer.js';
import { epochOrder, packBatch, type TrainingExample } from './dataset.js';

/** Optimiser steps in one pass over `count` examples (the last batch may be short, as with drop_last=False). */
export function stepsPerEpoch(count: number, batchSize: number): number {
  return Math.ceil(count / batchSize);
}

/**
 * The example indices of 0-based step `step`: epoch e visits a seeded shuffle of all examples
 * in batches of `batchSize`. A pure function of (step, seed), so a job resumed from a checkpoint
 * sees exactly the batches it would have seen.
 *
 * @example stepExamples(10, 4, 7, 3) // step 3 = epoch 1's first batch
 */
export function stepExamples(count: number, batchSize: number, seed: number, step: number): number[] {
  const perEpoch = stepsPerEpoch(count, batchSize);
  const epoch = Math.floor(step / perEpoch);
  const k = step % perEpoch;
  return epochOrder(count, seed, epoch).slice(k * batchSize, (k + 1) * batchSize);
}

/**
 * A step's examples as micro-batches of exactly `rows` rows of `seqLen` tokens (the step graph's
 * fixed shape); the last is filled with padding rows that carry no targets.
 */
export function microBatches(examples: TrainingExample[], rows: number, seqLen: number, padId: number): { batches: MicroBatch[]; tokens: number } {
  const batches: MicroBatch[] = [];
  let tokens = 0;
  for (let i = 0; i < examples.length; i += rows) {
    const chunk = examples.slice(i, i + rows);
    const packed = packBatch([...chunk, ...Array.from({ length: rows - chunk.length }, () => ({ inputIds: [], labels: [] }))], seqLen, padId);
    tokens += packed.tokens;
    batches.push({ inputIds: packed.inputIds, targetIds: Int32Array.from(packed.targetIds, Number), targetMask: packed.targetMask });
  }
  return { batches, tokens };
}

/** The step graph's row length: the longest example, rounded up to a multiple of 8 (fewer distinct graphs). */
export function sequenceLength(examples: TrainingExample[], maxLength: number): number {
  const longest = Math.max(...examples.map((e) => e.inputIds.length));
  return Math.min(maxLength, Math.ceil(longest / 8) * 8);
}
