import { z } from 'zod';

const tokenIds = z.array(z.number().int().nonnegative()).min(1);

/** POST /v1/completions, OpenAI's legacy completions plus vLLM's return_token_ids; unknown fields are ignored as OpenAI does. */
export const CompletionRequest = z
  .object({
    model: z.string().min(1),
    prompt: z.union([z.string(), tokenIds, z.array(z.string()).min(1), z.array(tokenIds).min(1)]),
    max_tokens: z.number().int().min(0).nullish(),
    temperature: z.number().min(0).max(2).nullish(),
    top_p: z.number().gt(0).max(1).nullish(),
    top_k: z.number().int().min(-1).nullish(),
    n: z.number().int().min(1).max(16).nullish(),
    seed: z.number().int().nullish(),
    stop: z.union([z.string(), z.array(z.string()).max(8)]).nullish(),
    echo: z.boolean().nullish(),
    logprobs: z.number().int().min(0).max(20).nullish(),
    return_token_ids: z.boolean().nullish(),
    stream: z.boolean().nullish(),
    stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
    user: z.string().nullish(),
  });

export type CompletionRequest = z.infer<typeof CompletionRequest>;
