import { z } from 'zod';
import '../deltas/kinds/index.js';
import { trainableKinds } from '../deltas/training.js';
import type { FineTuneMethod } from '../training/job-types.js';

const positiveInt = z.number().int().positive();

/** OpenAI's `hyperparameters`, with 'auto' accepted where OpenAI accepts it (meaning our default). */
const Hyperparameters = z
  .object({
    n_epochs: z.union([positiveInt.max(1000), z.literal('auto')]).optional(),
    max_steps: positiveInt.max(1_000_000).optional(),
    batch_size: z.union([positiveInt.max(1024), z.literal('auto')]).default('auto'),
    learning_rate: z.number().positive().max(1).optional(),
    learning_rate_multiplier: z.union([z.number().positive().max(100), z.literal('auto')]).optional(),
    weight_decay: z.number().min(0).max(1).default(0),
    max_grad_norm: z.number().positive().max(1e6).nullable().default(1),
    warmup_steps: z.number().int().min(0).max(1_000_000).default(0),
    lr_scheduler: z.enum(['constant', 'linear', 'cosine']).default('linear'),
  })
  .strict()
  .refine((h) => !(h.max_steps !== undefined && h.n_epochs !== undefined && h.n_epochs !== 'auto'), { message: 'give n_epochs or max_steps, not both', path: ['max_steps'] });

/**
 * OpenAI's `method`: `type` is one of the registered trainable kinds, and the object under that
 * name holds its options (each kind's schema: its names, its defaults, nothing unknown), e.g.
 * `{ type: 'lora', lora: { r: 16 } }`. A type that is not trainable here is refused with the
 * list of those that are; without `method`, a LoRA with its defaults.
 */
function methodSchema(): z.ZodType<FineTuneMethod> {
  const methods = trainableKinds().map((t) => z.object({ type: z.literal(t.name), [t.name]: t.options.prefault({}) }).strict());
  const [first, ...rest] = methods;
  if (!first) throw new Error('no trainable kind is registered');
  return z.discriminatedUnion('type', [first, ...rest]) as unknown as z.ZodType<FineTuneMethod>;
}

/** POST /admin/v1/fine_tuning/jobs, as OpenAI's fine-tuning API shapes it, plus deltaserve's tenant/name. */
export const FineTuningJobRequest = z
  .object({
    model: z.string().min(1),
    training_file: z.string().min(1),
    validation_file: z.string().min(1).nullable().optional(),
    tenant: z.string().min(1).max(64).optional(),
    suffix: z.string().min(1).max(64).optional(),
    name: z.string().min(1).max(64).optional(),
    method: methodSchema().prefault({ type: 'lora' }),
    hyperparameters: Hyperparameters.default({ batch_size: 'auto', weight_decay: 0, max_grad_norm: 1, warmup_steps: 0, lr_scheduler: 'linear' }),
    seed: z.number().int().min(0).max(2 ** 31 - 1).optional(),
  })
  .strict();

export type FineTuningJobRequest = z.infer<typeof FineTuningJobRequest>;
