import { gradients } from '../graph/autodiff.js';
import type { AttrValue, Graph } from '../graph/ir.js';
import { adamwUpdate, clipByGlobalNorm, type AdamWInputs } from '../graph/optim/adamw.js';
import { TypedGraph } from '../graph/typed-graph.js';
import type { ArchitectureSpec, NormSpec } from './architecture.js';
import type { Checkpoint } from './checkpoint.js';
import type { TrainingHookContext, TrainingHooks } from './delta-hooks.js';
import { ropeTables } from './rope.js';
import { decoderForward, type BlockBackend } from './transformer.js';
import { frozenWeights } from './weight-data.js';

/**
 * Lowers an architecture to ONE training-step graph for a delta kind: the shared forward
 * (model/transformer.ts) with this file's backend — primitive ops that have gradient rules,
 * static shapes, causal attention over the micro-batch — over `rows` x `seqLen` tokens
 * (right-padded), with the kind's training hooks applied to its parameters; then the Hugging Face
 * causal-LM loss, gradients for those parameters only (the backbone stays frozen external
 * initializers shared with inference, except the weights a kind whose hooks set `replacesWeights`
 * trains: those are its parameters), global-norm clipping and AdamW.
 *
 * Interface (names in TRAINING_IO):
 *   input_ids       int64 [rows, seqLen]
 *   target_ids      int32 [rows, seqLen]   the next token at each position (already shifted)
 *   target_weights  f32   [rows, seqLen]   1 / (targets in the whole batch) where a target exists, else 0
 *   per parameter P (the kind's names, e.g. `<module>.lora_A.weight`, any shape):
 *     param.P, adam_m.P, adam_v.P, grad_acc.P (gradients of earlier micro-batches of this step)
 *   scalars: the AdamW inputs and max_grad_norm (+Infinity: no clipping)
 * Outputs: loss (this micro-batch's share of the batch mean), grad_norm (before clipping, of the
 * accumulated gradient), grad_sum.P, and new_param.P / new_adam_m.P / new_adam_v.P, which the
 * trainer keeps after the last micro-batch of a step.
 */
export interface TrainingGraphOptions {
  weightFile: (file: string) => string;
  rows: number;
  seqLen: number;
  /** The trainable tensors, in the order the trainer feeds them. */
  params: readonly TrainableParam[];
  /** The kind's math on its parameters (see TrainingHooks). */
  hooks: TrainingHooks;
}

/** One trainable tensor: its name (PEFT's key without the `base_model.model.` prefix) and shape. */
export interface TrainableParam {
  name: string;
  shape: number[];
}

export const TRAINING_IO = {
  inputIds: 'input_ids',
  targetIds: 'target_ids',
  targetWeights: 'target_weights',
  maxGradNorm: 'max_grad_norm',
  loss: 'loss',
  gradNorm: 'grad_norm',
  adamw: {
    decayFactor: 'decay_factor',
    oneMinusBeta1: 'one_minus_beta1',
    beta2: 'beta2',
    oneMinusBeta2: 'one_minus_beta2',
    eps: 'eps',
    stepSize: 'step_size',
    biasCorrection2Sqrt: 'bias_correction2_sqrt',
  } satisfies AdamWInputs,
} as const;

/**
 * The training-step graph for a checkpoint and a kind's parameters and hooks.
 *
 * @example const graph = lowerTrainingGraph(ckpt, { weightFile, rows: 2, seqLen: 16, params, hooks: trainable.hooks(ckpt.arch, options) });
 */
export function lowerTrainingGraph(ckpt: Checkpoint, options: TrainingGraphOptions): Graph {
  const { rows, seqLen, hooks } = options;
  const g = new TypedGraph('deltaserve_training_step');
  const IO = TRAINING_IO;
  const frozen = frozenWeights(ckpt, options.weightFile, { initializer: (name, data) => g.initializer(name, data), castToFloat32: (value) => g.apply('Cast', [value], { to: 1 }) });
  const ids = g.input(IO.inputIds, 'int64', [rows, seqLen]);
  const targets = g.input(IO.targetIds, 'int32', [rows, seqLen]);
  const targetWeights = g.input(IO.targetWeights, 'float32', [rows, seqLen]);
  const params = options.params.map((p) => g.input(`param.${p.name}`, 'float32', p.shape));
  const byName = new Map(options.params.map((p, i) => [p.name, params[i]!]));
  // Full fine-tuning: the weights it trains are graph inputs fed from the trainer's state, not the checkpoint's.
  const weight = hooks.replacesWeights ? (name: string) => byName.get(name) ?? frozen(name) : frozen;
  const ctx = trainingContext(g, ckpt.arch, weight, { rows, seqLen }, byName);
  const prefix = hooks.attentionPrefix && { length: hooks.attentionPrefix.length, keyValues: (layer: number) => hooks.attentionPrefix!.keyValues(ctx, layer) };
  const backend = new TrainingBackend(g, ckpt.arch, weight, { rows, seqLen, ids, prefix });
  const loss = crossEntropy(g, decoderForward(backend, [hooks], ctx), targets, targetWeights);
  g.output(loss, IO.loss);
  const grads = gradients(g, loss, params);
  optimizer(g, options.params, params, params.map((p) => grads.get(p)!));
  return g.build();
}

