/**
 * How a delta kind trains. A kind file registers a TrainableKind under its fine-tuning method name
 * (`method.type` of POST /admin/v1/fine_tuning/jobs, and the key of its options object,
 * `method.<name>`); everything else — the job runner, the trainer on the engine thread, AdamW
 * state, checkpoints, the step graph (model/lower-training.ts) and the API schema — is generic and
 * asks the registry.
 *
 * A training job's life cycle, in the order it meets the kind:
 *   options     the request's options object, parsed by the kind's zod schema (PEFT's names and
 *               defaults; unknown options refused)
 *   resolve     checked against the backbone and the server's limits (a 400 naming the field at
 *               job creation) → the resolved options: plain JSON that crosses to the engine thread
 *               and keys the cached step graph
 *   params      the trainable tensors: PEFT's names without `base_model.model.`, any shape
 *   init        PEFT's initialisation, seeded by the job's seed (the backbone's tokenizer and
 *               frozen weights at hand, see TrainingBackbone); or fromDelta, to continue from a
 *               stored delta of the kind (its tensors are the starting point)
 *   hooks       the kind's math on its parameters in the step graph (model/delta-hooks.ts)
 *   write       the trained parameters as the kind's files, as PEFT's save_pretrained writes them
 */
import type { z } from 'zod';
import type { ArchitectureSpec } from '../model/architecture.js';
import type { TrainingHooks } from '../model/delta-hooks.js';
import type { TrainableParam } from '../model/lower-training.js';
import type { DeltaLimits } from './kind.js';

/** A delta's two files: adapter_config.json text and the weights file's bytes. */
export interface DeltaFileBytes {
  config: string;
  weights: Uint8Array;
}

/**
 * What a kind may read of the backbone besides its shapes, on the main thread: the server's
 * tokenizer and rows of frozen weights (prompt tuning's TEXT initialisation embeds the tokens of
 * a text, as PEFT's PromptEmbedding does with the model's word embeddings).
 */
export interface TrainingBackbone {
  /** The server's tokenizer; absent when the model directory has none. */
  tokenizer?: { encode(text: string, options?: { addSpecialTokens?: boolean }): number[] };
  /** The checkpoint weight `name` whole, as float32 (DoRA's magnitude ‖W‖, BitFit's and LN tuning's copies of the base). */
  weight(name: string): Float32Array;
  /** Rows `rows` (in that order, repeats allowed) of the 2-D checkpoint weight `name`, as float32, concatenated. */
  weightRows(name: string, rows: readonly number[]): Float32Array;
}

/** What the engine trains: a trainable kind and its resolved options (see TrainableKind.resolve). */
export interface TrainingTarget {
  kind: string;
  options: unknown;
}

/** Options that do not fit the backbone or the server; `field` is the option's name within `method.<kind>`. */
export class TrainingOptionsError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

export interface TrainableKind<Options = unknown, Resolved = unknown> {
  /** The fine-tuning method name (`method.type`), usually the delta kind's name. */
  readonly name: string;
  /** The delta kind that serves what this trains: the kind a job may continue from, and the format `write` produces. */
  readonly deltaKind: string;
  /**
   * What a job publishes: a delta of `deltaKind` (the default), or 'model': a complete model
   * directory (full fine-tuning), where `write` gives model.safetensors as `weights` and, as
   * `config`, the keys it changes in the base's config.json; the job copies the base's other files.
   */
  readonly result?: 'delta' | 'model';
  /** Part of the step graph's cache key: bump when `params` or `hooks` change what the graph computes. */
  readonly graphVersion: number;
  /** `method.<name>` as the request gives it: strict, with PEFT's option names and defaults. */
  readonly options: z.ZodType<Options>;
  /** Checks options against the backbone and limits (throws TrainingOptionsError) and resolves them to plain JSON. */
  resolve(arch: ArchitectureSpec, options: Options, limits: DeltaLimits, backbone?: TrainingBackbone): Resolved;
  /** The trainable tensors, in a stable order. */
  params(arch: ArchitectureSpec, resolved: Resolved): TrainableParam[];
  /** A fresh delta as PEFT initialises one, from the job's seed. */
  init(arch: ArchitectureSpec, resolved: Resolved, seed: number, backbone?: TrainingBackbone): Map<string, Float32Array>;
  /**
   * Positions the kind puts before every row (prompt tuning's virtual tokens, prefix tuning's
   * prefix; PEFT's num_virtual_tokens): a job's rows must fit the context after them.
   */
  virtualTokens?(resolved: Resolved): number;
  /** Continues from a stored delta of `deltaKind`: its resolved options and its tensors as the starting parameters. */
  fromDelta(files: DeltaFileBytes, arch: ArchitectureSpec, backbone?: TrainingBackbone): { options: Resolved; params: Map<string, Float32Array> };
  /** The kind's math on its parameters (ctx.param(name)) in the training step. */
  hooks(arch: ArchitectureSpec, resolved: Resolved): TrainingHooks;
  /** The trained parameters as the kind's files, exactly as PEFT's save_pretrained writes them. */
  write(arch: ArchitectureSpec, resolved: Resolved, params: ReadonlyMap<string, Float32Array>, meta: { baseModel: string }): DeltaFileBytes;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyTrainableKind = TrainableKind<any, any>;

const trainables = new Map<string, AnyTrainableKind>();

/**
 * Trainable kinds register themselves on import (./kinds/index.ts imports them all); a name
 * registered twice is a programming error.
 *
 * @example registerTrainableKind(loraTraining); // at the end of kinds/lora-training.ts
 */
export function registerTrainableKind<O, R>(kind: TrainableKind<O, R>): void {
  if (trainables.has(kind.name)) throw new Error(`trainable kind ${kind.name} registered twice`);
  trainables.set(kind.name, kind);
}

/**
 * The trainable kind for a fine-tuning method.
 *
 * @example trainableKind('lora').params(arch, trainableKind('lora').resolve(arch, { r: 8, alpha: 16, target_modules: 'all-linear', use_rslora: false }, limits))
 */
export function trainableKind(name: string): AnyTrainableKind {
  const kind = trainables.get(name);
  if (!kind) throw new Error(`no trainable kind '${name}' (registered: ${[...trainables.keys()].join(', ')})`);
  return kind;
}

/**
 * Every registered trainable kind, in registration order (the API's `method.type` accepts exactly these).
 *
 * @example trainableKinds().map((k) => k.name) // ['lora']
 */
export function trainableKinds(): AnyTrainableKind[] {
  return [...trainables.values()];
}

