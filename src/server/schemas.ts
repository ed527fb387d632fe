import { z } from 'zod';

const tokenIds = z.array(z.number().int().nonnegative()).min(1);

/** Sampling and output fields both generation endpoints take, with OpenAI's ranges. */
const generationFields = {
  model: z.string().min(1).max(1024),
  /** More deltas to stack on the request's row, as references (deltaserve's composition; see resolveDeltas). */
  delta_ids: z.array(z.string().min(1).max(256)).max(8).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.number().int().min(-1).nullish(),
  n: z.number().int().min(1).max(16).nullish(),
  seed: z.number().int().nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(8)]).nullish(),
  return_token_ids: z.boolean().nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  user: z.string().nullish(),
};

/** POST /v1/completions, OpenAI's legacy completions plus vLLM's return_token_ids; unknown fields are ignored as OpenAI does. */
export const CompletionRequest = z.object({
  ...generationFields,
  prompt: z.union([z.string(), tokenIds, z.array(z.string()).min(1), z.array(tokenIds).min(1)]),
  max_tokens: z.number().int().min(0).nullish(),
  echo: z.boolean().nullish(),
  logprobs: z.number().int().min(0).max(20).nullish(),
});

export type CompletionRequest = z.infer<typeof CompletionRequest>;

const ContentPart = z.object({ type: z.literal('text'), text: z.string() });

/** One chat message; content may be a string or a list of text parts (other part types are refused). */
export const ChatMessage = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: z.union([z.string(), z.array(ContentPart)]).nullish(),
  name: z.string().nullish(),
});

/** POST /v1/chat/completions, OpenAI chat completions plus top_k and return_token_ids. */
export const ChatCompletionRequest = z.object({
  ...generationFields,
  messages: z.array(ChatMessage).min(1),
  max_tokens: z.number().int().min(1).nullish(),
  max_completion_tokens: z.number().int().min(1).nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(20).nullish(),
});

export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;
