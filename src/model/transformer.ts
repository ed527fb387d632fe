/**
 * A decoder-only transformer's forward, written once for every family (Llama/Mistral/Qwen2 and
 * GPT-2, as ArchitectureSpec describes them) and for both graphs: the inference lowering
 * (model/lower-inference.ts: fused ORT ops, KV cache, dynamic dims) and the training lowering
 * (model/lower-training.ts: primitive ops with gradient rules, static shapes). What differs
 * between the two is a `BlockBackend`; the delta kinds' hooks (model/delta-hooks.ts) run here and
 * nowhere else, so a kind hooks into training exactly where it hooks into inference.
 *
 *   embeddings (+ hooks) (+ learned positions)
 *   per block:  h = norm(x) → q, k, v (separate, or GPT-2's fused c_attn split in three) → attention
 *               → o projection → residual (or a blockOutput hook) → norm → MLP → residual (or hook)
 *   final norm (on the rows whose logits are wanted) → LM head
 * Every linear layer runs projectionInput hooks, x Wᵀ + b, then projectionOutput hooks; every
 * norm runs the base norm, then norm hooks.
 */
import type { AttrValue } from '../graph/ir.js';
import type { ArchitectureSpec, BlockSpec, NormSpec, ProjectionSpec } from './architecture.js';
import type { DeltaHooks, HookContextBase, NormParts } from './delta-hooks.js';

/**
 * How one graph builds the parts of the forward that differ between inference and training.
 * Values are graph value names; activations are flattened tokens [T, features].
 */
export interface BlockBackend {
  /** A frozen checkpoint weight as a float32 value. */
  weight(name: string): string;
  /** One ONNX op of the default domain with a single output (Add, Mul, Sigmoid, Gemm, ...). */
  op(op: string, inputs: string[], attrs?: Record<string, AttrValue>): string;
  /** The token embeddings of the graph's input ids, [T, H]. */
  tokenEmbeddings(): string;
  /** Learned position embeddings for the tokens of `hidden` (after the embeddings hooks), [T, H]. */
  positionEmbeddings(weight: string, hidden: string): string;
  /** Called once, after the embeddings and before the first block (rotary tables and the like). */
  startBlocks(hidden: string): void;
  /** The norm with its weight (and bias). */
  norm(spec: NormSpec, x: string): string;
  /** The norm without its affine step (for norm hooks, see NormParts.normalized). */
  normalized(spec: NormSpec, x: string): string;
  /** Column blocks of x [T, sum(widths)]: GPT-2's fused qkv. */
  splitColumns(x: string, widths: number[]): string[];
  /** Causal self-attention of layer `layer` (rotary positions included), [T, heads·headDim]. */
  attention(layer: number, q: string, k: string, v: string): string;
  /** 0.5 x (1 + tanh(sqrt(2/π)(x + 0.044715 x³))), GPT-2's gelu_new. */
  geluTanh(x: string): string;
  /** The rows the LM head runs on and, when not all tokens in order, which tokens they are. */
  outputRows(hidden: string): { hidden: string; tokens?: string };
}

/**
 * The logits of the backend's tokens ([n, vocab], for `outputRows`), with `hooks` applied.
 *
 * @example const logits = decoderForward(backend, options.deltas ?? [], hookContext(b, arch, weight));
 */
export function decoderForward<C extends HookContextBase>(backend: BlockBackend, hooks: readonly DeltaHooks<C>[], ctx: C): string {
  return new Forward(backend, hooks, ctx).logits();
}

class Forward<C extends HookContextBase> {
  private readonly arch: ArchitectureSpec;

  constructor(
    private readonly be: BlockBackend,
    private readonly hooks: readonly DeltaHooks<C>[],
    private readonly ctx: C,
  ) {
    this.arch = ctx.arch;
  }

  logits(): string {
    const { be, arch } = this;
    let hidden = be.tokenEmbeddings(); // [T, H]
    for (const hook of this.hooks) if (hook.embeddings) hidden = hook.embeddings(this.ctx, hidden);
    if (arch.positions.kind === 'learned') hidden = be.op('Add', [hidden, be.positionEmbeddings(arch.positions.weight, hidden)]);
    be.startBlocks(hidden);
    arch.blocks.forEach((block, layer) => (hidden = this.block(block, layer, hidden)));
    const out = be.outputRows(hidden); // [n, H]
    const normed = this.norm(arch.finalNorm, out.hidden, out.tokens);
    return be.op('Gemm', [normed, be.weight(arch.lmHead)], { transB: 1 }); // [n, V]
  }

  private block(block: BlockSpec, layer: number, x: string): string {
    const { be } = this;
    const [q, k, v] = this.qkv(block, this.norm(block.inputNorm, x));
    const attn = be.attention(layer, q, k, v); // [T, Hq*D]
    const afterAttn = this.residual(layer, 'attention', this.linear(block.o, attn), x);
    const m = this.norm(block.postAttentionNorm, afterAttn);
    let mlpOut: string;
    if (block.mlp.kind === 'gated-silu') {
      const gate = this.linear(block.mlp.gate, m);
      const up = this.linear(block.mlp.up, m);
      mlpOut = this.linear(block.mlp.down, be.op('Mul', [be.op('Mul', [gate, be.op('Sigmoid', [gate])]), up])); // silu(gate) * up
    } else {
      mlpOut = this.linear(block.mlp.proj, be.geluTanh(this.linear(block.mlp.fc, m)));
    }
    return this.residual(layer, 'mlp', mlpOut, afterAttn);
  }

  /** Separate q/k/v projections, or GPT-2's fused c_attn split in three. */
  private qkv(block: BlockSpec, h: string): [string, string, string] {
    if ('q' in block.attention) return [this.linear(block.attention.q, h), this.linear(block.attention.k, h), this.linear(block.attention.v, h)];
    const H = this.arch.hiddenSize;
    return this.be.splitColumns(this.linear(block.attention.qkv, h), [H, H, H]) as [string, string, string];
  }

  /** A sub-block's output added to its residual, unless a delta kind owns that step (bottleneck adapters). */
  private residual(layer: number, location: 'attention' | 'mlp', output: string, residual: string): string {
    const owner = this.hooks.find((h) => h.blockOutput);
    return owner?.blockOutput ? owner.blockOutput(this.ctx, { layer, location }, output, residual) : this.be.op('Add', [residual, output]);
  }

  /**
   * The base norm, then each delta kind's norm hook (norm tuning replaces the affine step).
   * `tokens`: which flattened tokens x's rows are, when not all of them (see NormParts.tokens).
   */
  private norm(spec: NormSpec, x: string, tokens?: string): string {
    let out = this.be.norm(spec, x);
    const parts: NormParts = { spec, tokens, normalized: () => this.ctx.shared(`norm.normalized.${x}`, () => this.be.normalized(spec, x)) };
    for (const hook of this.hooks) if (hook.norm) out = hook.norm(this.ctx, parts, out);
    return out;
  }

  /** y = x Wᵀ + b on [tokens, features], with each delta kind's projection hooks around it. */
  private linear(p: ProjectionSpec, x: string): string {
    let input = x;
    for (const hook of this.hooks) if (hook.projectionInput) input = hook.projectionInput(this.ctx, p, input);
    const inputs = [input, this.be.weight(p.weight)];
    if (p.bias) inputs.push(this.be.weight(p.bias));
    let y = this.be.op('Gemm', inputs, { transB: p.layout === 'out_in' ? 1 : 0 });
    for (const hook of this.hooks) if (hook.projectionOutput) y = hook.projectionOutput(this.ctx, p, input, y);
    return y;
  }
}
