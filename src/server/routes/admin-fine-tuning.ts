import crypto from 'node:crypto';
import { Hono, type Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import { isValidName, nameError, parseDeltaKey } from '../../deltas/ref.js';
import { trainableKind, TrainingOptionsError } from '../../deltas/training.js';
import { methodOptions, TERMINAL, type FineTuneMethod, type FineTuneSpec, type JobEvent } from '../../training/job-types.js';
import { validBody } from '../middleware/json-body.js';
import type { ServerState } from '../context.js';
import { ApiError } from '../errors.js';
import { FineTuningJobRequest } from '../fine-tuning-schema.js';
import { freshenDeltas, resolveModel } from '../resolve.js';
import { isKnownTenant } from '../auth.js';
import { audit } from '../audit.js';
import { idempotencyKeyOf, requireTraining } from './admin-common.js';
import { checkDeltaName } from './deltas.js';

/**
 * Fine-tuning jobs (admin keys), in OpenAI's shapes: create, list, retrieve, events (a list,
 * or SSE with `?stream=true` until the job ends) and cancel. A finished job's adapter is stored
 * as a delta of `tenant` and named in `fine_tuned_model`.
 */
export function adminFineTuningRoutes(state: ServerState): Hono {
  const app = new Hono();
  const base = '/admin/v1/fine_tuning/jobs';

  app.post(base, async (c) => {
    const body = validBody(c, FineTuningJobRequest);
    await freshenDeltas(state, body.model, body.tenant ?? c.get('tenant'));
    // Files uploaded through another replica are looked up in the store before toSpec checks them.
    for (const id of [body.training_file, body.validation_file]) if (id) await requireTraining(state).files.find(id);
    const spec = toSpec(state, body, c.get('tenant'));
    state.quotas.checkJob(spec.tenant, spec.name);
    const idempotencyKey = idempotencyKeyOf(c);
    const job = await requireTraining(state).jobs.create(spec, idempotencyKey !== undefined ? { idempotencyKey } : {}).catch((error: Error & { code?: string }) => {
      if (error.code === 'idempotency_key_reused') throw new ApiError(422, error.message, 'Idempotency-Key', error.code);
      throw error;
    });
    audit(state, c, 'job.create', { job: job.id, owner: spec.tenant, delta: spec.name });
    return c.json(job, 201);
  });

  app.get(base, (c) => {
    // The list is as fresh as the last look at the store (every third of --job-lease-ms, at most a second).
    const jobs = requireTraining(state).jobs.list();
    return c.json(page(jobs, c));
  });

  app.get(`${base}/:id`, async (c) => {
    return c.json(await findJob(state, c.req.param('id')));
  });

  app.post(`${base}/:id/cancel`, async (c) => {
    const job = await findJob(state, c.req.param('id'));
    if (TERMINAL.has(job.status)) throw new ApiError(409, `job ${job.id} has already ${job.status}`, 'id', 'job_finished');
    const cancelled = await requireTraining(state).jobs.cancel(job.id);
    audit(state, c, 'job.cancel', { job: job.id });
    return c.json(cancelled);
  });

  app.get(`${base}/:id/events`, async (c) => {
    const job = await findJob(state, c.req.param('id'));
    const jobs = requireTraining(state).jobs;
    if (c.req.query('stream') !== 'true') return c.json(page([...jobs.events(job.id)].reverse(), c));
    return streamSSE(c, async (stream) => {
      const pending: JobEvent[] = [...jobs.events(job.id)];
      let wake: (() => void) | undefined;
      let closed = false;
      const unsubscribe = jobs.subscribe(job.id, (event) => {
        if (event) pending.push(event);
        else closed = true;
        wake?.();
      });
      stream.onAbort(() => wake?.());
      try {
        while (!stream.aborted) {
          while (pending.length) await stream.writeSSE({ data: JSON.stringify(pending.shift()) });
          if (closed || TERMINAL.has(jobs.get(job.id)!.status)) break;
          await new Promise<void>((resolve) => (wake = resolve));
        }
        if (!stream.aborted) await stream.writeSSE({ data: '[DONE]' });
      } finally {
        unsubscribe();
      }
    });
  });

  return app;
}

/** The job as the store has it (created or run by any replica). */
async function findJob(state: ServerState, id: string) {
  const job = (await requireTraining(state).jobs.find(id))?.job;
  if (!job) throw new ApiError(404, `no fine-tuning job '${id}'`, 'id', 'job_not_found');
  return job;
}

/** OpenAI's cursor pagination: `after` an id, at most `limit` (default 20, max 100). */
function page<T extends { id: string }>(items: T[], c: Context): { object: 'list'; data: T[]; has_more: boolean } {
  const limitText = c.req.query('limit');
  const limit = limitText === undefined ? 20 : Number(limitText);
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw new ApiError(400, `limit must be an integer from 1 to 100, got '${limitText}'`, 'limit', 'invalid_value');
  const after = c.req.query('after');
  const start = after === undefined ? 0 : items.findIndex((item) => item.id === after) + 1;
  if (after !== undefined && start === 0) throw new ApiError(400, `no item '${after}' to page after`, 'after', 'invalid_value');
  return { object: 'list', data: items.slice(start, start + limit), has_more: start + limit < items.length };
}

/** Checks everything that can be checked before the job is queued, naming the field that failed. */
function toSpec(state: ServerState, body: FineTuningJobRequest, caller: string): FineTuneSpec {
  const training = requireTraining(state);
  const tenant = body.tenant ?? caller;
  if (!isValidName(tenant)) throw new ApiError(400, nameError('tenant', tenant), 'tenant', 'invalid_value');
  if (!isKnownTenant(state.auth, tenant)) throw new ApiError(400, `tenant '${tenant}' does not exist${state.auth ? ` in ${state.auth.source}` : ' (open mode has only the default tenant)'}`, 'tenant', 'unknown_tenant');
  const key = resolveModel(state, body.model, tenant);
  const from = key === null ? undefined : parseDeltaKey(key);
  for (const [param, id] of [['training_file', body.training_file], ['validation_file', body.validation_file]] as const) {
    if (id && !training.files.get(id)) throw new ApiError(400, `${param} '${id}' does not exist; upload it to /admin/v1/files first`, param, 'invalid_file');
  }
  const name = body.name ?? (body.suffix ? `${body.suffix}` : `ft-${crypto.randomBytes(4).toString('hex')}`);
  checkDeltaName(state, name, body.name ? 'name' : 'suffix');
  checkMethod(state, body.method, from ? { model: body.model, ...from } : undefined);
  const h = body.hyperparameters;
  const multiplier = typeof h.learning_rate_multiplier === 'number' ? h.learning_rate_multiplier : 1;
  return {
    model: body.model,
    ...(from ? { from } : {}),
    trainingFile: body.training_file,
    ...(body.validation_file ? { validationFile: body.validation_file } : {}),
    tenant,
    name,
    method: body.method,
    hyper: {
      ...(h.max_steps !== undefined ? { maxSteps: h.max_steps } : { nEpochs: typeof h.n_epochs === 'number' ? h.n_epochs : 3 }),
      batchSize: typeof h.batch_size === 'number' ? h.batch_size : 8,
      learningRate: h.learning_rate ?? 1e-4 * multiplier,
      weightDecay: h.weight_decay,
      maxGradNorm: h.max_grad_norm,
      warmupSteps: h.warmup_steps,
      lrScheduler: h.lr_scheduler,
    },
    seed: body.seed ?? crypto.randomInt(0, 2 ** 31 - 1),
  };
}

/**
 * The method's options checked against the backbone and the server (a 400 naming the option), and
 * the kind trainable here: served by this server, and continuing only from a delta of its kind.
 */
function checkMethod(state: ServerState, method: FineTuneMethod, from: { model: string; owner: string; name: string } | undefined): void {
  const trainable = trainableKind(method.type);
  const { settings: { limits }, arch } = requireTraining(state);
  if (limits.kinds && !limits.kinds.includes(trainable.deltaKind)) {
    throw new ApiError(400, `method.type '${method.type}' trains a ${trainable.deltaKind} delta, which this server does not serve (--delta-kinds ${limits.kinds.join(',')})`, 'method.type', 'invalid_value');
  }
  try {
    trainable.resolve(arch, methodOptions(method), limits);
  } catch (err) {
    if (!(err instanceof TrainingOptionsError)) throw err;
    const param = `method.${method.type}.${err.field}`;
    throw new ApiError(400, `${param}: ${err.message}`, param, 'invalid_value');
  }
  const kind = from && state.deltas.get(from.owner, from.name)?.kind;
  if (kind && kind !== trainable.deltaKind) {
    throw new ApiError(400, `model '${from.model}' is a ${kind} delta; a ${method.type} job continues only from a ${trainable.deltaKind} delta`, 'model', 'invalid_value');
  }
}
