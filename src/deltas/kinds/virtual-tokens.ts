/**
 * Learned virtual tokens before the prompt: what PEFT's prompt tuning and P-tuning serve. Both
 * save one tensor, `prompt_embeddings` [num_virtual_tokens, token_dim], which PeftModel's
 * `from_pretrained` loads into `prompt_encoder.embedding.weight` (inference mode), and
 * PeftModelForCausalLM concatenates it *before* the prompt's token embeddings (peft_model.py,
 * `forward` and `prepare_inputs_for_generation`): the virtual tokens take positions 0..n-1 (its
 * position_ids are dropped), the prompt starts at n, and every layer attends over them.
 *
 * The engine (scheduler.startVirtual) already places a row's n virtual tokens before its own
 * tokens as ids -(k + 1), reading embedding row 0 for them; this kind's embeddings hook swaps in
 * the delta's k-th embedding by selection, and leaves every other token's embedding as it was:
 *   hidden[t] = virtual[t] ? stack[slot(t), k(t)] : hidden[t]
 * Slot layout: `<kind>.embeddings` [V, H], V = --max-virtual-tokens, rows n..V-1 zero.
 */
import type { ArchitectureSpec } from '../../model/architecture.js';
import type { DeltaLowering, HookContext } from '../../model/delta-hooks.js';
import type { ParsedSafetensors } from '../../model/safetensors.js';
import { DeltaValidationError } from '../errors.js';
import type { DeltaFamily, DeltaKind, DeltaLimits, DeltaSummary, FeedInput, FeedTensor, ParseInput, ParsedDelta, SlotTensor } from '../kind.js';
import { firstNonFinite } from '../peft-lora.js';
import { ConfigFields } from '../peft/config-fields.js';
import { readPromptLearningConfig } from './virtual-token-config.js';

/** The one tensor PEFT saves for prompt tuning and P-tuning (BasePromptEncoder._get_adapter_state_dict). */
export const PROMPT_EMBEDDINGS = 'prompt_embeddings';

/** What distinguishes one virtual-token kind from another: its name, PEFT type and own config fields. */
export interface VirtualTokenKindSpec {
  name: string;
  peftType: string;
  family: DeltaFamily;
  /** Reads the kind's own fields (init-only or encoder settings) into `fields`; returns summary facts. */
  readFields(fields: ConfigFields): DeltaSummary;
}

/**
 * Slot-tensor and feed names of a virtual-token kind.
 *
 * @example virtualNames('p_tuning').embeddings // 'p_tuning.embeddings'
 */
export const virtualNames = (kind: string) => ({
  embeddings: `${kind}.embeddings`,
  index: `${kind}.virtual_index`,
  mask: `${kind}.virtual_mask`,
});

/**
 * A DeltaKind serving PEFT's `prompt_embeddings` as virtual tokens (see the file comment).
 *
 * @example registerDeltaKind(virtualTokenKind({ name: 'prompt_tuning', peftType: 'PROMPT_TUNING', family: 'addition', readFields }));
 */
export function virtualTokenKind(spec: VirtualTokenKindSpec): DeltaKind {
  const names = virtualNames(spec.name);
  return {
    name: spec.name,
    family: spec.family,
    format: `PEFT peft_type '${spec.peftType}'`,
    detect: (config) => config['peft_type'] === spec.peftType,
    parse: (input) => parseVirtualTokens(spec, input),
    slotTensors: (arch, limits): SlotTensor[] => [
      { name: names.embeddings, length: limits.maxVirtualTokens * arch.hiddenSize, neutral: 0, dims: [limits.maxVirtualTokens, arch.hiddenSize] },
    ],
    lowering: (arch, limits) => virtualLowering(spec.name, arch, limits),
    feeds: (input: FeedInput): FeedTensor[] => virtualFeeds(spec.name, input),
  };
}

/** Config and tensors checked together, so an upload's every problem is reported at once. */
function parseVirtualTokens(spec: VirtualTokenKindSpec, { name, config, weights, arch, limits }: ParseInput): ParsedDelta {
  const fields = new ConfigFields(config);
  const n = readPromptLearningConfig(fields, spec.peftType, arch, limits).virtualTokens;
  const facts = spec.readFields(fields);
  const problems = fields.problems.map((p) => `adapter_config.json: ${p}`);
  const warnings: string[] = [];
  problems.push(...otherTensors(weights, arch, warnings));
  const embeddings = readEmbeddings(weights, n, arch.hiddenSize, problems);
  if (problems.length || !embeddings || n === undefined) throw new DeltaValidationError(name, problems);
  const slot = new Float32Array(limits.maxVirtualTokens * arch.hiddenSize);
  slot.set(embeddings);
  return {
    kind: spec.name,
    name,
    tensors: new Map([[virtualNames(spec.name).embeddings, slot]]),
    virtualTokens: n,
    summary: { virtualTokens: n, params: n * arch.hiddenSize, ...facts },
    warnings,
  };
}

/**
 * `prompt_embeddings`, checked: present, a float dtype, [n, hidden] (PEFT loads it with
 * `load_state_dict(strict=True)` into an Embedding of exactly that shape; n is not checked when
 * num_virtual_tokens itself is bad), and finite.
 */
