import { z, type ZodType } from 'zod';
import { FineTuningJobRequest } from '../fine-tuning-schema.js';
import { ChatCompletionRequest, CompletionRequest } from '../schemas.js';
import * as R from './responses.js';

/** What a response of one status carries; each becomes one media type in the document. */
export type ResponseContract =
  | { description: string; json: ZodType; sse?: ZodType }
  | { description: string; text: string }
  | { description: string; binary: string };

/**
 * One operation of the HTTP API: where hono registers it (`route`, its pattern) and how the
 * document names it (`path`, with `{params}`), who may call it, its request and its responses.
 * Statuses in `errors` answer with the error body.
 */
export interface RouteContract {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  route: string;
  summary: string;
  /** `none`: no key ever; `key`: any tenant key; `admin`: admin keys; `metrics`: metrics or admin keys (or none with --public-metrics). */
  access: 'none' | 'key' | 'admin' | 'metrics';
  request?: { json?: ZodType; multipart?: ZodType; query?: z.ZodObject };
  responses: Record<number, ResponseContract>;
  errors: readonly number[];
}

/** The form of a delta upload (multipart/form-data). */
const DeltaUpload = z.strictObject({
  name: z.string().describe('the delta name'),
  adapter_config: z.string().meta({ format: 'binary', description: 'adapter_config.json as PEFT wrote it' }),
  adapter_model: z.string().meta({ format: 'binary', description: 'adapter_model.safetensors (or the adapters library\'s adapter.safetensors)' }),
  public: z.enum(['true', 'false']).optional().describe('admin keys only'),
});

/** The form of a training file upload (multipart/form-data). */
const TrainingFileUpload = z.strictObject({
  file: z.string().meta({ format: 'binary', description: 'JSONL: prompt/completion, messages, or input_ids/labels lines' }),
  purpose: z.literal('fine-tune'),
});

const Page = z.object({ limit: z.string().regex(/^[0-9]+$/).optional().describe('1-100, default 20'), after: z.string().optional().describe('the id to page after') });

const GENERATION_ERRORS = [400, 401, 403, 404, 413, 422, 429, 503, 504] as const;
const ADMIN_ERRORS = [400, 401, 403, 404, 503] as const;
const json = (description: string, schema: ZodType, sse?: ZodType): ResponseContract => ({ description, json: schema, ...(sse ? { sse } : {}) });

/**
 * Every route the app registers, in one table: `/openapi.json` is generated from it (openapi.ts),
 * and tests check that the routes hono registers are exactly these and that a sample response of
 * each validates against the generated document.
 */
