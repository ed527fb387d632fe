/**
 * Chat messages -> prompt text via the model's Jinja chat template, with the same variables
 * transformers' `apply_chat_template` provides. @huggingface/jinja already matches transformers'
 * environment (trim_blocks, lstrip_blocks, raise_exception, strftime_now).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Template } from '@huggingface/jinja';
import { ModelLoadError } from './errors.js';

/** One chat turn. */
export interface ChatMessage {
  role: string;
  content: string;
}

export interface RenderOptions {
  /** Append the assistant-turn opener so the model answers next. Default false, as in transformers. */
  addGenerationPrompt?: boolean;
  /** Further template variables (e.g. `tools`); they override the defaults. */
  extra?: Record<string, unknown>;
}

/** Special-token strings the template may reference, e.g. `{{ bos_token }}`. */
export interface SpecialTokenStrings {
  bos_token?: string;
  eos_token?: string;
  pad_token?: string;
  unk_token?: string;
}

/**
 * ChatML, for models that ship no template; identical to the test fixture's chat_template.jinja.
 * The embedded model's tokenizer has `<|im_start|>` / `<|im_end|>` as special tokens for it.
 */
export const DEFAULT_CHAT_TEMPLATE =
  "{% for m in messages %}<|im_start|>{{ m['role'] }}\n" +
  "{{ m['content'] }}<|im_end|>\n" +
  '{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n' +
  '{% endif %}';

const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'pad_token', 'unk_token'] as const;

/**
 * A compiled chat template.
 *
 * @example
 * const chat = new ChatTemplate(DEFAULT_CHAT_TEMPLATE);
 * chat.render([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true });
 * // '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n'
 */
export class ChatTemplate {
  private readonly template: Template;

  /** Throws an Error carrying the parser's message when `source` is not valid Jinja. */
  constructor(
    readonly source: string,
    private readonly specialTokens: SpecialTokenStrings = {},
  ) {
    try {
      this.template = new Template(source);
    } catch (err) {
      throw new Error(`chat template does not parse: ${errorMessage(err)}`, { cause: err });
    }
  }

  /**
   * The template of a model directory: `chat_template.jinja` if present, else
   * tokenizer_config.json's `chat_template` (a string, or a list of `{name, template}` of which
   * `default` is used). Null when the model has none, so the caller chooses a fallback.
   *
   * @example
   * const chat = ChatTemplate.fromDirectory(dir) ?? new ChatTemplate(DEFAULT_CHAT_TEMPLATE);
   */
  static fromDirectory(dir: string): ChatTemplate | null {
    const config = readConfig(path.join(dir, 'tokenizer_config.json'));
    const source = readTemplateFile(path.join(dir, 'chat_template.jinja')) ?? templateFromConfig(config['chat_template']);
    return source === undefined ? null : new ChatTemplate(source, specialTokenStrings(config));
  }

  /**
   * Renders `messages` into prompt text. Template errors (including `raise_exception`) throw an
   * Error carrying the template's message.
   *
   * @example
   * chat.render([{ role: 'system', content: 'Be brief.' }], { addGenerationPrompt: true });
   */
  render(messages: readonly ChatMessage[], options: RenderOptions = {}): string {
    const variables: Record<string, unknown> = {
      ...this.specialTokens,
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? false,
      ...options.extra,
    };
    try {
      return this.template.render(variables);
    } catch (err) {
      throw new Error(`chat template failed: ${errorMessage(err)}`, { cause: err });
    }
  }
}

function readTemplateFile(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ModelLoadError(`${file}: cannot read: ${errorMessage(err)}`, { cause: err });
  }
}

function readConfig(file: string): Record<string, unknown> {
  const text = readTemplateFile(file);
  if (text === undefined) return {};
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch (err) {
    throw new ModelLoadError(`${file}: malformed JSON: ${errorMessage(err)}`, { cause: err });
  }
  throw new ModelLoadError(`${file}: expected a JSON object`);
}

/** Named templates come as a list; only `default` applies to plain chat (transformers does the same). */
function templateFromConfig(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (!Array.isArray(value)) return undefined;
  const named = value.find((entry) => entry && typeof entry === 'object' && entry.name === 'default');
  return typeof named?.template === 'string' ? named.template : undefined;
}

/** tokenizer_config stores special tokens as strings or AddedToken objects (`{content}`). */
function specialTokenStrings(config: Record<string, unknown>): SpecialTokenStrings {
  const tokens: SpecialTokenStrings = {};
  for (const key of SPECIAL_TOKEN_KEYS) {
    const value = config[key];
    if (typeof value === 'string') tokens[key] = value;
    else if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
      tokens[key] = (value as { content: string }).content;
    }
  }
  return tokens;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
