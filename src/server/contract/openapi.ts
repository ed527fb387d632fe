import { z, type ZodType } from 'zod';
import { FineTuningJobRequest } from '../fine-tuning-schema.js';
import { ChatCompletionRequest, CompletionRequest } from '../schemas.js';
import * as responses from './responses.js';
import { ROUTES, type ResponseContract, type RouteContract } from './routes.js';

type Json = Record<string, unknown>;

/** Components by name: every exported response schema, and the JSON request bodies. */
type Named = { name: string; io: 'input' | 'output' };
const NAMED: ReadonlyMap<ZodType, Named> = new Map<ZodType, Named>([
  ...Object.entries(responses).map(([name, schema]): [ZodType, Named] => [schema, { name: name === 'ErrorResponse' ? 'Error' : name, io: 'output' }]),
  ...Object.entries({ CompletionRequest, ChatCompletionRequest, FineTuningJobRequest }).map(([name, schema]): [ZodType, Named] => [schema, { name, io: 'input' }]),
]);

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'invalid request; `param` names the field',
  401: 'missing or unknown API key',
  403: 'the key may not do this',
  404: 'no such model, delta, file or job (or one the caller may not see)',
  409: 'conflicts with the current state (pin limit, slots busy, job ended, upload in flight)',
  413: 'request body too large',
  415: 'unsupported media type',
  422: 'well-formed but unusable (invalid delta, Idempotency-Key reused with other content)',
  429: 'over a tenant limit or the queue is full; retry after Retry-After',
  501: 'this model has no tokenizer, which training needs',
  503: 'starting, restarting, draining, or the store unavailable; retry after Retry-After',
  504: 'the request timeout passed before generation started',
  507: 'no space left on the server storage',
};

/**
 * The OpenAPI 3.1 document, generated from the route table (routes.ts) with zod's
 * `z.toJSONSchema`: request bodies from the schemas that validate them, responses from the schemas
 * the tests hold every route's answers to. A streamed response's events are described by the
 * `x-data-schema` of its `text/event-stream` content (OpenAPI 3.1 has no field for them).
 *
 * @example const doc = openApiDocument('0.1.0'); doc.paths['/v1/completions'].post.responses['200']
 */
export function openApiDocument(version: string, routes: readonly RouteContract[] = ROUTES): Json {
  const schemas: Json = {};
  const ref = (schema: ZodType): Json => {
    const named = NAMED.get(schema);
    if (!named) return component(schema, 'output');
    schemas[named.name] ??= component(schema, named.io);
    return { $ref: `#/components/schemas/${named.name}` };
  };
  ref(responses.ErrorResponse);
  const paths: Record<string, Json> = {};
  for (const route of routes) {
    const key = route.method.toLowerCase();
    if (paths[route.path]?.[key]) throw new Error(`route table: ${route.method} ${route.path} is listed twice`);
    (paths[route.path] ??= {})[key] = operation(route, ref);
  }
  return {
    openapi: '3.1.0',
    info: { title: 'deltaserve', version, description: 'One frozen backbone, many per-request deltas, OpenAI wire format. Generated from the route table (src/server/contract/routes.ts).' },
    components: { schemas, securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'API key from the auth file; none in open mode' } } },
    security: [{ bearer: [] }],
    paths,
  };
}

function operation(route: RouteContract, ref: (schema: ZodType) => Json): Json {
  const parameters = [
    ...[...route.path.matchAll(/\{(\w+)\}/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' }, description: m[1] === 'id' && route.path.includes('deltas') ? 'name or owner/name, optionally @N (percent-encode the slash)' : undefined })),
    ...Object.entries(route.request?.query?.shape ?? {}).map(([name, schema]) => ({ name, in: 'query', required: !(schema as ZodType).safeParse(undefined).success, schema: component(schema as ZodType, 'input') })),
  ];
  const body = route.request?.json ? { 'application/json': { schema: ref(route.request.json) } } : route.request?.multipart ? { 'multipart/form-data': { schema: component(route.request.multipart, 'input') } } : undefined;
  const answers: Record<string, Json> = {};
  for (const [status, response] of Object.entries(route.responses)) answers[status] = { description: response.description, content: content(response, ref) };
  for (const status of route.errors) answers[String(status)] = { description: ERROR_DESCRIPTIONS[status] ?? 'error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
  return {
    summary: route.summary,
    operationId: `${route.method.toLowerCase()}${route.path.replace(/\{(\w+)\}/g, 'By_$1').replace(/[^A-Za-z0-9]+(.)?/g, (_, c: string | undefined) => (c ? c.toUpperCase() : ''))}`,
    ...(route.access === 'none' ? { security: [] } : {}),
    ...(route.access === 'admin' ? { description: 'Admin keys only (open mode is admin).' } : {}),
    ...(route.access === 'metrics' ? { description: 'A metrics or admin key; none with --public-metrics or in open mode.' } : {}),
    ...(parameters.length ? { parameters: parameters.map((p) => JSON.parse(JSON.stringify(p))) } : {}),
    ...(body ? { requestBody: { required: true, content: body } } : {}),
    responses: answers,
  };
}

function content(response: ResponseContract, ref: (schema: ZodType) => Json): Json {
  if ('text' in response) return { [response.text]: { schema: { type: 'string' } } };
  if ('binary' in response) return { [response.binary]: { schema: { type: 'string', contentMediaType: response.binary } } };
  return {
    'application/json': { schema: ref(response.json) },
    ...(response.sse ? { 'text/event-stream': { schema: { type: 'string', description: 'data: <event JSON> lines, then data: [DONE]; a failure mid-stream is a last Error event' }, 'x-data-schema': { anyOf: [ref(response.sse), { $ref: '#/components/schemas/Error' }] } } } : {}),
  };
}

/** One schema as JSON Schema for the document: without `$schema`, and self-contained (no `$defs` to resolve). */
function component(schema: ZodType, io: 'input' | 'output'): Json {
  const { $schema: _, ...converted } = z.toJSONSchema(schema, { io, target: 'draft-2020-12' }) as Json;
  if (JSON.stringify(converted).includes('"$ref"')) throw new Error(`a schema of the route table converts with $ref: ${JSON.stringify(converted).slice(0, 200)}`);
  return converted;
}
