/**
 * A byte-level BPE tokenizer as Hugging Face files, for the embedded model (embedded.ts: bytes
 * only) and for a tokenizer trained with the model (src/pretrain/tokenizer-files.ts: learned
 * merges): tokenizer.json with GPT-2's pipeline (ByteLevel pre-tokenizer and decoder, a BPE
 * model, no normaliser) and tokenizer_config.json with ChatML's special-token roles and template.
 */
import { DEFAULT_CHAT_TEMPLATE } from './chat-template.js';

export interface ByteLevelBpe {
  /** Token strings by id: the 256 byte symbols (byteLevelAlphabet order), special tokens, merged tokens. */
  vocab: readonly string[];
  /** Merges in rank order, each the two token strings joined. */
  merges: readonly [string, string][];
  /** Ids of the special tokens, written as added tokens. */
  specialIds: readonly number[];
}

/**
 * tokenizer.json for `bpe`. It adds no BOS/EOS (GPT-2 style), so a prompt is exactly what the
 * chat template renders. `ignoreMerges` is the BPE model's ignore_merges: whether a word found
 * whole in the vocabulary skips the merges.
 *
 * @example
 * const json = byteLevelBpeTokenizerJson({ vocab: [...byteSymbols, '<|endoftext|>'], merges: [], specialIds: [256] }, { ignoreMerges: true });
 * new Tokenizer(json, {}).encode('hi').ids; // [72, 73]
 */
export function byteLevelBpeTokenizerJson(bpe: ByteLevelBpe, options: { ignoreMerges: boolean }): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  bpe.vocab.forEach((token, id) => (vocab[token] = id));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: bpe.specialIds.map((id) => ({
      id,
      content: bpe.vocab[id],
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: options.ignoreMerges,
      vocab,
      merges: bpe.merges,
    },
  };
}

/**
 * tokenizer_config.json: `<|endoftext|>` the BOS and padding token, `<|im_end|>` the EOS, and
 * the ChatML template.
 *
 * @example
 * chatMlTokenizerConfigJson(2048).eos_token; // '<|im_end|>'
 */
export function chatMlTokenizerConfigJson(modelMaxLength: number): Record<string, unknown> {
  return {
    bos_token: '<|endoftext|>',
    eos_token: '<|im_end|>',
    pad_token: '<|endoftext|>',
    clean_up_tokenization_spaces: false,
    model_max_length: modelMaxLength,
    tokenizer_class: 'PreTrainedTokenizerFast',
    chat_template: DEFAULT_CHAT_TEMPLATE,
  };
}