/** The hooks' view of the step graph: parameters by name, values shared by key. */
function trainingContext(g: TypedGraph, arch: ArchitectureSpec, weight: (name: string) => string, shape: { rows: number; seqLen: number }, params: ReadonlyMap<string, string>): TrainingHookContext {
  const shared = new Map<string, string>();
  return {
    g,
    arch,
    weight,
    ...shape,
    param(name) {
      const value = params.get(name);
      if (!value) throw new Error(`the training graph has no parameter ${name} (it has ${[...params.keys()].slice(0, 8).join(', ')}${params.size > 8 ? ', ...' : ''})`);
      return value;
    },
    shared(key, make) {
      let value = shared.get(key);
      if (!value) shared.set(key, (value = make()));
      return value;
    },
  };
}

/** Accumulates this micro-batch's gradients onto earlier ones, clips, and applies AdamW. */
function optimizer(g: TypedGraph, specs: readonly TrainableParam[], params: string[], grads: string[]): void {
  const hyper = Object.fromEntries(Object.entries(TRAINING_IO.adamw).map(([k, name]) => [k, g.input(name, 'float32', [])])) as unknown as AdamWInputs;
  const maxNorm = g.input(TRAINING_IO.maxGradNorm, 'float32', []);
  const totals = specs.map((p, i) => g.apply('Add', [g.input(`grad_acc.${p.name}`, 'float32', p.shape), grads[i]!]));
  const { clipped, norm } = clipByGlobalNorm(g, totals, maxNorm);
  g.output(norm, TRAINING_IO.gradNorm);
  specs.forEach((p, i) => {
    g.output(totals[i]!, `grad_sum.${p.name}`);
    const m = g.input(`adam_m.${p.name}`, 'float32', p.shape);
    const v = g.input(`adam_v.${p.name}`, 'float32', p.shape);
    const next = adamwUpdate(g, { param: params[i]!, grad: clipped[i]!, m, v }, hyper);
    g.output(next.param, `new_param.${p.name}`);
    g.output(next.m, `new_adam_m.${p.name}`);
    g.output(next.v, `new_adam_v.${p.name}`);
  });
}

/**
 * sum over tokens of weight * (logsumexp(logits) - logits[target]); with weights 1/count this is
 * the mean over labelled tokens. The target logit is picked with a one-hot product, and the
 * logsumexp is built from Exp/Log/ReduceSum: LogSoftmax and the loss ops fall back to CPU on WebGPU.
 */
function crossEntropy(g: TypedGraph, logits: string, targets: string, weights: string): string {
  const [n, vocabSize] = g.shape(logits) as [number, number];
  const max = g.detach(g.apply('ReduceMax', [logits], { axes: [1], keepdims: 1 })); // [N, 1]
  const shifted = g.apply('Sub', [logits, max]);
  const logSumExp = g.apply('Log', [g.apply('ReduceSum', [g.apply('Exp', [shifted]), g.ints([1])], { keepdims: 1 })]);
  const vocab = g.constant('int32', [1, vocabSize], Array.from({ length: vocabSize }, (_, i) => i));
  const oneHot = g.apply('Cast', [g.apply('Equal', [g.apply('Reshape', [targets, g.ints([n, 1])]), vocab])], { to: 1 }); // [N, V]
  const picked = g.apply('ReduceSum', [g.apply('Mul', [shifted, oneHot]), g.ints([1])], { keepdims: 1 });
  const nll = g.apply('Sub', [logSumExp, picked]); // [N, 1]
  return g.apply('ReduceSum', [g.apply('Mul', [nll, g.apply('Reshape', [weights, g.ints([n, 1])])])], { keepdims: 0 });
}

interface TrainingShape {
  rows: number;
  seqLen: number;
  ids: string;
  /** Prefix keys/values every query sees (see TrainingHooks.attentionPrefix). */
  prefix?: { length: number; keyValues(layer: number): { key: string; value: string } };
}

/**
 * The training half of the shared block, from primitive differentiable ops, as transformers'
 * eager path computes it. The blocks run on `rows` x `seq` tokens, where seq is seqLen plus the
 * virtual tokens an embeddings hook may prepend to every row (prompt tuning); the LM head then
 * runs on each row's last seqLen tokens, the ones the targets are for.
 */
