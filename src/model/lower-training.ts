import { gradients } from '../graph/autodiff.js';
import type { Graph } from '../graph/ir.js';
import { adamwUpdate, clipByGlobalNorm, type AdamWInputs } from '../graph/optim/adamw.js';
import { TypedGraph } from '../graph/typed-graph.js';
import { allProjections, type ArchitectureSpec, type BlockSpec, type NormSpec, type ProjectionSpec } from './architecture.js';
import type { Checkpoint } from './checkpoint.js';
import { ropeTables } from './rope.js';
import { frozenWeights } from './weight-data.js';

/**
 * Lowers an architecture (Llama/Mistral/Qwen2 or GPT-2, from the same description inference
 * uses) to ONE LoRA training-step graph built from primitive ops that have
 * gradient rules: forward over `rows` x `seqLen` tokens (causal, right-padded), the Hugging Face
 * causal-LM loss, gradients for the LoRA parameters only (the backbone stays frozen external
 * initializers shared with inference), global-norm clipping and AdamW.
 *
 * Interface (names in TRAINING_IO):
 *   input_ids       int64 [rows, seqLen]
 *   target_ids      int32 [rows, seqLen]   the next token at each position (already shifted)
 *   target_weights  f32   [rows, seqLen]   1 / (targets in the whole batch) where a target exists, else 0
 *   per parameter P (`<module>.lora_A` [r, in], `<module>.lora_B` [out, r]):
 *     param.P, adam_m.P, adam_v.P, grad_acc.P (gradients of earlier micro-batches of this step)
 *   scalars: the AdamW inputs and max_grad_norm (+Infinity: no clipping)
 * Outputs: loss (this micro-batch's share of the batch mean), grad_norm (before clipping, of the
 * accumulated gradient), grad_sum.P, and new_param.P / new_adam_m.P / new_adam_v.P, which the
 * trainer keeps after the last micro-batch of a step.
 */
export interface LoraTrainingSpec {
  rank: number;
  alpha: number;
  useRslora: boolean;
  /** Module paths carrying LoRA, e.g. model.layers.0.self_attn.q_proj. */
  modules: string[];
}

export interface TrainingGraphOptions {
  weightFile: (file: string) => string;
  rows: number;
  seqLen: number;
  lora: LoraTrainingSpec;
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

/** One trainable tensor: its name (PEFT's key without the `base_model.model.` prefix and `.weight`) and shape. */
export interface TrainableParam {
  name: string;
  module: string;
  matrix: 'lora_A' | 'lora_B';
  shape: [number, number];
}

/** The trainable tensors of a LoRA spec, in a stable order. Throws on an unknown module. */
export function trainableParams(arch: ArchitectureSpec, lora: LoraTrainingSpec): TrainableParam[] {
  const projections = new Map(allProjections(arch).flat().map((p) => [p.modulePath, p]));
  return lora.modules.flatMap((module) => {
    const p = projections.get(module);
    if (!p) throw new Error(`no projection ${module} in the backbone`);
    return [
      { name: `${module}.lora_A`, module, matrix: 'lora_A', shape: [lora.rank, p.inFeatures] },
      { name: `${module}.lora_B`, module, matrix: 'lora_B', shape: [p.outFeatures, lora.rank] },
    ] satisfies TrainableParam[];
  });
}

const TRAINABLE_MLPS: ReadonlySet<string> = new Set(['gated-silu', 'gelu-tanh']);

/** Why this backbone cannot be trained here, or null when it can (every family the engine serves today). */
export function trainingUnsupported(arch: ArchitectureSpec): string | null {
  const unknown = arch.blocks.find((b) => !TRAINABLE_MLPS.has(b.mlp.kind));
  return unknown ? `training has no lowering for ${arch.family}'s ${unknown.mlp.kind} MLP` : null;
}

export function loraScale(lora: Pick<LoraTrainingSpec, 'rank' | 'alpha' | 'useRslora'>): number {
  return lora.useRslora ? lora.alpha / Math.sqrt(lora.rank) : lora.alpha / lora.rank;
}

export function lowerTrainingGraph(ckpt: Checkpoint, options: TrainingGraphOptions): Graph {
  return new TrainingLowering(ckpt, options).build();
}

class TrainingLowering {
  private readonly g = new TypedGraph('deltaserve_training_step');
  private readonly arch: ArchitectureSpec;
  /** A frozen weight as a float32 value (see frozenWeights). */
  private readonly weight: (name: string) => string;
  private readonly lora = new Map<string, { a: string; b: string }>();
  private readonly params: TrainableParam[];
  private rope?: { cos: string; sin: string };

