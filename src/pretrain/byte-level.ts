/**
 * GPT-2's byte-level pre-tokenization, exactly as the ByteLevel pre-tokenizer of
 * @huggingface/tokenizers (and the Rust library) does it: split text with GPT-2's regex, then
 * spell each piece's UTF-8 bytes with one printable character per byte. The BPE trainer must see
 * the same pieces the runtime tokenizer will, or its merges would not apply.
 */
import { byteLevelAlphabet } from '../model/embedded.js';

/**
 * GPT-2's split pattern (contractions, letters, numbers, other symbols, each with an optional
 * leading space; then whitespace runs that leave the last space to the next word). Copied from
 * tokenizers.js's ByteLevel pre-tokenizer, which a test checks against.
 */
export const BYTE_LEVEL_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Byte value -> its printable stand-in (GPT-2's bytes_to_unicode). */
export const BYTE_SYMBOLS: readonly string[] = (() => {
  const symbols: string[] = new Array(256);
  for (const { byte, symbol } of byteLevelAlphabet()) symbols[byte] = symbol;
  return symbols;
})();

const encoder = new TextEncoder();

/**
 * The byte-level spelling of one piece: each UTF-8 byte as its stand-in character.
 *
 * @example
 * byteLevelSpelling(' light'); // 'Ġlight'
 */
export function byteLevelSpelling(piece: string): string {
  let out = '';
  for (const byte of encoder.encode(piece)) out += BYTE_SYMBOLS[byte]!;
  return out;
}

/**
 * Pre-tokenized pieces of `text` in byte-level spelling, in order.
 *
 * @example
 * preTokenize('And God said,\nLet'); // ['And', 'ĠGod', 'Ġsaid', ',', 'Ċ', 'Let']
 */
export function preTokenize(text: string): string[] {
  return (text.match(BYTE_LEVEL_PATTERN) ?? []).map(byteLevelSpelling);
}

/**
 * How often each distinct piece occurs in `texts`: what the BPE trainer counts pairs over, so
 * a word seen 40,000 times is processed once.
 *
 * @example
 * countPieces(['the end', 'the']).get('the'); // 2
 */
export function countPieces(texts: Iterable<string>): Map<string, number> {
  const raw = new Map<string, number>();
  for (const text of texts) {
    for (const piece of text.match(BYTE_LEVEL_PATTERN) ?? []) raw.set(piece, (raw.get(piece) ?? 0) + 1);
  }
  // Spelling distinct pieces only: distinct text pieces have distinct spellings (UTF-8 is injective).
  return new Map([...raw].map(([piece, count]) => [byteLevelSpelling(piece), count]));
}
