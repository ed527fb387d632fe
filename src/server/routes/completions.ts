import crypto from 'node:crypto';
import { Hono, type Context } from 'hono';
import type { ServerState } from '../context.js';
import { ApiError } from '../errors.js';
import { collectChoices, startChoices, TTFT_HEADER, type ChoicePiece, type ChoicePlan } from '../generation.js';
import type { GenerateEvent } from '../../engine/types.js';
import { checkTokenIds, encodePrompt, planChoices, samplingOptions } from '../plan.js';
import { CompletionRequest } from '../schemas.js';
import { validBody } from '../middleware/json-body.js';
import { requestAttributes, tracedStream } from '../tracing/generation-trace.js';
import { recordGeneratedTokens, type RequestedChoices } from '../limits/rate-limit.js';

/** POST /v1/completions (OpenAI legacy completions). */
export function completionRoutes(state: ServerState): Hono {
  const app = new Hono();
  app.post('/v1/completions', async (c) => {
    const started = performance.now();
    const t = c.get('trace');
    const engine = c.get('engine');
    const body = validBody(c, CompletionRequest);
    const echo = body.echo ?? false;
    const maxTokens = body.max_tokens ?? 16;
    t.request(body.model, requestAttributes(body, maxTokens), typeof body.prompt === 'string' ? body.prompt : JSON.stringify(body.prompt));
    const resolved = c.get('deltas');
    const prompts = promptIdLists(state, body.prompt);
    if (maxTokens === 0 && !echo) throw new ApiError(400, 'max_tokens must be at least 1 unless echo is true', 'max_tokens');
    const plans = planChoices(engine, prompts, {
      deltas: resolved.keys,
      virtualTokens: resolved.virtualTokens,
      maxTokens,
      maxTokensParam: 'max_tokens',
      ...samplingOptions(body),
      echo,
      logprobs: body.logprobs ?? null,
      deadline: state.requestTimeoutMs ? Date.now() + state.requestTimeoutMs : undefined,
    });
    for (const plan of plans) plan.observe = observeChoice(c, plan);
    const meta = { id: `cmpl-${crypto.randomUUID()}`, created: Math.floor(Date.now() / 1000), model: body.model };
    const choices = await startChoices(engine, state.tokenizer, plans, c.req.raw.signal);
    if (body.stream) return streamCompletion(c, state, choices, meta, { includeUsage: body.stream_options?.include_usage ?? false, tokenIds: body.return_token_ids ?? false });
    const { results, firstTokenAt } = await collectChoices(choices, plans);
    if (firstTokenAt) c.header(TTFT_HEADER, (firstTokenAt - started).toFixed(1));
    return c.json({
      ...meta,
      object: 'text_completion',
      choices: results.map((r) => ({
        index: r.index,
        text: r.text,
        logprobs: r.logprobs ?? null,
        finish_reason: r.finishReason,
        ...(body.return_token_ids ? { prompt_token_ids: r.promptIds, token_ids: r.tokenIds } : {}),
      })),
      usage: usage(prompts.reduce((s, p) => s + p.length, 0), results.reduce((s, r) => s + r.completionTokens, 0)),
      ...(body.return_token_ids ? { prompt_token_ids: prompts.length === 1 ? prompts[0] : prompts } : {}),
    });
  });
  return app;
}

/** A choice's events feed its trace spans and charge its tokens to the tenant's token rate. */
export function observeChoice(c: Context, plan: ChoicePlan): (event: GenerateEvent) => void {
  const traced = c.get('trace').choice(plan.index, plan.request.promptIds.length);
  return (event) => {
    traced(event);
    if (event.type === 'token') recordGeneratedTokens(c, 1);
  };
}

export function usage(promptTokens: number, completionTokens: number) {
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}

/**
 * What a completion asks for: its prompts × n (checked and admitted by admitChoices).
 *
 * @example completionChoices({ model: 'm', prompt: ['a', 'b'], n: 3 }) // { prompts: 2, n: 3, param: 'prompt' }
 */
export function completionChoices(body: CompletionRequest): RequestedChoices {
  return { prompts: promptCount(body.prompt), n: body.n ?? 1, param: 'prompt' };
}

/** How many prompts `prompt` holds: a string or one token-id list is one. */
function promptCount(prompt: CompletionRequest['prompt']): number {
  return typeof prompt === 'string' || typeof prompt[0] === 'number' ? 1 : prompt.length;
}

function promptIdLists(state: ServerState, prompt: CompletionRequest['prompt']): number[][] {
  const encode = (text: string) => {
    if (!state.tokenizer) throw new ApiError(400, 'this model has no tokenizer; send prompt as token ids', 'prompt');
    return encodePrompt(state.tokenizer, text, state.engine!.info.maxContext, 'prompt');
  };
  const lists = typeof prompt === 'string' ? [encode(prompt)] : typeof prompt[0] === 'number' ? [prompt as number[]] : (prompt as (string | number[])[]).map((p) => (typeof p === 'string' ? encode(p) : p));
  checkTokenIds(lists, state.engine!.info.vocabSize, 'prompt');
  return lists;
}

/** SSE: one `data:` chunk per piece as soon as it exists (token_ids only when asked for), an optional usage chunk, then `data: [DONE]`. */
function streamCompletion(c: Context, state: ServerState, choices: AsyncGenerator<ChoicePiece>[], meta: { id: string; created: number; model: string }, options: { includeUsage: boolean; tokenIds: boolean }): Response {
  return tracedStream(c, state.streamsCut?.signal, async (stream) => {
    let aborted = false;
    stream.onAbort(() => {
      aborted = true;
      for (const pieces of choices) void pieces.return(undefined);
    });
    let promptTokens = 0;
    let completionTokens = 0;
    await Promise.all(
      choices.map(async (pieces) => {
        for await (const piece of pieces) {
          if (aborted) return;
          if (piece.finishReason) {
            promptTokens += piece.promptTokens ?? 0;
            completionTokens += piece.completionTokens ?? 0;
          }
          const choice = { index: piece.index, text: piece.text, logprobs: piece.logprobs ?? null, finish_reason: piece.finishReason ?? null, ...(options.tokenIds ? { token_ids: piece.tokenIds } : {}) };
          await stream.writeSSE({ data: JSON.stringify({ ...meta, object: 'text_completion', choices: [choice] }) });
        }
      }),
    );
    if (aborted) return;
    if (options.includeUsage) await stream.writeSSE({ data: JSON.stringify({ ...meta, object: 'text_completion', choices: [], usage: usage(promptTokens, completionTokens) }) });
    await stream.writeSSE({ data: '[DONE]' });
  });
}
