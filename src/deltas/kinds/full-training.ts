/**
 * Full fine-tuning (`method: { type: 'full', full: { init: 'base' } }`): every parameter of the
 * backbone trains — token (and GPT-2's position) embeddings, every linear layer's weight and bias,
 * every norm's weight and bias, and the LM head, which stays one tensor with the embeddings when
 * the checkpoint ties them (transformers' tie_word_embeddings: one Parameter, both uses add to its
 * gradient). It is what transformers' Trainer does with an unwrapped model, and the reference every
 * delta method is measured against.
 *
 * The parameters are the checkpoint's tensors under the checkpoint's own names; the step graph
 * reads them where it would read the frozen weights (TrainingHooks.replacesWeights). The result is
 * not a delta but a complete Hugging Face model directory (`result: 'model'`): model.safetensors in
 * float32 with the checkpoint's names (the trainer's state is float32; rounding it to the base's
 * BF16/F16 would lose the very updates a small learning rate makes) and config.json with `dtype`
 * / `torch_dtype` float32; the job runner copies the base's other files (tokenizer, generation
 * config) beside them, so the directory serves with `--model`.
 *
 * `init: 'base'` (the default) starts from the base's weights; `init: 'random'` starts from
 * scratch, each tensor drawn as transformers' `_init_weights` draws it (src/model/initial-weights.ts)
 * from the job's seed, which is how `npm run pretrain` makes the default model.
 */
import os from 'node:os';
import { z } from 'zod';
import { allProjections, type ArchitectureSpec, type NormSpec } from '../../model/architecture.js';
import type { TrainableParam } from '../../model/lower-training.js';
import { initialStd, initialTensor, type InitRole } from '../../model/initial-weights.js';
import { encodeSafetensors } from '../../model/safetensors.js';
import { registerTrainableKind, TrainingOptionsError, type TrainableKind } from '../training.js';

/** `method.full`: strict; `init` says where the weights start. */
export const FullTrainingOptions = z.object({ init: z.enum(['base', 'random']).default('base') }).strict();

export type FullTrainingOptions = z.infer<typeof FullTrainingOptions>;

/** Resolved: the starting point and the parameter count the memory check was made for. */
export interface FullLayout {
  init: FullTrainingOptions['init'];
  parameters: number;
}

/**
 * Bytes of memory per parameter a full fine-tuning job takes, as measured: the weight, its gradient
 * and AdamW's two moments (16 bytes in float32) are only the floor. The step's outputs (new weights
 * and moments, the accumulated gradient), the starting state's copy on the job's thread and the
 * session's activations and gradient buffers come on top: `npm run bench:train -- --method full`
 * measured 74 bytes per parameter on the SmolLM2-135M shape (9.3 GiB over the serving engine's
 * peak for 134.5 M parameters), so the estimate rounds up to 80.
 */
export const FULL_BYTES_PER_PARAMETER = 80;

/**
 * Every tensor the forward reads, by checkpoint name, with its shape, in the forward's order;
 * the tied LM head is the embedding's one entry.
 *
 * @example backboneParams(arch)[0] // { name: 'model.embed_tokens.weight', shape: [49152, 576] }
 */
export function backboneParams(arch: ArchitectureSpec): TrainableParam[] {
  return backboneTensors(arch).map(({ name, shape }) => ({ name, shape }));
}

