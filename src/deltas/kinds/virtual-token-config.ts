/**
 * The adapter_config.json fields prompt tuning and P-tuning share: PEFT's PeftConfig and
 * PromptLearningConfig (peft/config.py), read as PeftModelForCausalLM uses them at inference.
 * num_virtual_tokens and token_dim decide the shape of prompt_embeddings; the rest is checked
 * for type and range only (num_attention_heads and num_layers matter to prefix tuning, not here).
 */
import type { ArchitectureSpec } from '../../model/architecture.js';
import type { DeltaLimits } from '../kind.js';
import { show, type ConfigFields } from '../peft/config-fields.js';

/** What serving takes from the shared fields. */
export interface PromptLearningSettings {
  /** num_virtual_tokens, or undefined when the field is bad (its problem is in `fields`). */
  virtualTokens: number | undefined;
}

/** PEFT's TaskType values (peft/utils/peft_types.py); only CAUSAL_LM generates text. */
const TASK_TYPES = ['SEQ_CLS', 'SEQ_2_SEQ_LM', 'CAUSAL_LM', 'TOKEN_CLS', 'QUESTION_ANS', 'FEATURE_EXTRACTION'];

/**
 * Reads and checks the shared prompt-learning fields; problems go to `fields`.
 *
 * @example readPromptLearningConfig(fields, 'PROMPT_TUNING', arch, limits).virtualTokens // 20 (undefined if bad)
 */
export function readPromptLearningConfig(fields: ConfigFields, peftType: string, arch: ArchitectureSpec, limits: DeltaLimits): PromptLearningSettings {
  const type = fields.config['peft_type'];
  if (type !== peftType) fields.problems.push(`peft_type ${show(type)} is not supported here (expected '${peftType}')`);
  readTaskType(fields);
  fields.boolean('inference_mode', false);
  const virtualTokens = readVirtualTokens(fields, limits);
  const tokenDim = fields.number('token_dim', { fallback: arch.hiddenSize, integer: true, min: 1 });
  if (tokenDim !== arch.hiddenSize) fields.problems.push(`token_dim ${tokenDim} does not match the model's hidden size ${arch.hiddenSize} (the virtual tokens are concatenated with the token embeddings)`);
  // PEFT fills in null as 1 for every task but SEQ_2_SEQ_LM; a decoder-only model has one stack.
  const submodules = fields.number('num_transformer_submodules', { fallback: 1, integer: true, min: 1 });
  if (submodules !== 1) fields.problems.push(`num_transformer_submodules ${submodules} is not supported: a decoder-only model has one transformer stack (2 is for encoder-decoder models)`);
  fields.number('num_attention_heads', { fallback: 1, integer: true, min: 1 });
  fields.number('num_layers', { fallback: 1, integer: true, min: 1 });
  fields.unsupported('modules_to_save', (v) => Array.isArray(v) && v.length === 0, 'a delta may not replace modules of the backbone');
  for (const field of ['base_model_name_or_path', 'revision', 'peft_version']) optionalString(fields, field, 1024);
  optionalObject(fields, 'auto_mapping');
  return { virtualTokens };
}

/**
 * PeftModelForCausalLM is the only PeftModel that puts the virtual tokens before a causal LM's
 * prompt; without a task type, PeftModel.from_pretrained builds a plain PeftModel whose forward
 * never applies them, and the other task types put a classification head on the model.
 */
function readTaskType(fields: ConfigFields): void {
  const task = fields.config['task_type'];
  if (task === 'CAUSAL_LM') return;
  if (task === undefined || task === null) fields.problems.push("task_type is missing: PEFT applies the virtual tokens only in PeftModelForCausalLM (task_type 'CAUSAL_LM'); a PeftModel without a task type ignores them");
  else if (typeof task !== 'string' || !TASK_TYPES.includes(task)) fields.problems.push(`task_type must be one of ${TASK_TYPES.map((t) => `'${t}'`).join(', ')}, got ${show(task)}`);
  else fields.problems.push(`task_type '${task}' is not supported: this server generates text, which PEFT does for task_type 'CAUSAL_LM' only`);
}

function readVirtualTokens(fields: ConfigFields, limits: DeltaLimits): number | undefined {
  if (!fields.has('num_virtual_tokens')) return fields.fail('num_virtual_tokens', 'is missing (PEFT sizes the prompt embedding by it)', undefined);
  const n = fields.number('num_virtual_tokens', { fallback: NaN, integer: true, min: 1 });
  if (n > limits.maxVirtualTokens) return fields.fail('num_virtual_tokens', `${n} exceeds max virtual tokens ${limits.maxVirtualTokens}`, undefined);
  return Number.isNaN(n) ? undefined : n;
}

/**
 * A string field that may be null; longer than `maxLength` is refused so messages stay short.
 *
 * @example optionalString(fields, 'tokenizer_name_or_path', 1024) // 'gpt2' or null
 */
export function optionalString(fields: ConfigFields, field: string, maxLength: number): string | null {
  const value = fields.config[field];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string') return fields.fail(field, `must be a string or null, got ${show(value)}`, null);
  if (value.length > maxLength) return fields.fail(field, `is ${value.length} characters long; at most ${maxLength}`, null);
  return value;
}

/**
 * An object field that may be null (PEFT's Optional[dict] fields); returns how many keys it has.
 *
 * @example optionalObject(fields, 'tokenizer_kwargs') // 0 when absent or null
 */
export function optionalObject(fields: ConfigFields, field: string): number {
  const value = fields.config[field];
  if (value === undefined || value === null) return 0;
  if (typeof value !== 'object' || Array.isArray(value)) return fields.fail(field, `must be an object or null, got ${show(value)}`, 0);
  return Object.keys(value).length;
}