class TrainingBackend implements BlockBackend {
  private seq: number;
  private readonly offset: number;
  private rope?: { cos: string; sin: string };
  private mask?: string;
  private readonly normalizedOf = new Map<string, string>();

  constructor(
    private readonly g: TypedGraph,
    private readonly arch: ArchitectureSpec,
    readonly weight: (name: string) => string,
    private readonly shape: TrainingShape,
  ) {
    this.seq = shape.seqLen;
    this.offset = shape.prefix?.length ?? 0;
  }

  op(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}): string {
    return this.g.apply(op, inputs, attrs);
  }

  tokenEmbeddings(): string {
    const { g, arch, shape } = this;
    return g.apply('Reshape', [g.apply('Gather', [this.weight(arch.embedTokens), shape.ids]), g.ints([shape.rows * shape.seqLen, arch.hiddenSize])]); // [N, H]
  }

  /** Rows of the position table for positions offset .. offset + seq - 1 of every row, [N, H]. */
  positionEmbeddings(weight: string, hidden: string): string {
    const seq = this.sequence(hidden);
    const positions = Array.from({ length: this.shape.rows * seq }, (_, i) => this.offset + (i % seq));
    return this.g.apply('Gather', [this.weight(weight), this.g.constant('int64', [positions.length], positions)]);
  }

  startBlocks(hidden: string): void {
    this.sequence(hidden);
    if (this.arch.positions.kind === 'rope') this.rope = this.ropeTables();
  }

  /** RMSNorm x / sqrt(mean(x^2) + eps) * w, or LayerNorm (x - mean) / sqrt(var + eps) * w + b (biased variance, as PyTorch). */
  norm(spec: NormSpec, x: string): string {
    const scaled = this.g.apply('Mul', [this.normalized(spec, x), this.weight(spec.weight)]);
    return spec.bias ? this.g.apply('Add', [scaled, this.weight(spec.bias)]) : scaled;
  }

  normalized(spec: NormSpec, x: string): string {
    const { g } = this;
    const known = this.normalizedOf.get(x);
    if (known) return known;
    const centred = spec.kind === 'layer' ? g.apply('Sub', [x, g.apply('ReduceMean', [x], { axes: [-1], keepdims: 1 })]) : x;
    const meanSquare = g.apply('ReduceMean', [g.apply('Mul', [centred, centred])], { axes: [-1], keepdims: 1 });
    const normed = g.apply('Div', [centred, g.apply('Sqrt', [g.apply('Add', [meanSquare, g.scalar(spec.eps, x)])])]);
    this.normalizedOf.set(x, normed);
    return normed;
  }

  splitColumns(x: string, widths: number[]): string[] {
    const { g } = this;
    let start = 0;
    return widths.map((w) => g.apply('Slice', [x, g.ints([start]), g.ints([(start += w)]), g.ints([1])]));
  }

  /** 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), GPT-2's gelu_new (ORT's FastGelu at inference). */
  geluTanh(x: string): string {
    const { g } = this;
    const cube = g.apply('Mul', [g.apply('Mul', [x, x]), x]);
    const inner = g.apply('Mul', [g.apply('Add', [x, g.apply('Mul', [cube, g.scalar(0.044715, x)])]), g.scalar(Math.sqrt(2 / Math.PI), x)]);
    return g.apply('Mul', [g.apply('Mul', [x, g.scalar(0.5, x)]), g.apply('Add', [g.scalar(1, x), g.apply('Tanh', [inner])])]);
  }

  /** Each row's last seqLen tokens (all of them unless virtual tokens were prepended). */
  outputRows(hidden: string): { hidden: string } {
    const { g, shape, seq } = this;
    if (seq === shape.seqLen) return { hidden };
    const H = this.arch.hiddenSize;
    const perRow = g.apply('Reshape', [hidden, g.ints([shape.rows, seq, H])]);
    const own = g.apply('Slice', [perRow, g.ints([seq - shape.seqLen]), g.ints([seq]), g.ints([1])]); // [rows, seqLen, H]
    return { hidden: g.apply('Reshape', [own, g.ints([shape.rows * shape.seqLen, H])]) };
  }

  /** Causal self-attention with rotary positions and grouped key/value heads, as transformers' eager path. */
  attention(layer: number, qFlat: string, kFlat: string, vFlat: string): string {
    const { g, arch } = this;
    const D = arch.headDim;
    const q = this.rotate(this.heads(qFlat, arch.numHeads));
    const prefix = this.shape.prefix?.keyValues(layer);
    const k = this.repeatKv(this.withPrefix(prefix?.key, this.rotate(this.heads(kFlat, arch.numKvHeads))));
    const v = this.repeatKv(this.withPrefix(prefix?.value, this.heads(vFlat, arch.numKvHeads)));
    const scores = g.apply('Mul', [g.apply('MatMul', [q, g.apply('Transpose', [k], { perm: [0, 1, 3, 2] })]), g.scalar(1 / Math.sqrt(D), q)]); // [B, Hq, T, P+T]
    const probs = g.apply('Softmax', [g.apply('Add', [scores, this.causalMask()])], { axis: -1 });
    const out = g.apply('Transpose', [g.apply('MatMul', [probs, v])], { perm: [0, 2, 1, 3] }); // [B, T, Hq, D]
    return g.apply('Reshape', [out, g.ints([this.shape.rows * this.seq, arch.numHeads * D])]);
  }

  /** Tokens per row in the blocks, fixed by the embeddings (after hooks): [rows * seq, H]. */
  private sequence(hidden: string): number {
    const tokens = this.g.shape(hidden)[0]!;
    const seq = tokens / this.shape.rows;
    if (!Number.isInteger(seq) || seq < this.shape.seqLen) throw new Error(`the embeddings hooks left ${tokens} tokens for ${this.shape.rows} rows of at least ${this.shape.seqLen}`);
    this.seq = seq;
    return seq;
  }

  /** [B*T, count*D] -> [B, count, T, D] */
  private heads(t: string, count: number): string {
    const { g } = this;
    return g.apply('Transpose', [g.apply('Reshape', [t, g.ints([this.shape.rows, this.seq, count, this.arch.headDim])])], { perm: [0, 2, 1, 3] });
  }

  /** The prefix's [P, Hkv*D] keys (or values), the same for every row, before the row's own: [B, Hkv, P+T, D]. */
  private withPrefix(prefix: string | undefined, own: string): string {
    if (!prefix) return own;
    const { g, arch } = this;
    const P = this.offset;
    const heads = g.apply('Transpose', [g.apply('Reshape', [prefix, g.ints([1, P, arch.numKvHeads, arch.headDim])])], { perm: [0, 2, 1, 3] }); // [1, Hkv, P, D]
    const rows = g.apply('Expand', [heads, g.ints([this.shape.rows, arch.numKvHeads, P, arch.headDim])]);
    return g.apply('Concat', [rows, own], { axis: 2 });
  }

  /** x * cos + rotate_half(x) * sin, with rotate_half(x) = [-x2, x1] (identity without rotary positions). */
  private rotate(x: string): string {
    const { g } = this;
    if (!this.rope) return x;
    const half = this.arch.headDim / 2;
    const first = g.apply('Slice', [x, g.ints([0]), g.ints([half]), g.ints([-1])]);
    const second = g.apply('Slice', [x, g.ints([half]), g.ints([2 * half]), g.ints([-1])]);
    const rotated = g.apply('Concat', [g.apply('Neg', [second]), first], { axis: -1 });
    return g.apply('Add', [g.apply('Mul', [x, this.rope.cos]), g.apply('Mul', [rotated, this.rope.sin])]);
  }

  /** [B, Hkv, L, D] -> [B, Hq, L, D], each key/value head serving numHeads/numKvHeads query heads. */
  private repeatKv(x: string): string {
    const { g, arch } = this;
    const repeat = arch.numHeads / arch.numKvHeads;
    if (repeat === 1) return x;
    const L = g.shape(x)[2]!;
    const expanded = g.apply('Expand', [g.apply('Unsqueeze', [x, g.ints([2])]), g.ints([this.shape.rows, arch.numKvHeads, repeat, L, arch.headDim])]);
    return g.apply('Reshape', [expanded, g.ints([this.shape.rows, arch.numHeads, L, arch.headDim])]);
  }

  /** [T, P+T]: query t sees every prefix position and its own positions up to t. */
  private causalMask(): string {
    if (this.mask) return this.mask;
    const [T, P] = [this.seq, this.offset];
    const width = P + T;
    this.mask = this.g.constant('float32', [T, width], Array.from({ length: T * width }, (_, i) => ((i % width) - P > Math.floor(i / width) ? -1e30 : 0)));
    return this.mask;
  }

  /** Full-width cos/sin [T, D] for positions offset .. offset + T - 1 (both halves share a frequency). */
  private ropeTables(): { cos: string; sin: string } {
    const { arch, g, seq, offset } = this;
    if (arch.positions.kind !== 'rope') throw new Error('rotary tables for a model without rotary positions');
    const half = arch.headDim / 2;
    const { cos, sin } = ropeTables(arch.positions.invFreq, offset + seq, arch.positions.attentionScaling);
    const full = (table: Float32Array) => Array.from({ length: seq * 2 * half }, (_, i) => table[(offset + Math.floor(i / (2 * half))) * half + (i % half)]!);
    return { cos: g.constant('float32', [seq, 2 * half], full(cos)), sin: g.constant('float32', [seq, 2 * half], full(sin)) };
  }
}
