import { z } from 'zod';

/**
 * The JSON bodies the server answers with, as zod schemas: the route table (routes.ts) names one
 * per status, `/openapi.json` is generated from them, and a test validates a sample response of
 * every route against the generated document. Objects are strict, so a field a route adds
 * without adding it here fails that test.
 */

const int = z.number().int();
const count = int.min(0);
/** Unix seconds. */
const seconds = int.min(0);
const sha256 = z.string().regex(/^[0-9a-f]{64}$/);

/** OpenAI's error body, the answer of every failure. */
export const ErrorResponse = z.strictObject({
  error: z.strictObject({ message: z.string(), type: z.string(), param: z.string().nullable(), code: z.string().nullable() }),
});

export const Usage = z.strictObject({ prompt_tokens: count, completion_tokens: count, total_tokens: count });

const FinishReason = z.enum(['stop', 'length', 'timeout']);

/** Legacy completions logprobs: parallel arrays over the tokens. */
const CompletionLogprobs = z.strictObject({
  tokens: z.array(z.string()),
  token_logprobs: z.array(z.number().nullable()),
  top_logprobs: z.array(z.record(z.string(), z.number()).nullable()),
  text_offset: z.array(count),
});

const tokenIds = z.array(count);

export const Completion = z.strictObject({
  id: z.string().startsWith('cmpl-'),
  object: z.literal('text_completion'),
  created: seconds,
  model: z.string(),
  choices: z.array(
    z.strictObject({ index: count, text: z.string(), logprobs: CompletionLogprobs.nullable(), finish_reason: FinishReason, prompt_token_ids: tokenIds.optional(), token_ids: tokenIds.optional() }),
  ),
  usage: Usage,
  prompt_token_ids: z.union([tokenIds, z.array(tokenIds)]).optional(),
});

/** One `data:` event of a streamed completion: a piece of one choice, or the final usage (no choices). */
export const CompletionChunk = z.strictObject({
  id: z.string().startsWith('cmpl-'),
  object: z.literal('text_completion'),
  created: seconds,
  model: z.string(),
  choices: z.array(z.strictObject({ index: count, text: z.string(), logprobs: CompletionLogprobs.nullable(), finish_reason: FinishReason.nullable(), token_ids: tokenIds.optional() })),
  usage: Usage.optional(),
});

const TokenLogprob = z.strictObject({ token: z.string(), logprob: z.number(), bytes: z.array(int.min(0).max(255)) });
const ChatLogprobs = z.strictObject({ content: z.array(TokenLogprob.extend({ top_logprobs: z.array(TokenLogprob) })) });

export const ChatCompletion = z.strictObject({
  id: z.string().startsWith('chatcmpl-'),
  object: z.literal('chat.completion'),
  created: seconds,
  model: z.string(),
  choices: z.array(
    z.strictObject({
      index: count,
      message: z.strictObject({ role: z.literal('assistant'), content: z.string() }),
      logprobs: ChatLogprobs.nullable(),
      finish_reason: FinishReason,
      token_ids: tokenIds.optional(),
    }),
  ),
  usage: Usage,
  prompt_token_ids: tokenIds.optional(),
});

/** One `data:` event of a streamed chat completion: a role chunk first, then content deltas, the finish, optional usage. */
export const ChatCompletionChunk = z.strictObject({
  id: z.string().startsWith('chatcmpl-'),
  object: z.literal('chat.completion.chunk'),
  created: seconds,
  model: z.string(),
  choices: z.array(
    z.strictObject({
      index: count,
      delta: z.strictObject({ role: z.literal('assistant').optional(), content: z.string().optional() }),
      logprobs: ChatLogprobs.nullable(),
      finish_reason: FinishReason.nullable(),
      token_ids: tokenIds.optional(),
    }),
  ),
  usage: Usage.optional(),
});

export const ModelList = z.strictObject({
  object: z.literal('list'),
  data: z.array(z.strictObject({ id: z.string(), object: z.literal('model'), created: seconds, owned_by: z.string(), root: z.string(), parent: z.string().nullable() })),
});

/** A delta as the caller sees it (`id` is `name` for its own, `owner/name` for another tenant's). */
export const Delta = z.strictObject({
  id: z.string(),
  object: z.literal('delta'),
  name: z.string(),
  owner: z.string(),
  version: int.min(1),
  latest_version: int.min(1),
  public: z.boolean(),
  kind: z.string(),
  family: z.enum(['reparameterization', 'addition', 'specification']).nullable(),
  summary: z.record(z.string(), z.union([z.number(), z.string(), z.boolean()])),
  virtual_tokens: count,
  sha256: sha256.optional(),
  size: count.optional(),
  created_at: seconds,
  parent: z.string(),
});

