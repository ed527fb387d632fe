import crypto from 'node:crypto';
import type { Engine } from '../engine/client.js';
import type { GenerateRequest } from '../engine/types.js';
import { ApiError } from './errors.js';
import type { ChoicePlan } from './generation.js';
import type { TextTokenizer } from '../model/tokenizer.js';

/**
 * Refuses a request whose prompts × n exceed what the engine's queue can ever hold, before any
 * prompt is tokenized: a 100,000-prompt list must cost a count, not 100,000 encodings.
 */
export function checkChoiceCount(prompts: number, n: number, maxChoices: number, param: string): void {
  if (prompts * n > maxChoices) {
    throw new ApiError(400, `${param} has ${prompts} prompt${prompts === 1 ? '' : 's'} × n=${n} = ${prompts * n} choices; one request may have at most ${maxChoices} (--max-queue, or --tenant-max-concurrent if smaller)`, param, 'too_many_choices');
  }
}

/**
 * Tokenizes a prompt text unless it surely exceeds the context: no token covers more than the
 * vocabulary's longest entry, so a long enough text is refused without encoding it (encoding
 * time grows with the text, and the body limit alone allows megabytes).
 */
export function encodePrompt(tokenizer: TextTokenizer, text: string, maxContext: number, param: string): number[] {
  const atLeast = tokenizer.minimumTokens(text);
  if (atLeast >= maxContext) throw new ApiError(400, `${param} of ${text.length} characters is at least ${atLeast} tokens; the context holds ${maxContext}`, param, 'context_length_exceeded');
  return tokenizer.encode(text);
}

/** Sampling and output options shared by completions and chat completions, already defaulted. */
export interface PlanOptions {
  /** Engine keys of the deltas the choices run on ([] for the base). */
  deltas: string[];
  /** Positions those deltas add before every prompt (they count against the context). */
  virtualTokens: number;
  maxTokens: number;
  /** Field name to blame for a too-large max_tokens. */
  maxTokensParam: string;
  temperature: number;
  topP: number;
  topK: number;
  n: number;
  seed?: number;
  stop: string[];
  echo: boolean;
  /** Alternatives per token when logprobs are on; null: off. */
  logprobs: number | null;
  deadline?: number;
}

/**
 * One engine request per prompt x n. Choice j of a seeded request uses seed + j, so choices
 * differ from each other yet each is reproducible on its own, batched or not.
 */
export function planChoices(engine: Engine, prompts: number[][], options: PlanOptions): ChoicePlan[] {
  const maxContext = engine.info.maxContext - options.virtualTokens;
  const virtual = options.virtualTokens ? ` after the deltas' ${options.virtualTokens} virtual tokens` : '';
  return prompts.flatMap((promptIds, p) => {
    if (promptIds.length >= maxContext) throw new ApiError(400, `prompt has ${promptIds.length} tokens; the context holds ${maxContext}${virtual}`, 'prompt', 'context_length_exceeded');
    if (promptIds.length + options.maxTokens > maxContext) {
      throw new ApiError(400, `${options.maxTokensParam} ${options.maxTokens} plus the prompt's ${promptIds.length} tokens exceeds the context of ${maxContext}${virtual}`, options.maxTokensParam, 'context_length_exceeded');
    }
    return Array.from({ length: options.n }, (_, j): ChoicePlan => {
      const request: GenerateRequest = {
        id: crypto.randomUUID(),
        promptIds,
        deltas: options.deltas,
        maxTokens: options.maxTokens,
        sampling: { temperature: options.temperature, topP: options.topP, topK: options.topK, seed: options.seed === undefined ? undefined : options.seed + j },
        stopTokenIds: engine.info.eosTokenIds,
        promptLogprobs: options.echo && options.logprobs !== null,
        tokenLogprobs: options.logprobs !== null,
        topLogprobs: options.logprobs ?? 0,
        deadline: options.deadline,
      };
      return { index: p * options.n + j, request, stop: options.stop, echo: options.echo, logprobs: options.logprobs };
    });
  });
}

/** Checks token ids against the vocabulary; `param` names the field in errors. */
export function checkTokenIds(lists: number[][], vocab: number, param: string): void {
  lists.forEach((ids, i) => {
    if (ids.length === 0) throw new ApiError(400, `${param} must not be empty`, param);
    const bad = ids.find((t) => t >= vocab);
    if (bad !== undefined) throw new ApiError(400, `${param}${lists.length > 1 ? `[${i}]` : ''} has token id ${bad}, outside the vocabulary of ${vocab}`, param);
  });
}

/** The request fields both endpoints share, with OpenAI's defaults (temperature 1, top_p 1, n 1). */
export interface SamplingFields {
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  n?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
}

export function samplingOptions(body: SamplingFields): Pick<PlanOptions, 'temperature' | 'topP' | 'topK' | 'n' | 'seed' | 'stop'> {
  const stop = typeof body.stop === 'string' ? [body.stop] : (body.stop ?? []);
  return {
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? 1,
    topK: body.top_k ?? 0,
    n: body.n ?? 1,
    seed: body.seed ?? undefined,
    stop: stop.filter((s) => s.length > 0),
  };
}
