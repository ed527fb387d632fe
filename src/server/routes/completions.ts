import crypto from 'node:crypto';
import { Hono, type Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { Engine } from '../../engine/client.js';
import type { GenerateRequest } from '../../engine/types.js';
import type { ServerState } from '../context.js';
import { ApiError } from '../errors.js';
import { runChoice, type ChoicePiece, type ChoicePlan, type LogprobsBlock } from '../generation.js';
import { CompletionRequest } from '../schemas.js';
import { parseJsonBody } from '../body.js';
import { requireEngine, resolveModel } from '../resolve.js';

/** POST /v1/completions (OpenAI legacy completions). */
export function completionRoutes(state: ServerState): Hono {
  const app = new Hono();
  app.post('/v1/completions', async (c) => {
    const engine = requireEngine(state);
    const body = CompletionRequest.parse(await parseJsonBody(c, state.maxBodyBytes));
    const delta = resolveModel(state, body.model);
    const prompts = promptIdLists(state, body.prompt);
    const plans = planChoices(state, engine, body, prompts, delta);
    const id = `cmpl-${crypto.randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    if (body.stream) return streamCompletion(c, engine, state, plans, { id, created, model: body.model });
    const results = await Promise.all(plans.map((plan) => collect(engine, state, plan, c.req.raw.signal)));
    const usage = { prompt_tokens: prompts.reduce((s, p) => s + p.length, 0), completion_tokens: results.reduce((s, r) => s + r.completionTokens, 0), total_tokens: 0 };
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    return c.json({
      id,
      object: 'text_completion',
      created,
      model: body.model,
      choices: results.map((r) => ({
        index: r.index,
        text: r.text,
        logprobs: r.logprobs ?? null,
        finish_reason: r.finishReason,
        ...(body.return_token_ids ? { prompt_token_ids: r.promptIds, token_ids: r.tokenIds } : {}),
      })),
      usage,
      ...(body.return_token_ids ? { prompt_token_ids: prompts.length === 1 ? prompts[0] : prompts } : {}),
    });
  });
  return app;
}

function promptIdLists(state: ServerState, prompt: CompletionRequest['prompt']): number[][] {
  const encode = (text: string) => {
    if (!state.tokenizer) throw new ApiError(400, 'this model has no tokenizer; send prompt as token ids', 'prompt');
    return state.tokenizer.encode(text);
  };
  const lists = typeof prompt === 'string' ? [encode(prompt)] : typeof prompt[0] === 'number' ? [prompt as number[]] : (prompt as (string | number[])[]).map((p) => (typeof p === 'string' ? encode(p) : p));
  const vocab = state.engine!.info.vocabSize;
  lists.forEach((ids, i) => {
    if (ids.length === 0) throw new ApiError(400, 'prompt must not be empty', 'prompt');
    const bad = ids.find((t) => t >= vocab);
    if (bad !== undefined) throw new ApiError(400, `prompt${lists.length > 1 ? `[${i}]` : ''} has token id ${bad}, outside the vocabulary of ${vocab}`, 'prompt');
  });
  return lists;
}

function planChoices(state: ServerState, engine: Engine, body: CompletionRequest, prompts: number[][], delta: string | null): ChoicePlan[] {
  const maxContext = engine.info.maxContext;
  const n = body.n ?? 1;
  const echo = body.echo ?? false;
  const logprobs = body.logprobs ?? null;
  const maxTokens = body.max_tokens ?? 16;
  if (maxTokens === 0 && !echo) throw new ApiError(400, 'max_tokens must be at least 1 unless echo is true', 'max_tokens');
  return prompts.flatMap((promptIds, p) => {
    if (promptIds.length >= maxContext) throw new ApiError(400, `prompt has ${promptIds.length} tokens; the context holds ${maxContext}`, 'prompt', 'context_length_exceeded');
    if (promptIds.length + maxTokens > maxContext) {
      throw new ApiError(400, `max_tokens ${maxTokens} plus the prompt's ${promptIds.length} tokens exceeds the context of ${maxContext}`, 'max_tokens', 'context_length_exceeded');
    }
    return Array.from({ length: n }, (_, j): ChoicePlan => {
      const request: GenerateRequest = {
        id: crypto.randomUUID(),
        promptIds,
        delta,
        maxTokens,
        sampling: {
          temperature: body.temperature ?? 1,
          topP: body.top_p ?? 1,
          topK: body.top_k ?? 0,
          seed: body.seed === null || body.seed === undefined ? undefined : body.seed + j,
        },
        stopTokenIds: engine.info.eosTokenIds,
        promptLogprobs: echo && logprobs !== null,
        tokenLogprobs: logprobs !== null,
        topLogprobs: logprobs ?? 0,
      };
      return { index: p * n + j, request, stop: typeof body.stop === 'string' ? [body.stop] : (body.stop ?? []), echo, logprobs };
    });
  });
}

interface ChoiceResult {
  index: number;
  text: string;
  tokenIds: number[];
  promptIds: number[];
  logprobs?: LogprobsBlock;
  finishReason: 'stop' | 'length';
  completionTokens: number;
}

async function collect(engine: Engine, state: ServerState, plan: ChoicePlan, signal: AbortSignal): Promise<ChoiceResult> {
  const result: ChoiceResult = { index: plan.index, text: '', tokenIds: [], promptIds: plan.request.promptIds, finishReason: 'length', completionTokens: 0 };
  for await (const piece of runChoice(engine, state.tokenizer, plan, signal)) {
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

/** SSE: one `data:` chunk per piece as soon as it exists, then `data: [DONE]`. */
function streamCompletion(c: Context, engine: Engine, state: ServerState, plans: ChoicePlan[], meta: { id: string; created: number; model: string }): Response {
  return streamSSE(c, async (stream) => {
    const abort = new AbortController();
    stream.onAbort(() => abort.abort());
    const write = (piece: ChoicePiece) =>
      stream.writeSSE({
        data: JSON.stringify({
          id: meta.id,
          object: 'text_completion',
          created: meta.created,
          model: meta.model,
          choices: [{ index: piece.index, text: piece.text, logprobs: piece.logprobs ?? null, finish_reason: piece.finishReason ?? null, token_ids: piece.tokenIds }],
        }),
      });
    await Promise.all(
      plans.map(async (plan) => {
        for await (const piece of runChoice(engine, state.tokenizer, plan, abort.signal)) {
          if (abort.signal.aborted) return;
          await write(piece);
        }
      }),
    );
    if (!abort.signal.aborted) await stream.writeSSE({ data: '[DONE]' });
  });
}
