/**
 * Fine-tuning data: a JSONL file (one example per line) -> token rows with Hugging Face labels,
 * then seeded epoch order and padded batches with the causal shift applied.
 *
 * Three line shapes are accepted (OpenAI's chat format, prompt/completion, and pre-tokenized ids).
 * Labels are UNSHIFTED, as in transformers: `labels[t]` is the target for the logits at t - 1,
 * and -100 means "no loss". `packBatch` does the shift, so every shape shares one loss path.
 */
import type { ChatMessage, ChatTemplate } from '../model/chat-template.js';
import { mulberry32 } from '../model/random.js';
import type { TextTokenizer } from '../model/tokenizer.js';

/** The label value that contributes no loss (PyTorch's CrossEntropyLoss ignore_index). */
export const IGNORE_INDEX = -100;

/**
 * A training file that cannot be used. The message starts with the 1-based line when known, and
 * `field` names the JSON field at fault, so an upload error points at the exact spot.
 *
 * @example
 * new DatasetError("'completion' must be a non-empty string", 3, 'completion').message;
 * // "line 3: 'completion' must be a non-empty string"
 */
export class DatasetError extends Error {
  readonly code = 'invalid_training_file';
  constructor(message: string, readonly line: number | undefined, readonly field: string | undefined) {
    super(line === undefined ? message : `line ${line}: ${message}`);
    this.name = 'DatasetError';
  }
}

/** One tokenized example; `labels` is as long as `inputIds`, unshifted, -100 where no loss. */
export interface TrainingExample {
  inputIds: number[];
  labels: number[];
}

export interface DatasetOptions {
  tokenizer: TextTokenizer;
  chatTemplate: ChatTemplate;
  /** The model's vocabulary size; pre-tokenized ids must lie in [0, vocabSize). */
  vocabSize: number;
  /** Longer rows are truncated to this many tokens (the tail is dropped, as with truncation=True). */
  maxLength: number;
}

type Json = Record<string, unknown>;
const ROLES = new Set(['system', 'user', 'assistant', 'tool']);

/**
 * Parses a fine-tuning JSONL file into token rows. Each non-blank line is one of:
 * - `{"prompt": str, "completion": str}`: encode(prompt, with special tokens) ++ encode(completion)
 *   ++ [eos]; loss on the completion and the eos only.
 * - `{"messages": [{role, content, weight?}, ...]}`: rendered with the chat template; loss only on
 *   assistant turns, each from just after the generation prompt (`<|im_start|>assistant\n`) to the
 *   end of the turn as the template renders it, so the closing `<|im_end|>` (and the newline
 *   ChatML puts after it) is learned, which is what makes the model stop. An assistant message
 *   with `weight: 0` (OpenAI's format) gets no loss.
 * - `{"input_ids": int[], "labels"?: int[]}`: used as is; labels default to input_ids.
 * Rows longer than `maxLength` are truncated to their first `maxLength` tokens. Throws a
 * DatasetError naming the first bad line.
 *
 * @example
 * const rows = parseTrainingJsonl('{"prompt": "2+2=", "completion": "4"}\n', { tokenizer, chatTemplate, vocabSize: 512, maxLength: 256 });
 * rows[0].labels; // -100 for each prompt token, then the completion's ids and the eos id
 */
export function parseTrainingJsonl(text: string, options: DatasetOptions): TrainingExample[] {
  checkOptions(options);
  // A UTF-8 BOM (common from Windows editors) would otherwise make line 1 invalid JSON.
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  const rows: TrainingExample[] = [];
  lines.forEach((source, index) => {
    if (source.trim() === '') return;
    const line = index + 1;
    const example = truncate(parseLine(source, line, options), options.maxLength);
    if (!hasTarget(example.labels)) {
      throw new DatasetError(`nothing to learn: no label other than -100 after the first token (rows are truncated to ${options.maxLength} tokens)`, line, undefined);
    }
    rows.push(example);
  });
  if (rows.length === 0) throw new DatasetError('the training file holds no examples', undefined, undefined);
  return rows;
}

function checkOptions({ vocabSize, maxLength }: DatasetOptions): void {
  if (!Number.isInteger(vocabSize) || vocabSize <= 0) throw new RangeError(`vocabSize must be a positive integer, got ${vocabSize}`);
  if (!Number.isInteger(maxLength) || maxLength < 2) throw new RangeError(`maxLength must be an integer >= 2, got ${maxLength}`);
}