  constructor(ckpt: Checkpoint, private readonly options: TrainingGraphOptions) {
    this.arch = ckpt.arch;
    this.weight = frozenWeights(ckpt, options.weightFile, { initializer: (name, data) => this.g.initializer(name, data), castToFloat32: (value) => this.g.apply('Cast', [value], { to: 1 }) });
    const unsupported = trainingUnsupported(this.arch);
    if (unsupported) throw new Error(unsupported);
    this.params = trainableParams(this.arch, options.lora);
  }

  build(): Graph {
    const { g, arch, options } = this;
    const { rows, seqLen } = options;
    const IO = TRAINING_IO;
    const ids = g.input(IO.inputIds, 'int64', [rows, seqLen]);
    const targets = g.input(IO.targetIds, 'int32', [rows, seqLen]);
    const weights = g.input(IO.targetWeights, 'float32', [rows, seqLen]);
    const paramInputs = this.params.map((p) => g.input(`param.${p.name}`, 'float32', p.shape));
    this.params.forEach((p, i) => {
      const entry = this.lora.get(p.module) ?? { a: '', b: '' };
      entry[p.matrix === 'lora_A' ? 'a' : 'b'] = paramInputs[i]!;
      this.lora.set(p.module, entry);
    });
    this.rope = arch.positions.kind === 'rope' ? this.ropeTables() : undefined;

    let embedded = g.apply('Gather', [this.weight(arch.embedTokens), ids]); // [B, T, H]
    if (arch.positions.kind === 'learned') {
      const positions = g.constant('int64', [seqLen], Array.from({ length: seqLen }, (_, t) => t));
      embedded = g.apply('Add', [embedded, g.apply('Gather', [this.weight(arch.positions.weight), positions])]); // + [T, H]
    }
    let hidden = g.apply('Reshape', [embedded, g.ints([rows * seqLen, arch.hiddenSize])]); // [N, H]
    for (const block of arch.blocks) hidden = this.block(block, hidden);
    const logits = g.apply('Gemm', [this.norm(arch.finalNorm, hidden), this.weight(arch.lmHead)], { transB: 1 }); // [N, V]
    const loss = this.crossEntropy(logits, targets, weights);
    g.output(loss, IO.loss);

    const grads = gradients(g, loss, paramInputs);
    this.optimizer(paramInputs, paramInputs.map((p) => grads.get(p)!));
    return g.build();
  }

