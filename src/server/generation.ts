import type { Engine } from '../engine/client.js';
import type { GenerateRequest } from '../engine/types.js';
import { IncrementalDecoder, type TextTokenizer } from '../model/tokenizer.js';
import { StopMatcher } from './stop-matcher.js';

/** One choice to generate: the engine request plus what the HTTP layer does with the tokens. */
export interface ChoicePlan {
  index: number;
  request: GenerateRequest;
  stop: string[];
  /** Prepend the prompt (text, token logprobs) to the choice. */
  echo: boolean;
  /** Report logprobs with this many alternatives per token; null: no logprobs. */
  logprobs: number | null;
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
  finishReason?: 'stop' | 'length';
  promptTokens?: number;
  completionTokens?: number;
}

/**
 * Runs one choice through the engine, turning token events into text pieces: incremental
 * detokenisation, stop strings (never emitted), echo and logprobs. Ends with a finishing piece.
 */
export async function* runChoice(engine: Engine, tokenizer: TextTokenizer | undefined, plan: ChoicePlan, signal?: AbortSignal): AsyncGenerator<ChoicePiece> {
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
  for await (const event of engine.generate(plan.request, signal)) {
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
        // Leaving the loop cancels the engine request; the row frees at its next step.
        yield { index: plan.index, text: '', tokenIds: [], finishReason: 'stop', promptTokens: promptIds.length, completionTokens: generated };
        return;
      }
    } else if (event.type === 'done') {
      const tail = stops.push(decoder ? decoder.flush() : '');
      const text = tail.stopped ? tail.emit : tail.emit + stops.flush();
      yield { index: plan.index, text, tokenIds: [], finishReason: tail.stopped || event.finishReason === 'stop' ? 'stop' : 'length', promptTokens: event.promptTokens, completionTokens: event.completionTokens };
      return;
    }
  }
}
