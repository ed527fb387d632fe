/**
 * Delta kinds: every way a tenant's delta can change the frozen backbone (LoRA, IA3, prompt
 * tuning, ...) is one file under ./kinds that registers a DeltaKind here. The rest of the server
 * — the loader, the cache tiers, the residency manager, the store, the API — handles only the
 * kind-neutral ParsedDelta record and asks the registry for anything kind-specific.
 *
 * A kind's life cycle, in the order a delta meets it:
 *   detect       adapter_config.json → is this mine?
 *   parse        config + safetensors, validated against the backbone (collecting every problem)
 *                → ParsedDelta whose tensors are already in the kind's slot layout
 *   slots        the per-slot tensors a resident delta of this kind occupies (slot stacks)
 *   lowering     hooks into the inference graph (model/delta-hooks.ts)
 *   feeds        the per-pass graph inputs, from which slot each token's row uses
 * A kind that can be trained also registers a TrainableKind (./training.ts): options, parameters,
 * initialisation, training hooks at the same hook points, and its writer.
 */
import type { ArchitectureSpec } from '../model/architecture.js';
import type { DeltaLowering } from '../model/delta-hooks.js';
import type { ParsedSafetensors } from '../model/safetensors.js';
import type { JsonObject } from './peft/config-fields.js';

/** Delta-tuning's three families (Ding et al., 2023). */
export type DeltaFamily = 'reparameterization' | 'addition' | 'specification';

/** Server limits a kind validates against (`--max-rank` and friends). */
export interface DeltaLimits {
  maxRank: number;
  /** Most virtual tokens a prompt- or prefix-tuning delta may add. */
  maxVirtualTokens: number;
  /** Widest bottleneck an adapter may have. */
  maxBottleneck: number;
  /** Largest estimated state of a full fine-tuning job, in bytes (--full-training-max-bytes; half the machine's memory when absent). */
  maxTrainingBytes?: number;
  /**
   * The kinds this server serves (`--delta-kinds`); all registered kinds when absent. Every
   * enabled kind's hooks run in every pass, so a server that needs few kinds runs leaner.
   */
  kinds?: readonly string[];
}

/** Small facts about a delta, shown by the API and stored beside its files (JSON scalars only). */
export type DeltaSummary = Record<string, number | string | boolean>;

/**
 * A delta validated against a backbone: its kind, its tensors already laid out for a slot
 * (one copy each into the slot stacks), and what the rest of the server needs to know.
 */
export interface ParsedDelta {
  kind: string;
  /** Engine key (`owner/name@version`) or the upload's label while validating. */
  name: string;
  /** Slot-layout tensors by slot-tensor name; a slot tensor the delta does not set keeps its kind's neutral value. */
  tensors: Map<string, Float32Array>;
  /** Positions the delta occupies before every sequence's own tokens (prompt and prefix tuning); 0 for others. */
  virtualTokens: number;
  summary: DeltaSummary;
  /** What validation accepted but ignored (tensors PEFT would ignore too), for the uploader. */
  warnings: string[];
}

/** One tensor of a kind's slot: `length` floats per slot; a slot without it holds `neutral`. */
export interface SlotTensor {
  name: string;
  length: number;
  /** The value of a slot the delta leaves unset: 0 for additive tensors, 1 for scales. */
  neutral: number;
  /** The shape of one slot's tensor as the graph sees it (the stack adds a leading slot axis). */
  dims: number[];
  /**
   * Read on the host only (by prefixKeyValues), never a graph input: the engine neither feeds it
   * to passes nor copies it to the device. (Prefix tuning's keys/values go into the KV cache.)
   */
  hostOnly?: boolean;
}

/** A frozen backbone weight by checkpoint name (e.g. `model.layers.0.self_attn.q_proj.weight`), as float32 in its stored layout. */
export type BaseWeightReader = (name: string) => Float32Array;

