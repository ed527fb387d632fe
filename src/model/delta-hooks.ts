/**
 * Where delta kinds act inside the inference graph. The lowering calls these hook points, in the
 * order below, for every kind that implements them; kinds live in src/deltas/kinds/ and never
 * edit the lowering itself. Every hook works on the pass's flattened tokens ([T, features]) and
 * must leave the rows that do not use the kind exactly as the base computes them, selecting (not
 * multiplying by a mask) so that nothing one row computes can reach another.
 *
 *   embeddings          token embeddings [T, H] (virtual tokens replace some of them)
 *   norm                a norm's output, from the normalised input and the norm's weight/bias
 *   projectionInput     a linear layer's input, before its weight (IA3 on feed-forward inputs)
 *   projectionOutput    a linear layer's output, after weight and bias (LoRA, IA3, bias tuning)
 *   blockOutput         a sub-block's output before its residual add (bottleneck adapters)
 */
import type { GraphBuilder } from '../graph/builder.js';
import type { DType, Dim } from '../graph/ir.js';
import type { ArchitectureSpec, NormSpec, ProjectionSpec } from './architecture.js';

/** What a hook can use: the builder, the architecture, frozen weights, and shared per-graph values. */
export interface HookContext {
  readonly b: GraphBuilder;
  readonly arch: ArchitectureSpec;
  /** A checkpoint weight as a float32 graph value (an external initializer, shared with the base). */
  weight(name: string): string;
  /** Declares a graph input once and returns it (hooks of many layers share one input). */
  input(name: string, dtype: DType, shape: Dim[]): string;
  /** A value computed once per graph under `key` (e.g. a gather shared by projections with one input). */
  shared(key: string, make: () => string): string;
}

/** The parts of a norm a hook may rebuild: the normalised input before its affine step. */
export interface NormParts {
  spec: NormSpec;
  /** (x - mean) / std, or x / rms, [T, H]: the norm without its weight and bias. */
  normalized(): string;
  /**
   * Which of the pass's flattened tokens the norm's rows are, int64 [n], when they are not all T
   * of them in order: the final norm runs only on the tokens whose logits are returned (after the
   * logits_index Gather), so a hook that selects by token must gather its per-token selection
   * through this. Undefined for every other norm (rows = tokens [T]).
   */
  tokens?: string;
}

export interface DeltaLowering {
  /** Kind name, for error messages. */
  readonly kind: string;
  embeddings?(ctx: HookContext, hidden: string): string;
  /** Returns the norm's output, or undefined to leave the base norm as it is. */
  norm?(ctx: HookContext, parts: NormParts, baseOutput: string): string;
  projectionInput?(ctx: HookContext, p: ProjectionSpec, x: string): string;
  projectionOutput?(ctx: HookContext, p: ProjectionSpec, x: string, y: string): string;
  blockOutput?(ctx: HookContext, where: { layer: number; location: 'attention' | 'mlp' }, output: string, residual: string): string;
}
