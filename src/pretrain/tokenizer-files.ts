/**
 * A trained byte-level BPE as Hugging Face files: tokenizer.json (GPT-2's pipeline: ByteLevel
 * pre-tokenizer and decoder, a BPE model with the learned merges, no normaliser) and
 * tokenizer_config.json (special-token roles and the ChatML template), which
 * @huggingface/tokenizers, transformers and src/model/tokenizer.ts all load.
 */
import fs from 'node:fs';
import path from 'node:path';
import { byteLevelBpeTokenizerJson, chatMlTokenizerConfigJson } from '../model/byte-level-bpe.js';
import type { BpeModel } from './bpe-trainer.js';

/**
 * The special tokens, in id order right after the 256 byte symbols (ids 256, 257, 258), as in the
 * embedded model: `<|endoftext|>` separates documents and is the BOS and padding token;
 * `<|im_start|>` / `<|im_end|>` frame ChatML turns, and `<|im_end|>` is the EOS the fine-tuning
 * API appends to completions, so a fine-tuned delta learns to stop.
 */
export const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const;

export interface TokenizerFileOptions {
  /** Longest input the model takes, written as model_max_length (default 2048). */
  modelMaxLength?: number;
}

/**
 * tokenizer.json for a trained model. No post-processor tokens are added (GPT-2 style), so a
 * prompt is exactly what the chat template renders; the pretraining step puts `<|endoftext|>`
 * between documents itself.
 *
 * @example
 * const json = tokenizerJson(trainBpe(counts, { vocabSize: 4096, specialTokens: SPECIAL_TOKENS }));
 * new Tokenizer(json, {}).encode('In the beginning').ids;
 */
export function tokenizerJson(model: BpeModel): Record<string, unknown> {
  // Merges are applied by rank, never skipped for whole words found in the vocabulary, so the
  // runtime reproduces the trainer's segmentation exactly.
  return byteLevelBpeTokenizerJson(model, { ignoreMerges: false });
}

/**
 * tokenizer_config.json: the same roles and ChatML template as the embedded model.
 *
 * @example
 * tokenizerConfigJson().eos_token; // '<|im_end|>'
 */
export function tokenizerConfigJson(options: TokenizerFileOptions = {}): Record<string, unknown> {
  return chatMlTokenizerConfigJson(options.modelMaxLength ?? 2048);
}

/**
 * Writes tokenizer.json and tokenizer_config.json into `dir` (created if needed).
 *
 * @example
 * writeTokenizerFiles('/tmp/tok', model);
 * TextTokenizer.fromDirectory('/tmp/tok').vocabSize; // model.vocab.length
 */
export function writeTokenizerFiles(dir: string, model: BpeModel, options: TokenizerFileOptions = {}): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), `${JSON.stringify(tokenizerJson(model), null, 2)}\n`);
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), `${JSON.stringify(tokenizerConfigJson(options), null, 2)}\n`);
}
