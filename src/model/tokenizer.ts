/**
 * Text <-> token ids for a Hugging Face model directory, behaving like transformers'
 * `AutoTokenizer` (fast backend): the tokenizer.json pipeline does the work, and
 * tokenizer_config.json / generation_config.json supply the special-token roles.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { ModelLoadError } from './errors.js';

type Json = Record<string, unknown>;

/** The parsed files a tokenizer is built from; only `tokenizer` is required. */
export interface TokenizerFiles {
  /** tokenizer.json */
  tokenizer: Json;
  /** tokenizer_config.json */
  config?: Json | undefined;
  /** generation_config.json, which may list extra end-of-sequence ids. */
  generationConfig?: Json | undefined;
}

export interface EncodeOptions {
  /** Add the post-processor's special tokens (BOS etc.), as `tokenizer(text)` does. Default true. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop tokens marked `special` in tokenizer.json. Default false, as in transformers. */
  skipSpecialTokens?: boolean;
}

/**
 * A loaded tokenizer plus the model's special-token ids.
 *
 * @example
 * const tok = TextTokenizer.fromDirectory('models/tiny-llama');
 * const ids = tok.encode('Hello world');
 * tok.decode(ids); // 'Hello world'
 */
export class TextTokenizer {
  readonly bosTokenId: number | undefined;
  readonly eosTokenIds: readonly number[];
  readonly padTokenId: number | undefined;
  private readonly inner: Tokenizer;
  private readonly specialIds: ReadonlySet<number>;
  private readonly size: number;
  /** Characters in the longest vocabulary entry or added token (see `minimumTokens`). */
  private readonly longestToken: number;

  constructor(files: TokenizerFiles) {
    const config = files.config ?? {};
    // tokenizers.js cleans up spaces ("a , b" -> "a, b") unless told otherwise, but transformers v5
    // does not, and cleaning would break encode/decode round trips and incremental decoding.
    const libConfig = { ...config, clean_up_tokenization_spaces: config['clean_up_tokenization_spaces'] === true };
    this.inner = new Tokenizer(files.tokenizer, libConfig);
    this.specialIds = new Set([...this.inner.get_added_tokens_decoder().values()].filter((t) => t.special).map((t) => t.id));
    const vocab = this.inner.get_vocab(true);
    this.size = vocab.size;
    this.longestToken = Math.max(1, ...[...vocab.keys()].map((k) => k.length));
    this.bosTokenId = this.roleId(config['bos_token']);
    this.padTokenId = this.roleId(config['pad_token']);
    this.eosTokenIds = this.collectEos(config['eos_token'], files.generationConfig?.['eos_token_id']);
  }

  /**
   * Loads `tokenizer.json` (required) and `tokenizer_config.json` / `generation_config.json`
   * (optional) from a model directory. Throws a ModelLoadError naming the offending file.
   *
   * @example
   * const tok = TextTokenizer.fromDirectory('test/fixtures/hf-tiny-llama');
   * tok.eosTokenIds; // [0]
   */
  static fromDirectory(dir: string): TextTokenizer {
    const tokenizerFile = path.join(dir, 'tokenizer.json');
    const tokenizer = readJson(tokenizerFile, true);
    const files: TokenizerFiles = {
      tokenizer,
      config: readJson(path.join(dir, 'tokenizer_config.json'), false),
      generationConfig: readJson(path.join(dir, 'generation_config.json'), false),
    };
    try {
      return new TextTokenizer(files);
    } catch (err) {
      throw new ModelLoadError(`${tokenizerFile}: unsupported or malformed tokenizer: ${errorMessage(err)}`, { cause: err });
    }
  }

  /**
   * Token ids for `text`, with the post-processor's special tokens unless disabled.
   * Special-token strings in the text (e.g. `<|im_start|>`) become their single ids.
   *
   * @example
   * tok.encode('<|im_start|>user'); // [1, 458, 263]
   */
  /**
   * A lower bound on the tokens `text` encodes to, without encoding it: no token covers more than
   * the longest vocabulary entry, and normalisation (NFKC and the like) shrinks text by at most a
   * small factor (4 is generous). Lets a server refuse a text that cannot fit its context before
   * spending time on it.
   */
  minimumTokens(text: string): number {
    return Math.floor(text.length / (this.longestToken * 4));
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    return this.inner.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  /**
   * Text for `ids`. Ids outside the vocabulary are dropped rather than thrown on, because
   * models often pad their embedding past the tokenizer's size and may sample those ids.
   *
   * @example
   * tok.decode([42, 71, 78]); // 'Hel'
   */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const known = ids.filter((id) => this.inner.id_to_token(id) !== undefined);
    const kept = options.skipSpecialTokens ? known.filter((id) => !this.specialIds.has(id)) : known;
    // tokenizers.js throws on an empty list; an empty decode is simply ''.
    if (kept.length === 0) return '';
    return this.inner.decode(kept, { skip_special_tokens: false });
  }

