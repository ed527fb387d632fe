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
    const { spec, virtualTokens } = toSpec(state, body, c.get('tenant'));
    if (virtualTokens > 0) await checkRowsFit(state, spec, virtualTokens);
    if (spec.from) await checkContinuable(state, spec);
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
function toSpec(state: ServerState, body: FineTuningJobRequest, caller: string): { spec: FineTuneSpec; virtualTokens: number } {
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
  const virtualTokens = checkMethod(state, body.method, from ? { model: body.model, ...from } : undefined);
  const h = body.hyperparameters;
  const multiplier = typeof h.learning_rate_multiplier === 'number' ? h.learning_rate_multiplier : 1;
  const spec: FineTuneSpec = {
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
  return { spec, virtualTokens };
}

/**
 * The method's options checked against the backbone and the server (a 400 naming the option), and
 * the kind trainable here: served by this server, and continuing only from a delta of its kind.
 * Returns the positions the trained delta puts before every row (its virtual tokens), which must
 * leave room in the context.
 */
function checkMethod(state: ServerState, method: FineTuneMethod, from: { model: string; owner: string; name: string } | undefined): number {
  const trainable = trainableKind(method.type);
  const training = requireTraining(state);
  const { settings: { limits }, arch } = training;
  // A method that trains a whole model (full fine-tuning) publishes no delta: --delta-kinds does not concern it.
  if (trainable.result !== 'model' && limits.kinds && !limits.kinds.includes(trainable.deltaKind)) {
    throw new ApiError(400, `method.type '${method.type}' trains a ${trainable.deltaKind} delta, which this server does not serve (--delta-kinds ${limits.kinds.join(',')})`, 'method.type', 'invalid_value');
  }
  let resolved: unknown;
  try {
    resolved = trainable.resolve(arch, methodOptions(method), limits, training.backbone);
  } catch (err) {
    if (!(err instanceof TrainingOptionsError)) throw err;
    const param = `method.${method.type}.${err.field}`;
    throw new ApiError(400, `${param}: ${err.message}`, param, 'invalid_value');
  }
  const record = from && state.deltas.get(from.owner, from.name);
  if (record && record.kind !== trainable.deltaKind) {
    throw new ApiError(400, `model '${from.model}' is a ${record.kind} delta; a ${method.type} job continues only from a ${trainable.deltaKind} delta`, 'model', 'invalid_value');
  }
  // A continued delta keeps its own virtual tokens; PEFT names the count num_virtual_tokens for every prompt-learning method.
  const virtual = record ? record.virtualTokens : (trainable.virtualTokens?.(resolved) ?? 0);
  if (virtual > 0 && virtual >= training.context) {
    const param = record ? 'model' : `method.${method.type}.num_virtual_tokens`;
    throw new ApiError(400, `${param}: ${virtual} virtual tokens leave no room for a row in the context of ${training.context} tokens`, param, 'context_length_exceeded');
  }
  return virtual;
}

/**
 * Every row of the job's files must fit the context after the delta's virtual tokens (PEFT puts
 * them before each row); the first that does not is a 400 naming its file and line.
 */
/**
 * The delta a job continues from must be one the method can start from (e.g. a bottleneck adapter
 * in SeqBn's arrangement, a DoRA without per-module ranks): read it and build the starting point
 * now, so a job that is accepted does not fail at its first step; a refusal is a 400 naming `model`.
 */
async function checkContinuable(state: ServerState, spec: FineTuneSpec): Promise<void> {
  const training = requireTraining(state);
  const { owner, name, version } = spec.from!;
  const files = await state.deltaService!.readVersion(owner, name, version);
  const trainable = trainableKind(spec.method.type);
  try {
    trainable.fromDelta({ config: new TextDecoder().decode(files.config), weights: files.weights }, training.arch, training.backbone);
  } catch (err) {
    throw new ApiError(400, `model '${spec.model}' cannot be continued by method.type '${spec.method.type}': ${(err as Error).message.slice(0, 500)}`, 'model', 'invalid_value');
  }
}

async function checkRowsFit(state: ServerState, spec: FineTuneSpec, virtualTokens: number): Promise<void> {
  const training = requireTraining(state);
  const room = training.context - virtualTokens;
  for (const [param, id] of [['training_file', spec.trainingFile], ['validation_file', spec.validationFile]] as const) {
    const row = id === undefined ? undefined : await training.firstRowBeyond(id, room);
    if (!row) continue;
    const message = `${param} '${id}' line ${row.line}: the row has ${row.tokens} tokens; after the ${virtualTokens} virtual tokens of method.${spec.method.type} it needs ${row.tokens + virtualTokens} positions, and the context holds ${training.context}`;
    throw new ApiError(400, message, param, 'context_length_exceeded');
  }
}
