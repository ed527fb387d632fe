import type { Engine } from '../engine/client.js';
import type { GenerateEvent, GenerateRequest } from '../engine/types.js';
import { ApiError } from './errors.js';
import { IncrementalDecoder, type TextTokenizer } from '../model/tokenizer.js';
import { StopMatcher } from './stop-matcher.js';

/**
 * `finish_reason` as clients see it: OpenAI's `stop` and `length`, and `timeout` for a generation
 * cut short by `--request-timeout-ms` (it is neither complete nor at its token limit).
 */
export type ResponseFinishReason = 'stop' | 'length' | 'timeout';

/** Response header with the server-measured time to first token of a non-streamed request, in ms. */
export const TTFT_HEADER = 'x-deltaserve-ttft-ms';

/** One choice to generate: the engine request plus what the HTTP layer does with the tokens. */
export interface ChoicePlan {
  index: number;
  request: GenerateRequest;
  stop: string[];
  /** Prepend the prompt (text, token logprobs) to the choice. */
  echo: boolean;
  /** Report logprobs with this many alternatives per token; null: no logprobs. */
  logprobs: number | null;
  /** Sees every engine event of this choice (tracing). */
  observe?: (event: GenerateEvent) => void;
}

/** Legacy completions logprobs: parallel arrays over the emitted tokens. */
export interface LogprobsBlock {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

/** A piece of a choice as it is produced; the last one carries finishReason. */
export interface ChoicePiece {
  index: number;
  text: string;
  tokenIds: number[];
  logprobs?: LogprobsBlock;
  finishReason?: ResponseFinishReason;
  promptTokens?: number;
  completionTokens?: number;
}

/**
 * Submits a choice and waits until the engine has queued it, so a refusal (queue full, unknown
 * delta) surfaces as an HTTP error before any response byte; then returns its pieces.
 */
export async function startChoice(engine: Engine, tokenizer: TextTokenizer | undefined, plan: ChoicePlan, signal?: AbortSignal): Promise<AsyncGenerator<ChoicePiece>> {
  const events = engine.generate(plan.request, signal)[Symbol.asyncIterator]();
  const first = await events.next();
  if (!first.done) plan.observe?.(first.value);
  if (first.done || first.value.type !== 'queued') throw new Error(`engine answered ${JSON.stringify(first.value)} before queueing`);
  return runChoice(events, tokenizer, plan);
}

/** Starts every choice; if one is refused, the others are cancelled and the refusal is thrown. */
export async function startChoices(engine: Engine, tokenizer: TextTokenizer | undefined, plans: ChoicePlan[], signal?: AbortSignal): Promise<AsyncGenerator<ChoicePiece>[]> {
  const settled = await Promise.allSettled(plans.map((plan) => startChoice(engine, tokenizer, plan, signal)));
  const refused = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (!refused) return settled.map((s) => (s as PromiseFulfilledResult<AsyncGenerator<ChoicePiece>>).value);
  await Promise.all(settled.map((s) => (s.status === 'fulfilled' ? s.value.return(undefined) : undefined)));
  throw refused.reason;
}

/**
 * Turns a choice's engine events into text pieces: incremental detokenisation, stop strings
 * (never emitted), echo and logprobs. Ends with a finishing piece.
 */
async function* runChoice(events: AsyncIterator<GenerateEvent>, tokenizer: TextTokenizer | undefined, plan: ChoicePlan): AsyncGenerator<ChoicePiece> {
  const decoder = tokenizer ? new IncrementalDecoder(tokenizer) : undefined;
  const stops = new StopMatcher(plan.stop);
  const tokenText = (id: number) => tokenizer?.decode([id]) ?? '';
  const topMap = (top?: { token: number; logprob: number }[]) => (top ? Object.fromEntries(top.map((t) => [tokenText(t.token), t.logprob])) : null);
  const newBlock = (): LogprobsBlock | undefined => (plan.logprobs === null ? undefined : { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] });
  const promptIds = plan.request.promptIds;
  let offset = 0;
  let generated = 0;
  // With echo, the prompt is the first piece; its logprobs (if asked) arrive before any token.
  let echo: ChoicePiece | undefined;
  if (plan.echo) {
    echo = { index: plan.index, text: tokenizer ? tokenizer.decode(promptIds) : '', tokenIds: [], logprobs: newBlock() };
    if (!plan.request.promptLogprobs) {
      offset = echo.text.length;
      yield echo;
      echo = undefined;
    }
  }
  try {
    for (;;) {
      const next = await events.next();
      if (next.done) return;
      const event = next.value;
      plan.observe?.(event);
      if (event.type === 'prompt' && echo) {
        const lp = echo.logprobs!;
        for (const entry of event.logprobs) {
          const text = tokenText(promptIds[lp.tokens.length]!);
          lp.tokens.push(text);
          lp.token_logprobs.push(entry ? entry.logprob : null);
          lp.top_logprobs.push(entry ? topMap(entry.top) : null);
          lp.text_offset.push(offset);
          offset += text.length;
        }
        if (lp.tokens.length >= promptIds.length) {
          yield echo;
          echo = undefined;
        }
      } else if (event.type === 'token') {
        generated++;
        const { emit, stopped } = stops.push(decoder ? decoder.push(event.token) : '');
        const lp = newBlock();
        if (lp) {
          lp.tokens.push(tokenText(event.token));
          lp.token_logprobs.push(event.logprob);
          lp.top_logprobs.push(plan.logprobs ? topMap(event.top) : null);
          lp.text_offset.push(offset);
        }
        offset += emit.length;
        yield { index: plan.index, text: emit, tokenIds: [event.token], logprobs: lp };
        if (stopped) {
          yield { index: plan.index, text: '', tokenIds: [], finishReason: 'stop', promptTokens: promptIds.length, completionTokens: generated };
          return;
        }
      } else if (event.type === 'done') {
        const tail = stops.push(decoder ? decoder.flush() : '');
        const text = tail.stopped ? tail.emit : tail.emit + stops.flush();
        if (event.finishReason === 'timeout' && generated === 0) throw new ApiError(504, 'the request timeout passed before generation started', null, 'timeout');
        const finishReason = tail.stopped || event.finishReason === 'stop' ? 'stop' : event.finishReason === 'timeout' ? 'timeout' : 'length';
        yield { index: plan.index, text, tokenIds: [], finishReason, promptTokens: event.promptTokens, completionTokens: event.completionTokens };
        return;
      }
    }
  } finally {
    // Leaving early (stop string, client gone) cancels the engine request.
    await events.return?.();
  }
}