  /** Distinct tokens including added ones, like `len(tokenizer)` in transformers. */
  get vocabSize(): number {
    return this.size;
  }

  /**
   * The id of a token string (as written in the vocabulary), or undefined.
   *
   * @example
   * tok.tokenId('<|im_end|>'); // 2
   */
  tokenId(token: string): number | undefined {
    return this.inner.token_to_id(token);
  }

  /** Whether `id` is an added token marked special (e.g. `<|im_end|>`). */
  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  private roleId(value: unknown): number | undefined {
    const content = tokenContent(value);
    return content === undefined ? undefined : this.tokenId(content);
  }

  /** tokenizer_config's eos first, then generation_config's, without duplicates. */
  private collectEos(configEos: unknown, generationEos: unknown): number[] {
    const ids: number[] = [];
    const primary = this.roleId(configEos);
    if (primary !== undefined) ids.push(primary);
    const extra = Array.isArray(generationEos) ? generationEos : [generationEos];
    for (const id of extra) {
      if (Number.isInteger(id) && !ids.includes(id as number)) ids.push(id as number);
    }
    return ids;
  }
}

/** Options for {@link IncrementalDecoder}. */
export type IncrementalDecoderOptions = DecodeOptions;

/**
 * Turns a stream of generated ids into text pieces whose concatenation equals `decode(allIds)`.
 * Each push re-decodes a short window of recent ids (decoders such as Metaspace change a
 * token's text depending on what precedes it) and emits only the new suffix; text ending in
 * U+FFFD is held back because the next token may complete that UTF-8 sequence.
 *
 * @example
 * const stream = new IncrementalDecoder(tok);
 * let out = '';
 * for (const id of ids) out += stream.push(id);
 * out += stream.flush(); // out === tok.decode(ids)
 */
export class IncrementalDecoder {
  private readonly ids: number[] = [];
  /** Start of the window that gives later tokens their context. */
  private prefixOffset = 0;
  /** End of the text already emitted. */
  private readOffset = 0;

  constructor(
    private readonly tok: TextTokenizer,
    private readonly options: IncrementalDecoderOptions = {},
  ) {}

  /**
   * Adds one id; returns the newly completed text (possibly '').
   *
   * @example
   * stream.push(175); // '' while an emoji is incomplete, then the emoji
   */
  push(id: number): string {
    if (this.options.skipSpecialTokens && this.tok.isSpecial(id)) return '';
    this.ids.push(id);
    const prefixText = this.decodeRange(this.prefixOffset, this.readOffset);
    const fullText = this.decodeRange(this.prefixOffset, this.ids.length);
    if (fullText.length <= prefixText.length || fullText.endsWith('\uFFFD')) return '';
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return fullText.slice(prefixText.length);
  }

  /**
   * Emits whatever was held back (a genuinely invalid byte sequence decodes to U+FFFD).
   *
   * @example
   * const tail = stream.flush();
   */
  flush(): string {
    const prefixText = this.decodeRange(this.prefixOffset, this.readOffset);
    const fullText = this.decodeRange(this.prefixOffset, this.ids.length);
    this.prefixOffset = this.readOffset = this.ids.length;
    return fullText.length > prefixText.length ? fullText.slice(prefixText.length) : '';
  }

  private decodeRange(start: number, end: number): string {
    return start >= end ? '' : this.tok.decode(this.ids.slice(start, end), this.options);
  }
}

/** A special-token setting: `"<s>"` or `{ "content": "<s>", ... }` (AddedToken form). */
function tokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as Json)['content'] === 'string') {
    return (value as Json)['content'] as string;
  }
  return undefined;
}

function readJson(file: string, required: true): Json;
function readJson(file: string, required: false): Json | undefined;
function readJson(file: string, required: boolean): Json | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ModelLoadError(`${file}: cannot read: ${errorMessage(err)}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ModelLoadError(`${file}: malformed JSON: ${errorMessage(err)}`, { cause: err });
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ModelLoadError(`${file}: expected a JSON object`);
  }
  return parsed as Json;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