/** backboneParams with what each tensor is, which decides how a random start draws it. */
function backboneTensors(arch: ArchitectureSpec): (TrainableParam & { role: InitRole })[] {
  const H = arch.hiddenSize;
  const out = new Map<string, { shape: number[]; role: InitRole }>();
  const add = (name: string | undefined, shape: number[], role: InitRole) => {
    if (name !== undefined && !out.has(name)) out.set(name, { shape, role });
  };
  const norm = (n: NormSpec) => {
    add(n.weight, [H], 'norm_weight');
    add(n.bias, [H], 'norm_bias');
  };
  add(arch.embedTokens, [arch.vocabSize, H], 'matrix');
  if (arch.positions.kind === 'learned') add(arch.positions.weight, [arch.maxPositions, H], 'matrix');
  arch.blocks.forEach((block, layer) => {
    norm(block.inputNorm);
    norm(block.postAttentionNorm);
    for (const p of allProjections(arch)[layer]!) {
      add(p.weight, p.layout === 'out_in' ? [p.outFeatures, p.inFeatures] : [p.inFeatures, p.outFeatures], 'matrix');
      add(p.bias, [p.outFeatures], 'bias');
    }
  });
  norm(arch.finalNorm);
  add(arch.lmHead, [arch.vocabSize, H], 'matrix');
  return [...out].map(([name, t]) => ({ name, ...t }));
}

/**
 * A model's weights as a fresh transformers model starts, drawn from `seed`.
 *
 * @example randomBackbone(arch, 1).get('model.norm.weight') // Float32Array filled with 1
 */
export function randomBackbone(arch: ArchitectureSpec, seed: number): Map<string, Float32Array> {
  return new Map(backboneTensors(arch).map(({ name, shape, role }) => [name, initialTensor(name, shape, role, seed, initialStd(arch, name))]));
}

/** Bytes for a message: 2.15 GiB, 40.0 MiB, 1000 bytes. */
function size(bytes: number): string {
  if (bytes >= 1024 ** 3) return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
  return bytes >= 1024 ** 2 ? `${(bytes / 1024 ** 2).toFixed(1)} MiB` : `${bytes} bytes`;
}

/** The memory a full fine-tuning job may take (--full-training-max-bytes; half the machine's memory when unset). */
function budget(limits: { maxTrainingBytes?: number }): number {
  return limits.maxTrainingBytes ?? Math.floor(os.totalmem() / 2);
}

export const fullTraining: TrainableKind<FullTrainingOptions, FullLayout> = {
  name: 'full',
  deltaKind: 'full',
  result: 'model',
  graphVersion: 1,
  options: FullTrainingOptions,

  resolve(arch, o, limits): FullLayout {
    const parameters = backboneParams(arch).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
    const need = parameters * FULL_BYTES_PER_PARAMETER;
    const allowed = budget(limits);
    if (need > allowed) {
      throw new TrainingOptionsError('init', `full fine-tuning of this model needs about ${size(need)} (${parameters} parameters × ${FULL_BYTES_PER_PARAMETER} bytes: weights, gradients, two AdamW moments, the step's outputs and activations, as measured), over the server's budget of ${size(allowed)} (--full-training-max-bytes)`);
    }
    return { init: o.init, parameters };
  },

  params: (arch) => backboneParams(arch),

  init(arch, l, seed, backbone) {
    if (l.init === 'random') return randomBackbone(arch, seed);
    if (!backbone) throw new Error('full fine-tuning starts from the base weights, and was given no backbone to read them from');
    return new Map(backboneParams(arch).map(({ name, shape }) => {
      const values = backbone.weight(name);
      const want = shape.reduce((a, b) => a * b, 1);
      if (values.length !== want) throw new Error(`checkpoint weight ${name} has ${values.length} values; the architecture expects [${shape.join(', ')}]`);
      return [name, Float32Array.from(values)];
    }));
  },

  fromDelta() {
    throw new TrainingOptionsError('model', 'full fine-tuning trains a whole model, not a delta: to continue from a fully fine-tuned model, serve it with --model and train that');
  },

  hooks: () => ({ kind: 'full', replacesWeights: true }),

  write(arch, l, params) {
    const tensors = Object.fromEntries(backboneParams(arch).map(({ name, shape }) => [name, { dtype: 'F32' as const, shape, data: params.get(name)! }]));
    return { config: JSON.stringify({ dtype: 'float32', torch_dtype: 'float32' }), weights: encodeSafetensors(tensors, { format: 'pt' }) };
  },
};

registerTrainableKind(fullTraining);
