/**
 * Where delta kinds act inside the transformer (model/transformer.ts). The shared block calls
 * these hook points, in the order below, for every kind that implements them, in both lowerings:
 * the inference graph (a kind's `lowering`, per-row slots) and the training step (a trainable
 * kind's `hooks`, one delta's parameters for the whole batch). Kinds live in src/deltas/kinds/
 * and never edit a lowering. Every hook works on flattened tokens ([T, features]); at inference
 * it must leave the rows that do not use the kind exactly as the base computes them, selecting
 * (not multiplying by a mask) so that nothing one row computes can reach another.
 *
 *   embeddings          token embeddings [T, H] (virtual tokens replace, or in training prepend, some)
 *   norm                a norm's output, from the normalised input and the norm's weight/bias
 *   projectionInput     a linear layer's input, before its weight (IA3 on feed-forward inputs)
 *   projectionOutput    a linear layer's output, after weight and bias (LoRA, IA3, bias tuning)
 *   blockOutput         a sub-block's output before its residual add (bottleneck adapters)
 */
import type { GraphBuilder } from '../graph/builder.js';
import type { DType, Dim } from '../graph/ir.js';
import type { TypedGraph } from '../graph/typed-graph.js';
import type { ArchitectureSpec, NormSpec, ProjectionSpec } from './architecture.js';

/** What every hook can use, whichever graph it builds. */
export interface HookContextBase {
  readonly arch: ArchitectureSpec;
  /** A checkpoint weight as a float32 graph value (an external initializer, shared with the base). */
  weight(name: string): string;
  /** A value computed once per graph under `key` (e.g. a gather shared by projections with one input). */
  shared(key: string, make: () => string): string;
}

/** The inference graph's hook context: the builder, and per-pass inputs (slot stacks, indices). */
export interface HookContext extends HookContextBase {
  readonly b: GraphBuilder;
  /** Declares a graph input once and returns it (hooks of many layers share one input). */
  input(name: string, dtype: DType, shape: Dim[]): string;
}

/**
 * The training step's hook context: a typed graph (static shapes, ops with gradient rules, so
 * autodiff differentiates whatever a hook builds from `param`), and the micro-batch's shape.
 */
export interface TrainingHookContext extends HookContextBase {
  readonly g: TypedGraph;
  /** Rows of the micro-batch and tokens per row (before any virtual tokens a hook prepends). */
  readonly rows: number;
  readonly seqLen: number;
  /** A trainable parameter, by the name the kind declared it under: a float32 graph input of its shape. */
  param(name: string): string;
}

/** The parts of a norm a hook may rebuild: the normalised input before its affine step. */
export interface NormParts {
  spec: NormSpec;
  /** (x - mean) / std, or x / rms, [T, H]: the norm without its weight and bias. */
  normalized(): string;
  /**
   * Which of the pass's flattened tokens the norm's rows are, int64 [n], when they are not all T
   * of them in order: the final norm at inference runs only on the tokens whose logits are
   * returned (after the logits_index Gather), so a hook that selects by token must gather its
   * per-token selection through this. Undefined for every other norm, and always in training.
   */
  tokens?: string;
}

/** One kind's hooks, for a context type: `DeltaLowering` at inference, `TrainingHooks` in training. */
export interface DeltaHooks<C extends HookContextBase> {
  /** Kind name, for error messages. */
  readonly kind: string;
  embeddings?(ctx: C, hidden: string): string;
  /** Returns the norm's output (baseOutput to leave it as it is). */
  norm?(ctx: C, parts: NormParts, baseOutput: string): string;
  projectionInput?(ctx: C, p: ProjectionSpec, x: string): string;
  projectionOutput?(ctx: C, p: ProjectionSpec, x: string, y: string): string;
  /** Owns a sub-block's residual add (at most one kind per graph does). */
  blockOutput?(ctx: C, where: { layer: number; location: 'attention' | 'mlp' }, output: string, residual: string): string;
}

/** A delta kind's inference hooks (per-row slots; see DeltaKind.lowering). */
export type DeltaLowering = DeltaHooks<HookContext>;

/**
 * A trainable kind's hooks in the training step. Besides the shared hook points, training has
 * one of its own: at inference prefix tuning's keys/values go into the KV cache before a row's
 * first token, while the training step has no cache and takes them in attention.
 */
export interface TrainingHooks extends DeltaHooks<TrainingHookContext> {
  /**
   * The kind's parameters named like checkpoint weights (`model.layers.0.mlp.up_proj.weight`) are
   * those weights: the step reads them wherever the forward reads the weight, in place of the
   * frozen checkpoint's (full fine-tuning, whose parameters are the whole backbone).
   */
  readonly replacesWeights?: boolean;
  /**
   * `length` key/value positions before every row's own tokens in each layer's attention, seen by
   * every query (PEFT's past_key_values for prefix tuning: not rotated; the row's own tokens then
   * take positions length, length + 1, ...). `keyValues` returns them as [length, kvHeads·headDim].
   */
  attentionPrefix?: { length: number; keyValues(ctx: TrainingHookContext, layer: number): { key: string; value: string } };
}