/** A whole choice, for non-streamed responses. */
export interface ChoiceResult {
  index: number;
  text: string;
  tokenIds: number[];
  promptIds: number[];
  logprobs?: LogprobsBlock;
  finishReason: ResponseFinishReason;
  completionTokens: number;
}

/**
 * Drains every choice of a non-streamed request; returns the results and when the first token
 * of any choice arrived (performance.now(), 0 if none did), for the server-measured TTFT.
 */
export async function collectChoices(choices: AsyncGenerator<ChoicePiece>[], plans: ChoicePlan[]): Promise<{ results: ChoiceResult[]; firstTokenAt: number }> {
  let firstTokenAt = 0;
  const results = await Promise.all(choices.map((pieces, i) => collectChoice(pieces, plans[i]!, () => (firstTokenAt ||= performance.now()))));
  return { results, firstTokenAt };
}

/** Drains a choice's pieces into one result; `onFirstToken` fires when its first token arrives. */
export async function collectChoice(pieces: AsyncGenerator<ChoicePiece>, plan: ChoicePlan, onFirstToken?: () => void): Promise<ChoiceResult> {
  const result: ChoiceResult = { index: plan.index, text: '', tokenIds: [], promptIds: plan.request.promptIds, finishReason: 'length', completionTokens: 0 };
  for await (const piece of pieces) {
    if (piece.tokenIds.length && !result.tokenIds.length) onFirstToken?.();
    result.text += piece.text;
    result.tokenIds.push(...piece.tokenIds);
    if (piece.logprobs) result.logprobs = mergeLogprobs(result.logprobs, piece.logprobs);
    if (piece.finishReason) {
      result.finishReason = piece.finishReason;
      result.completionTokens = piece.completionTokens ?? result.tokenIds.length;
    }
  }
  return result;
}

function mergeLogprobs(into: LogprobsBlock | undefined, add: LogprobsBlock): LogprobsBlock {
  if (!into) return { tokens: [...add.tokens], token_logprobs: [...add.token_logprobs], top_logprobs: [...add.top_logprobs], text_offset: [...add.text_offset] };
  into.tokens.push(...add.tokens);
  into.token_logprobs.push(...add.token_logprobs);
  into.top_logprobs.push(...add.top_logprobs);
  into.text_offset.push(...add.text_offset);
  return into;
}