  /** Accumulates this micro-batch's gradients onto earlier ones, clips, and applies AdamW. */
  private optimizer(params: string[], grads: string[]): void {
    const { g } = this;
    const hyper = Object.fromEntries(Object.entries(TRAINING_IO.adamw).map(([k, name]) => [k, g.input(name, 'float32', [])])) as unknown as AdamWInputs;
    const maxNorm = g.input(TRAINING_IO.maxGradNorm, 'float32', []);
    const totals = this.params.map((p, i) => g.apply('Add', [g.input(`grad_acc.${p.name}`, 'float32', p.shape), grads[i]!]));
    const { clipped, norm } = clipByGlobalNorm(g, totals, maxNorm);
    g.output(norm, TRAINING_IO.gradNorm);
    this.params.forEach((p, i) => {
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
  private crossEntropy(logits: string, targets: string, weights: string): string {
    const { g, arch } = this;
    const n = g.shape(logits)[0]!;
    const max = g.detach(g.apply('ReduceMax', [logits], { axes: [1], keepdims: 1 })); // [N, 1]
    const shifted = g.apply('Sub', [logits, max]);
    const logSumExp = g.apply('Log', [g.apply('ReduceSum', [g.apply('Exp', [shifted]), g.ints([1])], { keepdims: 1 })]);
    const vocab = g.constant('int32', [1, arch.vocabSize], Array.from({ length: arch.vocabSize }, (_, i) => i));
    const oneHot = g.apply('Cast', [g.apply('Equal', [g.apply('Reshape', [targets, g.ints([n, 1])]), vocab])], { to: 1 }); // [N, V]
    const picked = g.apply('ReduceSum', [g.apply('Mul', [shifted, oneHot]), g.ints([1])], { keepdims: 1 });
    const nll = g.apply('Sub', [logSumExp, picked]); // [N, 1]
    return g.apply('ReduceSum', [g.apply('Mul', [nll, g.apply('Reshape', [weights, g.ints([n, 1])])])], { keepdims: 0 });
  }

  private block(block: BlockSpec, x: string): string {
    const { g } = this;
    const afterAttn = g.apply('Add', [x, this.linear(block.o, this.attention(block, this.norm(block.inputNorm, x)))]);
    const m = this.norm(block.postAttentionNorm, afterAttn);
    if (block.mlp.kind === 'gelu-tanh') return g.apply('Add', [afterAttn, this.linear(block.mlp.proj, this.geluTanh(this.linear(block.mlp.fc, m)))]);
    const gate = this.linear(block.mlp.gate, m);
    const act = g.apply('Mul', [g.apply('Mul', [gate, g.apply('Sigmoid', [gate])]), this.linear(block.mlp.up, m)]);
    return g.apply('Add', [afterAttn, this.linear(block.mlp.down, act)]);
  }

  /** 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), GPT-2's gelu_new (ORT's FastGelu at inference). */
  private geluTanh(x: string): string {
    const { g } = this;
    const cube = g.apply('Mul', [g.apply('Mul', [x, x]), x]);
    const inner = g.apply('Mul', [g.apply('Add', [x, g.apply('Mul', [cube, g.scalar(0.044715, x)])]), g.scalar(Math.sqrt(2 / Math.PI), x)]);
    return g.apply('Mul', [g.apply('Mul', [x, g.scalar(0.5, x)]), g.apply('Add', [g.scalar(1, x), g.apply('Tanh', [inner])])]);
  }

  /** Causal self-attention with rotary positions and grouped key/value heads, as transformers' eager path. */
  private attention(block: BlockSpec, h: string): string {
    const { g, arch, options } = this;
    const { rows, seqLen } = options;
    const D = arch.headDim;
    const heads = (t: string, count: number) =>
      g.apply('Transpose', [g.apply('Reshape', [t, g.ints([rows, seqLen, count, D])])], { perm: [0, 2, 1, 3] }); // [B, heads, T, D]
    const [qFlat, kFlat, vFlat] = this.qkv(block, h);
    const q = this.rotate(heads(qFlat, arch.numHeads));
    const k = this.repeatKv(this.rotate(heads(kFlat, arch.numKvHeads)));
    const v = this.repeatKv(heads(vFlat, arch.numKvHeads));
    const scores = g.apply('Mul', [g.apply('MatMul', [q, g.apply('Transpose', [k], { perm: [0, 1, 3, 2] })]), g.scalar(1 / Math.sqrt(D), q)]); // [B, Hq, T, T]
    const probs = g.apply('Softmax', [g.apply('Add', [scores, this.causalMask()])], { axis: -1 });
    const out = g.apply('Transpose', [g.apply('MatMul', [probs, v])], { perm: [0, 2, 1, 3] }); // [B, T, Hq, D]
    return g.apply('Reshape', [out, g.ints([rows * seqLen, arch.numHeads * D])]);
  }

  /** Separate q/k/v projections, or GPT-2's fused c_attn sliced in three. */
  private qkv(block: BlockSpec, h: string): [string, string, string] {
    const { g, arch } = this;
    if ('q' in block.attention) return [this.linear(block.attention.q, h), this.linear(block.attention.k, h), this.linear(block.attention.v, h)];
    const fused = this.linear(block.attention.qkv, h); // [N, 3H]
    const H = arch.hiddenSize;
    const part = (i: number) => g.apply('Slice', [fused, g.ints([i * H]), g.ints([(i + 1) * H]), g.ints([1])]);
    return [part(0), part(1), part(2)];
  }

  /** x * cos + rotate_half(x) * sin, with rotate_half(x) = [-x2, x1] (identity without rotary positions). */
  private rotate(x: string): string {
    const { g } = this;
    if (!this.rope) return x;
    const half = this.arch.headDim / 2;
    const first = g.apply('Slice', [x, g.ints([0]), g.ints([half]), g.ints([-1])]);
    const second = g.apply('Slice', [x, g.ints([half]), g.ints([2 * half]), g.ints([-1])]);
    const rotated = g.apply('Concat', [g.apply('Neg', [second]), first], { axis: -1 });
    return g.apply('Add', [g.apply('Mul', [x, this.rope!.cos]), g.apply('Mul', [rotated, this.rope!.sin])]);
  }

  /** [B, Hkv, T, D] -> [B, Hq, T, D], each key/value head serving numHeads/numKvHeads query heads. */
  private repeatKv(x: string): string {
    const { g, arch, options } = this;
    const repeat = arch.numHeads / arch.numKvHeads;
    if (repeat === 1) return x;
    const shape = [options.rows, arch.numKvHeads, repeat, options.seqLen, arch.headDim];
    const expanded = g.apply('Expand', [g.apply('Unsqueeze', [x, g.ints([2])]), g.ints(shape)]);
    return g.apply('Reshape', [expanded, g.ints([options.rows, arch.numHeads, options.seqLen, arch.headDim])]);
  }

  private causalMask(): string {
    const T = this.options.seqLen;
    return this.g.constant('float32', [T, T], Array.from({ length: T * T }, (_, i) => (i % T > Math.floor(i / T) ? -1e30 : 0)));
  }

  /** Full-width cos/sin [T, D] for positions 0..T-1 (both halves share a frequency). */
  private ropeTables(): { cos: string; sin: string } {
    const { arch, options, g } = this;
    if (arch.positions.kind !== 'rope') throw new Error('rotary tables for a model without rotary positions');
    const half = arch.headDim / 2;
    const { cos, sin } = ropeTables(arch.positions.invFreq, options.seqLen, arch.positions.attentionScaling);
    const full = (table: Float32Array) => Array.from({ length: options.seqLen * 2 * half }, (_, i) => table[Math.floor(i / (2 * half)) * half + (i % half)]!);
    return { cos: g.constant('float32', [options.seqLen, 2 * half], full(cos)), sin: g.constant('float32', [options.seqLen, 2 * half], full(sin)) };
  }

  /** RMSNorm x / sqrt(mean(x^2) + eps) * w, or LayerNorm (x - mean) / sqrt(var + eps) * w + b (biased variance, as PyTorch). */
  private norm(spec: NormSpec, x: string): string {
    const { g } = this;
    const centred = spec.kind === 'layer' ? g.apply('Sub', [x, g.apply('ReduceMean', [x], { axes: [-1], keepdims: 1 })]) : x;
    const meanSquare = g.apply('ReduceMean', [g.apply('Mul', [centred, centred])], { axes: [-1], keepdims: 1 });
    const normed = g.apply('Div', [centred, g.apply('Sqrt', [g.apply('Add', [meanSquare, g.scalar(spec.eps, x)])])]);
    const scaled = g.apply('Mul', [normed, this.weight(spec.weight)]);
    return spec.bias ? g.apply('Add', [scaled, this.weight(spec.bias)]) : scaled;
  }

  /** y = x W^T + b, plus scale * (x A^T) B^T where the module carries LoRA. */
  private linear(p: ProjectionSpec, x: string): string {
    const { g } = this;
    const inputs = [x, this.weight(p.weight)];
    if (p.bias) inputs.push(this.weight(p.bias));
    const base = g.apply('Gemm', inputs, { transB: p.layout === 'out_in' ? 1 : 0 });
    const lora = this.lora.get(p.modulePath);
    if (!lora) return base;
    const update = g.apply('Gemm', [g.apply('Gemm', [x, lora.a], { transB: 1 }), lora.b], { transB: 1 }); // [N, out]
    return g.apply('Add', [base, g.apply('Mul', [update, g.scalar(loraScale(this.options.lora), update)])]);
  }

}