/** What a parse receives: the two files, decoded, and the backbone and limits to check them against. */
export interface ParseInput {
  name: string;
  config: JsonObject;
  weights: ParsedSafetensors;
  arch: ArchitectureSpec;
  limits: DeltaLimits;
  /**
   * The backbone's frozen weights, for the kinds whose slot layout depends on them (DoRA's
   * m / ‖W + s·B·A‖). Each call reads one tensor from the checkpoint: call it only when needed.
   * Absent where the caller has no checkpoint at hand.
   */
  baseWeight?: BaseWeightReader;
}

/**
 * Per pass, which slot of this kind each token's row uses. The engine feeds the kind's slot
 * stacks as views of slots [lo, hi) under each slot tensor's name ([hi - lo, ...dims]), and slot
 * numbers here are relative to lo.
 */
export interface FeedInput {
  /** Slot per flattened token [T], relative to lo; -1 where the row has no delta of this kind. */
  tokenSlots: Int32Array;
  /** hi - lo: how many slots the stack views hold. */
  slotCount: number;
  /** Virtual-token index per flattened token: k for the k-th virtual token of its row, -1 for the row's own tokens. */
  virtualIndex: Int32Array;
}

/** A per-pass graph input as plain data (the engine turns it into an ORT tensor). */
export interface FeedTensor {
  name: string;
  dtype: 'int64' | 'int32' | 'float32' | 'bool';
  data: ArrayLike<number>;
  dims: number[];
}

/** One layer's keys and values for a row's virtual positions, [n, kvHeads · headDim] each. */
export interface LayerKeyValues {
  key: Float32Array;
  value: Float32Array;
}

export interface DeltaKind {
  readonly name: string;
  readonly family: DeltaFamily;
  /** PEFT's peft_type (or the AdapterHub format tag) this kind reads, for messages and the docs. */
  readonly format: string;
  /** Whether adapter_config.json describes a delta of this kind. */
  detect(config: JsonObject): boolean;
  /** Validates and lays out; throws DeltaValidationError listing every problem. */
  parse(input: ParseInput): ParsedDelta;
  /** The slot tensors this kind needs on a backbone (empty when the backbone offers no place for it). */
  slotTensors(arch: ArchitectureSpec, limits: DeltaLimits): SlotTensor[];
  /** The graph hooks of this kind (model/delta-hooks.ts). */
  lowering(arch: ArchitectureSpec, limits: DeltaLimits): DeltaLowering;
  /** The kind's per-pass index inputs (its slot stacks are fed by the engine, see FeedInput). */
  feeds(input: FeedInput): FeedTensor[];
  /**
   * For kinds whose virtual positions are keys and values themselves (prefix tuning): each
   * layer's, read from a resident slot's tensors; the engine writes them into the row's KV cache
   * before its first token.
   */
  prefixKeyValues?(slot: (tensor: string) => Float32Array, virtualTokens: number, arch: ArchitectureSpec): LayerKeyValues[];
}

const kinds = new Map<string, DeltaKind>();

/** Kinds register themselves on import (./kinds/index.ts imports them all); a name registered twice is a programming error. */
export function registerDeltaKind(kind: DeltaKind): void {
  if (kinds.has(kind.name)) throw new Error(`delta kind ${kind.name} registered twice`);
  kinds.set(kind.name, kind);
}

export function deltaKind(name: string): DeltaKind {
  const kind = kinds.get(name);
  if (!kind) throw new Error(`no delta kind '${name}' (registered: ${[...kinds.keys()].join(', ')})`);
  return kind;
}

/** Every registered kind, in registration order (the order hooks run in). */
export function deltaKinds(): DeltaKind[] {
  return [...kinds.values()];
}

/** The kind whose detect() accepts `config`, or undefined. */
export function detectKind(config: JsonObject): DeltaKind | undefined {
  return deltaKinds().find((k) => k.detect(config));
}

/** Bytes a parsed delta holds in host memory. */
export function parsedBytes(delta: ParsedDelta): number {
  let bytes = 0;
  for (const t of delta.tensors.values()) bytes += t.byteLength;
  return bytes;
}