export const DeltaUploaded = Delta.extend({ sha256, size: count, warnings: z.array(z.string()) });

export const DeltaWithVersions = Delta.extend({
  sha256,
  size: count,
  versions: z.array(z.strictObject({ version: int.min(1), sha256, size: count, created_at: seconds })),
});

export const DeltaList = z.strictObject({ object: z.literal('list'), data: z.array(Delta) });

export const DeltaDeleted = z.strictObject({ id: z.string(), object: z.literal('delta'), deleted: z.literal(true) });

/** What prefetch, pin and unpin report. */
export const DeltaResidency = z.strictObject({ id: z.string().regex(/^[^/]+\/[^@]+@[1-9][0-9]*$/), object: z.literal('delta.residency'), host: z.boolean(), slot: count.nullable(), pinned: z.boolean() });

/** A PEFT `adapter_config.json`, served byte-identical to the upload. */
export const AdapterConfig = z.looseObject({ peft_type: z.string() });

export const TrainingFile = z.strictObject({
  id: z.string().regex(/^file-[0-9a-f]{24}$/),
  object: z.literal('file'),
  bytes: count,
  created_at: seconds,
  filename: z.string(),
  purpose: z.literal('fine-tune'),
  status: z.literal('processed'),
  tenant: z.string(),
  rows: count,
  sha256,
});

export const TrainingFileList = z.strictObject({ object: z.literal('list'), data: z.array(TrainingFile), has_more: z.boolean() });

export const TrainingFileDeleted = z.strictObject({ id: z.string(), object: z.literal('file'), deleted: z.literal(true) });

export const FineTuningJob = z.strictObject({
  id: z.string().startsWith('ftjob-'),
  object: z.literal('fine_tuning.job'),
  created_at: seconds,
  finished_at: seconds.nullable(),
  model: z.string(),
  fine_tuned_model: z.string().nullable(),
  organization_id: z.string(),
  status: z.enum(['queued', 'running', 'succeeded', 'failed', 'cancelled']),
  training_file: z.string(),
  validation_file: z.string().nullable(),
  hyperparameters: z.strictObject({
    n_epochs: int.min(1).nullable(),
    max_steps: int.min(1).nullable(),
    batch_size: int.min(1),
    learning_rate: z.number(),
    weight_decay: z.number(),
    max_grad_norm: z.number().nullable(),
    warmup_steps: count,
    lr_scheduler: z.enum(['constant', 'linear', 'cosine']),
  }),
  /** `{type: <kind>, <kind>: {options}}`: the options depend on the kind (docs/delta-kinds.md). */
  method: z.looseObject({ type: z.string() }),
  seed: int,
  trained_tokens: count,
  error: z.strictObject({ code: z.string(), message: z.string(), param: z.string().nullable() }).nullable(),
  result_files: z.array(z.string()),
  estimated_finish: seconds.nullable(),
  step: count,
  total_steps: count.nullable(),
  loss: z.number().nullable(),
  valid_loss: z.number().nullable(),
  tokens_per_second: z.number().nullable(),
  eta_seconds: z.number().nullable(),
});

export const FineTuningJobList = z.strictObject({ object: z.literal('list'), data: z.array(FineTuningJob), has_more: z.boolean() });

export const FineTuningJobEvent = z.strictObject({
  id: z.string(),
  object: z.literal('fine_tuning.job.event'),
  created_at: seconds,
  level: z.enum(['info', 'warn', 'error']),
  message: z.string(),
  type: z.enum(['message', 'metrics']),
  data: z.record(z.string(), z.unknown()).nullable(),
});

export const FineTuningJobEventList = z.strictObject({ object: z.literal('list'), data: z.array(FineTuningJobEvent), has_more: z.boolean() });

export const HealthLive = z.strictObject({ status: z.literal('ok') });
export const HealthReady = z.strictObject({ status: z.literal('ready'), model: z.string() });

/** This document: OpenAPI 3.1 (its own schema is OpenAPI's, only its frame is checked here). */
export const OpenApiDocument = z.looseObject({ openapi: z.literal('3.1.0'), info: z.looseObject({ title: z.string(), version: z.string() }), paths: z.record(z.string(), z.record(z.string(), z.unknown())) });
