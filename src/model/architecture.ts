/**
 * The normalised description of a decoder-only transformer, independent of the checkpoint's
 * naming. Each family file maps a Hugging Face config + tensor names onto this once; the
 * inference (and later the training) lowering reads only this.
 */
export type NormKind = 'rms' | 'layer';

/** A linear layer of one block, which deltas may target. */
export interface ProjectionSpec {
  /** Name PEFT's target_modules match against, e.g. 'q_proj' or 'c_attn'. */
  name: string;
  /** Full module path, e.g. 'model.layers.3.self_attn.q_proj'. */
  modulePath: string;
  inFeatures: number;
  outFeatures: number;
  weight: string;
  bias?: string;
  /** 'out_in' is nn.Linear's [out, in]; 'in_out' is GPT-2's Conv1D. */
  layout: 'out_in' | 'in_out';
}

export interface NormSpec {
  kind: NormKind;
  weight: string;
  bias?: string;
  eps: number;
}

export interface BlockSpec {
  inputNorm: NormSpec;
  postAttentionNorm: NormSpec;
  /** Either separate q/k/v or one fused qkv projection (GPT-2's c_attn). */
  attention: { q: ProjectionSpec; k: ProjectionSpec; v: ProjectionSpec } | { qkv: ProjectionSpec };
  o: ProjectionSpec;
  mlp: { kind: 'gated-silu'; gate: ProjectionSpec; up: ProjectionSpec; down: ProjectionSpec } | { kind: 'gelu-tanh'; fc: ProjectionSpec; proj: ProjectionSpec };
}

export type PositionSpec =
  | { kind: 'rope'; invFreq: Float64Array; attentionScaling: number }
  | { kind: 'learned'; weight: string };

/**
 * A module of the Hugging Face model object, as `model.named_modules()` lists it: what adapter
 * configs' target patterns are matched against. `linear` modules are the projections deltas
 * apply to; the output head is `head` (a linear layer PEFT's 'all-linear' leaves out).
 */
export interface NamedModule {
  path: string;
  kind: 'linear' | 'head' | 'embedding' | 'norm' | 'container' | 'activation' | 'dropout' | 'rotary';
}

export interface ArchitectureSpec {
  family: string;
  /** Every module path of the model object (see NamedModule). */
  modules: NamedModule[];
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositions: number;
  embedTokens: string;
  positions: PositionSpec;
  blocks: BlockSpec[];
  finalNorm: NormSpec;
  /** LM head weight [vocab, hidden]; the embedding when tied. */
  lmHead: string;
  /** Token ids that end generation by default. */
  eosTokenIds: number[];
  bosTokenId?: number;
}

/** Every projection of every block, in a stable order. */
export function allProjections(arch: ArchitectureSpec): ProjectionSpec[][] {
  return arch.blocks.map((block) => {
    const attn = 'qkv' in block.attention ? [block.attention.qkv] : [block.attention.q, block.attention.k, block.attention.v];
    const mlp = block.mlp.kind === 'gated-silu' ? [block.mlp.gate, block.mlp.up, block.mlp.down] : [block.mlp.fc, block.mlp.proj];
    return [...attn, block.o, ...mlp];
  });
}
