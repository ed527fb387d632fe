import crypto from 'node:crypto';
import { Hono, type Context } from 'hono';
import { validBody } from '../middleware/json-body.js';
import type { ServerState } from '../context.js';
import { ApiError } from '../errors.js';
import { collectChoices, startChoices, TTFT_HEADER, type ChoicePiece, type LogprobsBlock } from '../generation.js';
import { checkTokenIds, encodePrompt, planChoices, samplingOptions } from '../plan.js';
import { ChatCompletionRequest } from '../schemas.js';
import { observeChoice, usage } from './completions.js';
import { requestAttributes, tracedStream } from '../tracing/generation-trace.js';

/** POST /v1/chat/completions: messages rendered with the model's chat template, then generated like a completion. */
export function chatRoutes(state: ServerState): Hono {
  const app = new Hono();
  app.post('/v1/chat/completions', async (c) => {
    const started = performance.now();
    const t = c.get('trace');
    const engine = c.get('engine');
    const body = validBody(c, ChatCompletionRequest);
    t.request(body.model, {}, JSON.stringify(body.messages));
    const resolved = c.get('deltas');
    const promptIds = renderPrompt(state, body, engine.info.maxContext);
    const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? Math.min(engine.info.maxContext - promptIds.length, 1024);
    t.request(body.model, requestAttributes(body, maxTokens));
    checkTokenIds([promptIds], engine.info.vocabSize, 'messages');
    if (body.top_logprobs && !body.logprobs) throw new ApiError(400, 'top_logprobs requires logprobs: true', 'top_logprobs');
    const maxTokensParam = body.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens';
    const plans = planChoices(engine, [promptIds], {
      deltas: resolved.keys,
      virtualTokens: resolved.virtualTokens,
      maxTokens,
      maxTokensParam,
      ...samplingOptions(body),
      echo: false,
      logprobs: body.logprobs ? (body.top_logprobs ?? 0) : null,
      deadline: state.requestTimeoutMs ? Date.now() + state.requestTimeoutMs : undefined,
    });
    for (const plan of plans) plan.observe = observeChoice(c, plan);
    const meta = { id: `chatcmpl-${crypto.randomUUID()}`, created: Math.floor(Date.now() / 1000), model: body.model };
    const choices = await startChoices(engine, state.tokenizer, plans, c.req.raw.signal);
    if (body.stream) return streamChat(c, state, choices, meta, { includeUsage: body.stream_options?.include_usage ?? false, promptTokens: promptIds.length, tokenIds: body.return_token_ids ?? false });
    const { results, firstTokenAt } = await collectChoices(choices, plans);
    if (firstTokenAt) c.header(TTFT_HEADER, (firstTokenAt - started).toFixed(1));
    return c.json({
      ...meta,
      object: 'chat.completion',
      choices: results.map((r) => ({
        index: r.index,
        message: { role: 'assistant', content: r.text },
        logprobs: r.logprobs ? chatLogprobs(r.logprobs) : null,
        finish_reason: r.finishReason,
        ...(body.return_token_ids ? { token_ids: r.tokenIds } : {}),
      })),
      usage: usage(promptIds.length, results.reduce((s, r) => s + r.completionTokens, 0)),
      ...(body.return_token_ids ? { prompt_token_ids: promptIds } : {}),
    });
  });
  return app;
}

/** The chat template turns messages into the prompt; a model without one uses ChatML (see ChatTemplate). */
function renderPrompt(state: ServerState, body: ChatCompletionRequest, maxContext: number): number[] {
  if (!state.tokenizer || !state.chatTemplate) throw new ApiError(400, 'this model has no tokenizer or chat template; use /v1/completions with token ids', 'messages');
  const messages = body.messages.map((m) => ({ role: m.role, content: typeof m.content === 'string' ? m.content : (m.content ?? []).map((p) => p.text).join('') }));
  let text: string;
  try {
    text = state.chatTemplate.render(messages, { addGenerationPrompt: true });
  } catch (err) {
    throw new ApiError(400, `messages could not be rendered with the chat template: ${(err as Error).message}`, 'messages');
  }
  const atLeast = state.tokenizer.minimumTokens(text);
  if (atLeast >= maxContext) throw new ApiError(400, `the rendered messages are ${text.length} characters, at least ${atLeast} tokens; the context holds ${maxContext}`, 'messages', 'context_length_exceeded');
  // The template already writes any BOS it wants; adding special tokens again would double it.
  return state.tokenizer.encode(text, { addSpecialTokens: false });
}

/** Chat logprobs: one entry per token with its bytes and the top alternatives. */
function chatLogprobs(block: LogprobsBlock) {
  const bytes = (s: string) => Array.from(Buffer.from(s, 'utf8'));
  return {
    content: block.tokens.map((token, i) => ({
      token,
      logprob: block.token_logprobs[i]!,
      bytes: bytes(token),
      top_logprobs: Object.entries(block.top_logprobs[i] ?? {}).map(([t, logprob]) => ({ token: t, logprob, bytes: bytes(t) })),
    })),
  };
}

/** SSE chat chunks: a role chunk first, content deltas as they exist (token_ids only when asked for), the finish, optional usage, [DONE]. */
function streamChat(c: Context, state: ServerState, choices: AsyncGenerator<ChoicePiece>[], meta: { id: string; created: number; model: string }, options: { includeUsage: boolean; promptTokens: number; tokenIds: boolean }): Response {
  return tracedStream(c, state.streamsCut?.signal, async (stream) => {
    let aborted = false;
    stream.onAbort(() => {
      aborted = true;
      for (const pieces of choices) void pieces.return(undefined);
    });
    const chunk = (choice: object) => stream.writeSSE({ data: JSON.stringify({ ...meta, object: 'chat.completion.chunk', choices: [choice] }) });
    let completionTokens = 0;
    await Promise.all(
      choices.map(async (pieces, index) => {
        await chunk({ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null });
        for await (const piece of pieces) {
          if (aborted) return;
          if (piece.finishReason) completionTokens += piece.completionTokens ?? 0;
          const delta = piece.text || !piece.finishReason ? { content: piece.text } : {};
          await chunk({ index: piece.index, delta, logprobs: piece.logprobs ? chatLogprobs(piece.logprobs) : null, finish_reason: piece.finishReason ?? null, ...(options.tokenIds ? { token_ids: piece.tokenIds } : {}) });
        }
      }),
    );
    if (aborted) return;
    if (options.includeUsage) await stream.writeSSE({ data: JSON.stringify({ ...meta, object: 'chat.completion.chunk', choices: [], usage: usage(options.promptTokens, completionTokens) }) });
    await stream.writeSSE({ data: '[DONE]' });
  });
}
