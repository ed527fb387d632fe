/**
 * Bits per byte: a language model's loss on a text in a unit that does not depend on its
 * tokenizer, so models with different vocabularies (or none) compare. The summed negative
 * log-likelihood of the text's tokens, in nats, converted to bits (÷ ln 2) and divided by the
 * text's UTF-8 bytes (not its tokens, not its characters).
 *
 * Through the HTTP API (how the test suite will score the default model on the held-out text):
 * split the text at line ends into pieces that fit the context (`piecesForScoring`), and for each
 * piece POST /v1/completions with `prompt: "<|endoftext|>" + piece`, `echo: true`, `logprobs: 0`,
 * `max_tokens: 0`. The echoed `choices[0].logprobs.token_logprobs` starts with null for the
 * `<|endoftext|>` (nothing precedes it), then one log-probability per token of the piece, each
 * conditioned on the document start and the piece so far; `natsFromLogprobs` sums those. The
 * special token conditions the first real token, so every byte of the piece is scored, and each
 * piece counts only its own bytes.
 */

const encoder = new TextEncoder();

/**
 * Bits per byte from summed token negative log-likelihoods (natural log) over a text of `bytes`
 * UTF-8 bytes. Throws on a non-positive byte count or a negative or non-finite loss.
 *
 * @example
 * bitsPerByte(Math.LN2 * 8, 4); // 2: eight bits of surprise spread over four bytes
 */
export function bitsPerByte(nats: number, bytes: number): number {
  if (!(bytes > 0) || !Number.isInteger(bytes)) throw new Error(`bits per byte needs a positive whole number of bytes, got ${bytes}`);
  if (!(nats >= 0) || !Number.isFinite(nats)) throw new Error(`bits per byte needs a finite, non-negative loss in nats, got ${nats}`);
  return nats / Math.LN2 / bytes;
}

/**
 * UTF-8 length of `text`, the denominator of bits per byte.
 *
 * @example
 * utf8Bytes('“Amen.”'); // 11: each curly quote is three bytes
 */
export function utf8Bytes(text: string): number {
  return encoder.encode(text).length;
}

/**
 * Summed negative log-likelihood (nats) of an echoed prompt's tokens: `token_logprobs` as the
 * completions API returns it, whose first entry is null (the first token has no context). Every
 * later entry must be a finite log-probability (≤ 0).
 *
 * @example
 * natsFromLogprobs([null, -0.5, -1.25]); // 1.75
 */
export function natsFromLogprobs(tokenLogprobs: readonly (number | null)[]): number {
  let nats = 0;
  tokenLogprobs.forEach((lp, i) => {
    if (i === 0) return;
    if (lp === null || !Number.isFinite(lp) || lp > 0) throw new Error(`token ${i}: expected a log-probability ≤ 0, got ${lp}`);
    nats -= lp;
  });
  return nats;
}

/**
 * Cuts `text` into pieces of at most `maxBytes` UTF-8 bytes, at line ends where possible (a
 * longer line is cut at a character boundary), so each fits a model's context when scored
 * separately. The pieces concatenate back to `text`.
 *
 * @example
 * piecesForScoring('a\nbb\nccc\n', 5); // ['a\nbb\n', 'ccc\n']
 */
export function piecesForScoring(text: string, maxBytes: number): string[] {
  if (!Number.isInteger(maxBytes) || maxBytes < 4) throw new Error(`maxBytes must be an integer ≥ 4, got ${maxBytes}`);
  const pieces: string[] = [];
  let current = '';
  let size = 0;
  const flush = () => {
    if (current !== '') pieces.push(current);
    current = '';
    size = 0;
  };
  for (const line of text.match(/[^\n]*\n|[^\n]+$/g) ?? []) {
    const lineBytes = utf8Bytes(line);
    if (size + lineBytes > maxBytes) flush();
    if (lineBytes <= maxBytes) {
      current += line;
      size += lineBytes;
      continue;
    }
    for (const char of line) {
      const charBytes = utf8Bytes(char);
      if (size + charBytes > maxBytes) flush();
      current += char;
      size += charBytes;
    }
  }
  flush();
  return pieces;
}