export const ROUTES: readonly RouteContract[] = [
  { method: 'GET', path: '/health/live', route: '/health/live', summary: 'Liveness: 200 while the process serves HTTP and its engine is not given up on', access: 'none', responses: { 200: json('alive', R.HealthLive) }, errors: [503] },
  { method: 'GET', path: '/health/ready', route: '/health/ready', summary: 'Readiness: 200 once the model is loaded and the store read; 503 while starting, restarting or draining', access: 'none', responses: { 200: json('ready', R.HealthReady) }, errors: [503] },
  { method: 'GET', path: '/metrics', route: '/metrics', summary: 'Every metric in Prometheus text, then the model-server protocol gauges', access: 'metrics', responses: { 200: { description: 'Prometheus text exposition 0.0.4', text: 'text/plain' } }, errors: [401, 403] },
  { method: 'GET', path: '/openapi.json', route: '/openapi.json', summary: 'This document, generated from the route table', access: 'none', responses: { 200: json('OpenAPI 3.1', R.OpenApiDocument) }, errors: [] },
  { method: 'GET', path: '/v1/models', route: '/v1/models', summary: 'The base model (no parent) and the deltas the caller may use', access: 'key', responses: { 200: json('model list', R.ModelList) }, errors: [401, 403] },
  {
    method: 'POST', path: '/v1/completions', route: '/v1/completions', summary: 'Text completion; server-sent CompletionChunk events with stream: true', access: 'key',
    request: { json: CompletionRequest }, responses: { 200: json('completion, or SSE chunks then data: [DONE]', R.Completion, R.CompletionChunk) }, errors: GENERATION_ERRORS,
  },
  {
    method: 'POST', path: '/v1/chat/completions', route: '/v1/chat/completions', summary: 'Chat completion; server-sent ChatCompletionChunk events with stream: true', access: 'key',
    request: { json: ChatCompletionRequest }, responses: { 200: json('chat completion, or SSE chunks then data: [DONE]', R.ChatCompletion, R.ChatCompletionChunk) }, errors: GENERATION_ERRORS,
  },
  { method: 'POST', path: '/v1/deltas', route: '/v1/deltas', summary: 'Upload a delta (a new immutable version); Idempotency-Key header optional', access: 'key', request: { multipart: DeltaUpload }, responses: { 201: json('the stored version', R.DeltaUploaded) }, errors: [400, 401, 403, 409, 413, 415, 422, 503, 507] },
  { method: 'GET', path: '/v1/deltas', route: '/v1/deltas', summary: "The caller's deltas and public ones", access: 'key', responses: { 200: json('delta list', R.DeltaList) }, errors: [401, 403, 503] },
  { method: 'GET', path: '/v1/deltas/{id}', route: '/v1/deltas/*', summary: 'A delta and its versions; {id} is name or owner/name, optionally @N', access: 'key', responses: { 200: json('the delta', R.DeltaWithVersions) }, errors: [400, 401, 403, 404, 503] },
  { method: 'GET', path: '/v1/deltas/{id}/files/adapter_config.json', route: '/v1/deltas/*', summary: "The version's adapter_config.json, byte-identical (x-delta-sha256: the version's digest)", access: 'key', responses: { 200: json('adapter_config.json', R.AdapterConfig) }, errors: [400, 401, 403, 404, 503] },
  { method: 'GET', path: '/v1/deltas/{id}/files/adapter_model.safetensors', route: '/v1/deltas/*', summary: "The version's weights, byte-identical (x-delta-sha256: the version's digest)", access: 'key', responses: { 200: { description: 'safetensors', binary: 'application/octet-stream' } }, errors: [400, 401, 403, 404, 503] },
  { method: 'DELETE', path: '/v1/deltas/{id}', route: '/v1/deltas/*', summary: 'Delete every version (owner or admin); numbers are never reused', access: 'key', responses: { 200: json('deleted', R.DeltaDeleted) }, errors: [400, 401, 403, 404, 503] },
  { method: 'POST', path: '/admin/v1/deltas/{id}/prefetch', route: '/admin/v1/deltas/*', summary: 'Load a version into host memory, and into a slot if one is free or unpinned', access: 'admin', responses: { 200: json('residency', R.DeltaResidency) }, errors: [...ADMIN_ERRORS, 409] },
  { method: 'POST', path: '/admin/v1/deltas/{id}/pin', route: '/admin/v1/deltas/*', summary: 'Keep a version resident in a slot (at most --delta-slots - 1 pins)', access: 'admin', responses: { 200: json('residency', R.DeltaResidency) }, errors: [...ADMIN_ERRORS, 409] },
  { method: 'DELETE', path: '/admin/v1/deltas/{id}/pin', route: '/admin/v1/deltas/*', summary: 'Let a pinned version be evicted again', access: 'admin', responses: { 200: json('residency', R.DeltaResidency) }, errors: ADMIN_ERRORS },
  { method: 'POST', path: '/admin/v1/files', route: '/admin/v1/files', summary: 'Upload a JSONL training file; every line is validated first', access: 'admin', request: { multipart: TrainingFileUpload }, responses: { 201: json('file object', R.TrainingFile) }, errors: [...ADMIN_ERRORS, 413, 415, 422, 501, 507] },
  { method: 'GET', path: '/admin/v1/files', route: '/admin/v1/files', summary: 'Training files', access: 'admin', responses: { 200: json('file list', R.TrainingFileList) }, errors: [401, 403, 501, 503] },
  { method: 'GET', path: '/admin/v1/files/{id}', route: '/admin/v1/files/:id', summary: 'A training file', access: 'admin', responses: { 200: json('file object', R.TrainingFile) }, errors: [...ADMIN_ERRORS, 501] },
  { method: 'GET', path: '/admin/v1/files/{id}/content', route: '/admin/v1/files/:id/content', summary: "A training file's bytes", access: 'admin', responses: { 200: { description: 'JSONL', text: 'application/jsonl' } }, errors: [...ADMIN_ERRORS, 501] },
  { method: 'DELETE', path: '/admin/v1/files/{id}', route: '/admin/v1/files/:id', summary: 'Delete a training file', access: 'admin', responses: { 200: json('deleted', R.TrainingFileDeleted) }, errors: [...ADMIN_ERRORS, 501] },
  { method: 'POST', path: '/admin/v1/fine_tuning/jobs', route: '/admin/v1/fine_tuning/jobs', summary: 'Create a fine-tuning job of any trainable kind; Idempotency-Key header optional', access: 'admin', request: { json: FineTuningJobRequest }, responses: { 201: json('fine_tuning.job', R.FineTuningJob) }, errors: [...ADMIN_ERRORS, 413, 422, 501] },
  { method: 'GET', path: '/admin/v1/fine_tuning/jobs', route: '/admin/v1/fine_tuning/jobs', summary: 'Fine-tuning jobs, newest first', access: 'admin', request: { query: Page }, responses: { 200: json('job list', R.FineTuningJobList) }, errors: [400, 401, 403, 501, 503] },
  { method: 'GET', path: '/admin/v1/fine_tuning/jobs/{id}', route: '/admin/v1/fine_tuning/jobs/:id', summary: 'A job: status, step, loss, tokens/s, ETA, fine_tuned_model', access: 'admin', responses: { 200: json('fine_tuning.job', R.FineTuningJob) }, errors: [...ADMIN_ERRORS, 501] },
  { method: 'POST', path: '/admin/v1/fine_tuning/jobs/{id}/cancel', route: '/admin/v1/fine_tuning/jobs/:id/cancel', summary: 'Cancel a job (409 once it ended)', access: 'admin', responses: { 200: json('fine_tuning.job', R.FineTuningJob) }, errors: [...ADMIN_ERRORS, 409, 501] },
  {
    method: 'GET', path: '/admin/v1/fine_tuning/jobs/{id}/events', route: '/admin/v1/fine_tuning/jobs/:id/events', summary: 'Job events, newest first; with stream=true, SSE events until the job ends, then data: [DONE]', access: 'admin',
    request: { query: Page.extend({ stream: z.enum(['true', 'false']).optional() }) }, responses: { 200: json('event list, or SSE events', R.FineTuningJobEventList, R.FineTuningJobEvent) }, errors: [...ADMIN_ERRORS, 501],
  },
];