function parseLine(source: string, line: number, options: DatasetOptions): TrainingExample {
  let value: unknown;
  try {
    value = JSON.parse(source);
  } catch (err) {
    throw new DatasetError(`not valid JSON: ${(err as Error).message}`, line, undefined);
  }
  if (!isObject(value)) throw new DatasetError('expected a JSON object', line, undefined);
  const shapes = [
    'messages' in value && 'messages',
    'input_ids' in value && 'input_ids',
    ('prompt' in value || 'completion' in value) && 'prompt/completion',
  ].filter((s): s is string => s !== false);
  if (shapes.length === 0) {
    throw new DatasetError("expected 'messages', 'prompt' + 'completion', or 'input_ids'", line, undefined);
  }
  if (shapes.length > 1) throw new DatasetError(`mixes example shapes (${shapes.join(', ')}); use one`, line, undefined);
  if (shapes[0] === 'messages') return chatExample(value, line, options);
  if (shapes[0] === 'input_ids') return tokenExample(value, line, options.vocabSize);
  return promptExample(value, line, options.tokenizer);
}

/** Prompt and completion are encoded apart (like TRL), so the boundary never splits a token. */
function promptExample(value: Json, line: number, tokenizer: TextTokenizer): TrainingExample {
  const { prompt, completion } = value;
  if (typeof prompt !== 'string') throw new DatasetError("'prompt' must be a string", line, 'prompt');
  if (typeof completion !== 'string' || completion === '') throw new DatasetError("'completion' must be a non-empty string", line, 'completion');
  const eos = tokenizer.eosTokenIds[0];
  if (eos === undefined) throw new DatasetError('the tokenizer has no end-of-sequence token to end the completion with', line, 'completion');
  const promptIds = tokenizer.encode(prompt, { addSpecialTokens: true });
  const answer = [...tokenizer.encode(completion, { addSpecialTokens: false }), eos];
  return { inputIds: [...promptIds, ...answer], labels: [...promptIds.map(() => IGNORE_INDEX), ...answer] };
}

function tokenExample(value: Json, line: number, vocabSize: number): TrainingExample {
  const inputIds = value['input_ids'];
  if (!Array.isArray(inputIds) || inputIds.length === 0) throw new DatasetError("'input_ids' must be a non-empty array of token ids", line, 'input_ids');
  const badId = inputIds.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
  if (badId >= 0) {
    throw new DatasetError(`'input_ids'[${badId}] = ${JSON.stringify(inputIds[badId])} is not an integer in [0, ${vocabSize})`, line, 'input_ids');
  }
  if (value['labels'] === undefined) return { inputIds: [...inputIds], labels: [...inputIds] };
  const labels = value['labels'];
  if (!Array.isArray(labels) || labels.length !== inputIds.length) {
    throw new DatasetError(`'labels' must be an array as long as 'input_ids' (${inputIds.length})`, line, 'labels');
  }
  const badLabel = labels.findIndex((l) => !Number.isInteger(l) || (l !== IGNORE_INDEX && (l < 0 || l >= vocabSize)));
  if (badLabel >= 0) {
    throw new DatasetError(`'labels'[${badLabel}] = ${JSON.stringify(labels[badLabel])} is neither -100 nor an integer in [0, ${vocabSize})`, line, 'labels');
  }
  return { inputIds: [...inputIds], labels: [...labels] };
}

interface ChatTurn extends ChatMessage {
  learn: boolean;
}

/**
 * Encodes the whole conversation once, then finds each assistant turn's token span by encoding
 * the conversation up to it (with the generation prompt) and through it. Both must be token
 * prefixes of the whole, or the span would be a guess, so a tokenizer that merges across the
 * boundary is an error rather than silently mislabeled data.
 */
function chatExample(value: Json, line: number, { tokenizer, chatTemplate }: DatasetOptions): TrainingExample {
  const turns = chatTurns(value['messages'], line);
  const messages: ChatMessage[] = turns.map(({ role, content }) => ({ role, content }));
  const encode = (upTo: number, addGenerationPrompt: boolean): number[] => {
    try {
      return tokenizer.encode(chatTemplate.render(messages.slice(0, upTo), { addGenerationPrompt }), { addSpecialTokens: false });
    } catch (err) {
      throw new DatasetError(`'messages' cannot be rendered: ${(err as Error).message}`, line, 'messages');
    }
  };
  const inputIds = encode(turns.length, false);
  const labels = inputIds.map(() => IGNORE_INDEX);
  turns.forEach((turn, i) => {
    if (turn.role !== 'assistant' || !turn.learn) return;
    const start = encode(i, true);
    const end = encode(i + 1, false);
    if (!isPrefix(start, inputIds) || !isPrefix(end, inputIds) || end.length < start.length) {
      throw new DatasetError(`messages[${i}]: the chat template's tokens are not prefix-stable, so the assistant turn's tokens cannot be located`, line, 'messages');
    }
    for (let t = start.length; t < end.length; t++) labels[t] = inputIds[t]!;
  });
  return { inputIds, labels };
}

