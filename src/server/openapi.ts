import { z } from 'zod';
import { FineTuningJobRequest } from './fine-tuning-schema.js';
import { ChatCompletionRequest, CompletionRequest } from './schemas.js';

const errorSchema = {
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: { message: { type: 'string' }, type: { type: 'string' }, param: { type: ['string', 'null'] }, code: { type: ['string', 'null'] } },
      required: ['message', 'type', 'param', 'code'],
    },
  },
  required: ['error'],
};

const errors = Object.fromEntries(
  [
    ['400', 'invalid request; `param` names the field'],
    ['401', 'missing or unknown API key'],
    ['404', 'unknown model (or a delta the caller may not use)'],
    ['413', 'request body too large'],
    ['429', 'queue full; retry after the Retry-After header'],
    ['503', 'model still loading'],
  ].map(([status, description]) => [status, { description, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } }]),
);

const jsonBody = (ref: string) => ({ required: true, content: { 'application/json': { schema: { $ref: `#/components/schemas/${ref}` } } } });
const generated = (description: string) => ({
  description,
  content: { 'application/json': { schema: { type: 'object' } }, 'text/event-stream': { schema: { type: 'string', description: 'data: {chunk} lines, then data: [DONE]' } } },
});

/**
 * The OpenAPI 3.1 document, generated from the same zod schemas that validate requests, so the
 * two cannot drift apart.
 */
export function openApiDocument(version: string): Record<string, unknown> {
  return {
    openapi: '3.1.0',
    info: { title: 'deltaserve', version, description: 'One frozen backbone, many per-request deltas, OpenAI wire format.' },
    components: {
      schemas: {
        CompletionRequest: z.toJSONSchema(CompletionRequest, { io: 'input' }),
        ChatCompletionRequest: z.toJSONSchema(ChatCompletionRequest, { io: 'input' }),
        FineTuningJobRequest: z.toJSONSchema(FineTuningJobRequest, { io: 'input' }),
        Error: errorSchema,
      },
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'API key from the auth file; none in open mode' } },
    },
    security: [{ bearer: [] }],
    paths: {
      '/v1/completions': { post: { summary: 'Text completion', requestBody: jsonBody('CompletionRequest'), responses: { '200': generated('completion, or SSE chunks when stream is true'), ...errors } } },
      '/v1/chat/completions': { post: { summary: 'Chat completion', requestBody: jsonBody('ChatCompletionRequest'), responses: { '200': generated('chat completion, or SSE chunks when stream is true'), ...errors } } },
      '/v1/models': { get: { summary: 'The base model and the deltas the caller may use', responses: { '200': { description: 'model list' }, '401': errors['401'] } } },
      '/admin/v1/files': {
        post: { summary: 'Upload a JSONL training file (multipart: file, purpose=fine-tune); every line is validated', responses: { '201': { description: 'file object' }, ...errors } },
        get: { summary: 'Training files', responses: { '200': { description: 'file list' } } },
      },
      '/admin/v1/fine_tuning/jobs': {
        post: { summary: 'Create a LoRA fine-tuning job', requestBody: jsonBody('FineTuningJobRequest'), responses: { '201': { description: 'fine_tuning.job' }, ...errors } },
        get: { summary: 'Fine-tuning jobs, newest first', responses: { '200': { description: 'job list' } } },
      },
      '/admin/v1/fine_tuning/jobs/{id}': { get: { summary: 'A job: status, step, loss, tokens/s, ETA, fine_tuned_model', responses: { '200': { description: 'fine_tuning.job' }, '404': errors['404'] } } },
      '/admin/v1/fine_tuning/jobs/{id}/events': { get: { summary: 'Job events (metrics per step); SSE with ?stream=true', responses: { '200': generated('event list, or SSE events until the job ends') } } },
      '/admin/v1/fine_tuning/jobs/{id}/cancel': { post: { summary: 'Cancel a job', responses: { '200': { description: 'fine_tuning.job' }, '409': { description: 'the job already ended' } } } },
      '/health/live': { get: { summary: 'Liveness', security: [], responses: { '200': { description: 'process serves HTTP' } } } },
      '/health/ready': { get: { summary: 'Readiness', security: [], responses: { '200': { description: 'model loaded' }, '503': errors['503'] } } },
      '/openapi.json': { get: { summary: 'This document', security: [], responses: { '200': { description: 'OpenAPI 3.1' } } } },
    },
  };
}
