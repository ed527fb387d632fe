import { z } from 'zod';
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
        Error: errorSchema,
      },
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'API key from the auth file; none in open mode' } },
    },
    security: [{ bearer: [] }],
    paths: {
      '/v1/completions': { post: { summary: 'Text completion', requestBody: jsonBody('CompletionRequest'), responses: { '200': generated('completion, or SSE chunks when stream is true'), ...errors } } },
      '/v1/chat/completions': { post: { summary: 'Chat completion', requestBody: jsonBody('ChatCompletionRequest'), responses: { '200': generated('chat completion, or SSE chunks when stream is true'), ...errors } } },
      '/v1/models': { get: { summary: 'The base model and the deltas the caller may use', responses: { '200': { description: 'model list' }, '401': errors['401'] } } },
      '/health/live': { get: { summary: 'Liveness', security: [], responses: { '200': { description: 'process serves HTTP' } } } },
      '/health/ready': { get: { summary: 'Readiness', security: [], responses: { '200': { description: 'model loaded' }, '503': errors['503'] } } },
      '/openapi.json': { get: { summary: 'This document', security: [], responses: { '200': { description: 'OpenAPI 3.1' } } } },
    },
  };
}
