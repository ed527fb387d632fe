/**
 * Prompt tuning (PEFT `PROMPT_TUNING`, Lester et al., 2021): n learned embeddings before every
 * prompt (see virtual-tokens.ts). PEFT's PromptEmbedding is a plain `nn.Embedding(n, token_dim)`
 * whose weight is what it saves as `prompt_embeddings`; its `prompt_tuning_init*` and
 * `tokenizer_*` fields only choose the initial values before training, so serving checks their
 * types and PromptTuningConfig.__post_init__'s rules (peft/tuners/prompt_tuning/config.py) and
 * nothing more.
 */
import { registerDeltaKind, type DeltaSummary } from '../kind.js';
import type { ConfigFields } from '../peft/config-fields.js';
import { optionalObject, optionalString } from './virtual-token-config.js';
import { virtualTokenKind } from './virtual-tokens.js';

const INITS = ['TEXT', 'SAMPLE_VOCAB', 'RANDOM'] as const;

/** The init-only fields, with the combinations PEFT's config refuses to load refused here too. */
function readPromptTuningFields(fields: ConfigFields): DeltaSummary {
  const init = fields.oneOf('prompt_tuning_init', INITS, 'RANDOM');
  const text = optionalString(fields, 'prompt_tuning_init_text', 65536);
  const tokenizer = optionalString(fields, 'tokenizer_name_or_path', 1024);
  const kwargs = optionalObject(fields, 'tokenizer_kwargs');
  if (init === 'TEXT' && !tokenizer) fields.problems.push("prompt_tuning_init 'TEXT' needs tokenizer_name_or_path (PEFT's PromptTuningConfig refuses it without one)");
  if (init === 'TEXT' && text === null) fields.problems.push("prompt_tuning_init 'TEXT' needs prompt_tuning_init_text (PEFT's PromptTuningConfig refuses it without one)");
  if (kwargs > 0 && init !== 'TEXT') fields.problems.push(`tokenizer_kwargs is only valid with prompt_tuning_init 'TEXT', not '${init}' (PEFT's PromptTuningConfig refuses it)`);
  return {};
}

export const promptTuning = virtualTokenKind({ name: 'prompt_tuning', peftType: 'PROMPT_TUNING', family: 'addition', readFields: readPromptTuningFields });

registerDeltaKind(promptTuning);