function chatTurns(messages: unknown, line: number): ChatTurn[] {
  if (!Array.isArray(messages) || messages.length === 0) throw new DatasetError("'messages' must be a non-empty array", line, 'messages');
  const turns = messages.map((m: unknown, i): ChatTurn => {
    const field = `messages[${i}]`;
    if (!isObject(m)) throw new DatasetError(`'${field}' must be an object`, line, field);
    const { role, content, weight } = m;
    if (typeof role !== 'string' || !ROLES.has(role)) {
      throw new DatasetError(`'${field}.role' must be one of ${[...ROLES].join(', ')}, got ${JSON.stringify(role)}`, line, `${field}.role`);
    }
    if (typeof content !== 'string') throw new DatasetError(`'${field}.content' must be a string`, line, `${field}.content`);
    if (weight !== undefined && (role !== 'assistant' || (weight !== 0 && weight !== 1))) {
      throw new DatasetError(`'${field}.weight' must be 0 or 1, and only on assistant messages`, line, `${field}.weight`);
    }
    return { role, content, learn: weight !== 0 };
  });
  if (!turns.some((t) => t.role === 'assistant' && t.learn)) {
    throw new DatasetError("'messages' needs at least one assistant message to learn from", line, 'messages');
  }
  return turns;
}

function truncate(example: TrainingExample, maxLength: number): TrainingExample {
  if (example.inputIds.length <= maxLength) return example;
  return { inputIds: example.inputIds.slice(0, maxLength), labels: example.labels.slice(0, maxLength) };
}

/** Position 0 is never a target after the causal shift, so it does not count. */
function hasTarget(labels: readonly number[]): boolean {
  return labels.some((l, t) => t >= 1 && l !== IGNORE_INDEX);
}

function isPrefix(prefix: readonly number[], whole: readonly number[]): boolean {
  return prefix.length <= whole.length && prefix.every((id, i) => id === whole[i]);
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The order to visit `count` examples in `epoch`: a Fisher–Yates shuffle driven by mulberry32,
 * seeded from (seed, epoch), so a resumed run replays exactly the same batches.
 *
 * @example
 * epochOrder(4, 42, 0); // a permutation of [0, 1, 2, 3], the same on every call
 */
export function epochOrder(count: number, seed: number, epoch: number): number[] {
  if (!Number.isInteger(count) || count < 0) throw new RangeError(`count must be a non-negative integer, got ${count}`);
  // Math.imul keeps the mix in 32 bits for any seed, where seed * 1000003 could lose precision.
  const next = mulberry32((Math.imul(seed | 0, 1000003) + (epoch | 0)) >>> 0);
  const order = Array.from({ length: count }, (_, i) => i);
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** A padded batch, row-major [rows, seqLen], with targets already shifted by one. */
export interface PackedBatch {
  rows: number;
  seqLen: number;
  /** [rows, seqLen] input ids, right-padded with the pad id. */
  inputIds: BigInt64Array;
  /** [rows, seqLen] targetIds[r, t] = labels[r][t + 1] where that is a real target, else 0. */
  targetIds: BigInt64Array;
  /** [rows, seqLen] 1 where targetIds holds a real target, else 0. */
  targetMask: Float32Array;
  /** Real targets in the batch (the mask's sum): the loss is a mean over these. */
  targetCount: number;
  /** Real (non-pad) input tokens. */
  tokens: number;
}

/**
 * Pads examples into one batch and applies the causal shift: position t predicts token t + 1,
 * exactly transformers' `logits[:, :-1]` vs `labels[:, 1:]`. Throws if a row exceeds seqLen.
 *
 * @example
 * const batch = packBatch([{ inputIds: [5, 6, 7], labels: [-100, 6, 7] }], 4, 0);
 * batch.targetIds; // BigInt64Array [6n, 7n, 0n, 0n]; targetMask [1, 1, 0, 0]
 */
export function packBatch(examples: TrainingExample[], seqLen: number, padId: number): PackedBatch {
  if (!Number.isInteger(seqLen) || seqLen <= 0) throw new RangeError(`seqLen must be a positive integer, got ${seqLen}`);
  const rows = examples.length;
  const inputIds = new BigInt64Array(rows * seqLen).fill(BigInt(padId));
  const targetIds = new BigInt64Array(rows * seqLen);
  const targetMask = new Float32Array(rows * seqLen);
  let targetCount = 0;
  let tokens = 0;
  examples.forEach(({ inputIds: ids, labels }, r) => {
    if (ids.length > seqLen) throw new RangeError(`packBatch: example ${r} has ${ids.length} tokens, more than seqLen ${seqLen}`);
    if (labels.length !== ids.length) throw new RangeError(`packBatch: example ${r} has ${labels.length} labels for ${ids.length} tokens`);
    const row = r * seqLen;
    ids.forEach((id, t) => { inputIds[row + t] = BigInt(id); });
    for (let t = 0; t + 1 < ids.length; t++) {
      const label = labels[t + 1]!;
      if (label === IGNORE_INDEX) continue;
      targetIds[row + t] = BigInt(label);
      targetMask[row + t] = 1;
      targetCount++;
    }
    tokens += ids.length;
  });
  return { rows, seqLen, inputIds, targetIds, targetMask, targetCount, tokens };
}