function readEmbeddings(weights: ParsedSafetensors, n: number | undefined, hidden: number, problems: string[]): Float32Array | undefined {
  const entry = weights.header.tensors.get(PROMPT_EMBEDDINGS);
  if (!entry) {
    problems.push(`adapter_model.safetensors has no ${PROMPT_EMBEDDINGS} tensor (PEFT saves the virtual token embeddings under that key)`);
    return undefined;
  }
  const before = problems.length;
  if (!['F32', 'F16', 'BF16'].includes(entry.dtype)) problems.push(`${PROMPT_EMBEDDINGS}: dtype ${entry.dtype} is not supported (F32, F16, BF16)`);
  if (entry.shape.length !== 2 || (n !== undefined && entry.shape[0] !== n) || entry.shape[1] !== hidden) {
    problems.push(`${PROMPT_EMBEDDINGS}: shape [${entry.shape}], expected [${n ?? 'num_virtual_tokens'}, ${hidden}] (num_virtual_tokens × the model's hidden size)`);
  }
  if (problems.length > before) return undefined;
  const data = weights.view(PROMPT_EMBEDDINGS);
  const bad = firstNonFinite(data);
  if (bad >= 0) {
    problems.push(`${PROMPT_EMBEDDINGS}: value at [${Math.floor(bad / hidden)}, ${bad % hidden}] is not finite (${data[bad]})`);
    return undefined;
  }
  return data;
}

/**
 * Every tensor but prompt_embeddings. PEFT's set_peft_model_state_dict first runs
 * `model.load_state_dict(state, strict=False)` on the whole PeftModel: a key naming one of its
 * parameters — the backbone's (`base_model.<module>.weight`, `word_embeddings.weight`) or the
 * prompt encoder's — would be loaded, and any other key ignored. A delta may not overwrite the
 * frozen backbone, so those are refused; the prompt encoder's own parameters are overwritten by
 * prompt_embeddings right after (`_load_adapter_state_dict`), so they are ignored, as are unknown keys.
 */
function otherTensors(weights: ParsedSafetensors, arch: ArchitectureSpec, warnings: string[]): string[] {
  const problems: string[] = [];
  const backbone = new Set(arch.modules.map((m) => m.path));
  for (const key of weights.header.tensors.keys()) {
    if (key === PROMPT_EMBEDDINGS) continue;
    const param = /^(?:base_model\.(.+)|(word_embeddings))\.(weight|bias)$/.exec(key);
    if (param && (param[2] || backbone.has(param[1]!))) {
      problems.push(`${key}: names a parameter of the frozen backbone, which PEFT's load_state_dict would overwrite; a delta may not change the backbone`);
    } else {
      warnings.push(`${key}: ignored (${key.startsWith('prompt_encoder.') ? `PEFT replaces the prompt encoder's weights with ${PROMPT_EMBEDDINGS}` : 'not a tensor of this PEFT method; PEFT ignores unexpected keys'})`);
    }
  }
  return problems;
}

function virtualLowering(kind: string, arch: ArchitectureSpec, limits: DeltaLimits): DeltaLowering {
  const names = virtualNames(kind);
  const V = limits.maxVirtualTokens;
  const H = arch.hiddenSize;
  return {
    kind,
    /** hidden[t] = mask[t] ? [stack; zero slot][index[t]] : hidden[t], by selection. */
    embeddings(ctx: HookContext, hidden: string): string {
      const { b } = ctx;
      const stack = ctx.input(names.embeddings, 'float32', [`${kind}_slots`, V, H]); // [S, V, H]
      const index = ctx.input(names.index, 'int64', ['tokens', 2]); // [T, 2] = (slot, k)
      const mask = ctx.input(names.mask, 'bool', ['tokens', 1]); // [T, 1]
      // A zero slot after the fed ones gives every other token a valid index, even when no slot is fed.
      const zeroSlot = b.op1('Expand', [b.constant('float32', [1, 1, 1], [0]), b.constant('int64', [3], [1, V, H])]); // [1, V, H]
      const table = b.op1('Concat', [stack, zeroSlot], { axis: 0 }); // [S + 1, V, H]
      const picked = b.op1('GatherND', [table, index]); // [T, H]
      return b.op1('Where', [mask, picked, hidden]); // [T, H]
    },
  };
}

function virtualFeeds(kind: string, { tokenSlots, slotCount, virtualIndex }: FeedInput): FeedTensor[] {
  const names = virtualNames(kind);
  const { index, mask } = virtualIndexFeeds(tokenSlots, virtualIndex, slotCount);
  return [
    { name: names.index, dtype: 'int64', data: index, dims: [mask.length, 2] },
    { name: names.mask, dtype: 'bool', data: mask, dims: [mask.length, 1] },
  ];
}

/**
 * Where each token's embedding comes from: (slot, k) of the stack views for the k-th virtual token
 * of a row with a slot of this kind (mask 1); for every other token (slotCount, 0), the zero slot
 * the graph appends, unselected (mask 0). Flattened [T, 2].
 *
 * @example virtualIndexFeeds([0, 0, -1, 1], [0, -1, 0, 1], 2) // index [0,0, 2,0, 2,0, 1,1], mask [1, 0, 0, 1]
 */
export function virtualIndexFeeds(tokenSlots: ArrayLike<number>, virtualIndex: ArrayLike<number>, slotCount: number): { index: number[]; mask: Uint8Array } {
  const index: number[] = [];
  const mask = new Uint8Array(tokenSlots.length);
  for (let t = 0; t < tokenSlots.length; t++) {
    const slot = tokenSlots[t]!;
    const k = virtualIndex[t]!;
    const mine = slot >= 0 && k >= 0;
    index.push(mine ? slot : slotCount, mine ? k : 0);
    mask[t] = mine ? 1 : 0;
  }
  return { index, mask };
}
