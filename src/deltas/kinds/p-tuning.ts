/**
 * P-tuning (PEFT `P_TUNING`, Liu et al., 2021, "GPT Understands, Too"): n virtual tokens whose
 * embeddings a small encoder (an MLP or a bidirectional LSTM + MLP) computes from learned inputs
 * during training. PEFT saves the encoder's *output* as `prompt_embeddings`
 * (PeftModel.get_prompt_embedding_to_save runs `prompt_encoder(prompt_tokens)`), and
 * `from_pretrained` builds the PromptEncoder in inference mode, without its mlp_head or lstm_head,
 * loading those outputs into its embedding; `get_prompt` then returns `embedding.weight` as is
 * (peft/peft_model.py, peft/tuners/p_tuning/model.py). So serving is exactly prompt tuning's (see
 * virtual-tokens.ts), and the encoder_* fields are checked for type and range only.
 */
import { registerDeltaKind, type DeltaSummary } from '../kind.js';
import type { ConfigFields } from '../peft/config-fields.js';
import { virtualTokenKind } from './virtual-tokens.js';

/** The encoder fields (PromptEncoderConfig): the training-time encoder, not run when serving. */
function readPTuningFields(fields: ConfigFields): DeltaSummary {
  const encoder = fields.oneOf('encoder_reparameterization_type', ['MLP', 'LSTM'], 'MLP');
  fields.number('encoder_hidden_size', { fallback: 1, integer: true, min: 1, max: 1 << 20 });
  fields.number('encoder_num_layers', { fallback: 2, integer: true, min: 1, max: 1024 });
  fields.number('encoder_dropout', { fallback: 0, min: 0, max: 1 });
  return { encoder };
}

export const pTuning = virtualTokenKind({ name: 'p_tuning', peftType: 'P_TUNING', family: 'addition', readFields: readPTuningFields });

registerDeltaKind(pTuning);
