/**
 * A JSON Schema (draft 2020-12) validator for the subset `z.toJSONSchema` emits and the OpenAPI
 * document uses, so tests check responses against the generated document itself rather than
 * against the zod schemas it came from. A keyword outside the subset is an error, never ignored:
 * a schema this validator does not understand cannot pass silently.
 */

type Schema = Record<string, unknown> | boolean;

/** Keywords that only annotate. `format` is an annotation in 2020-12 unless a vocabulary asserts it. */
const ANNOTATIONS = new Set(['description', 'title', 'default', 'examples', 'format', 'contentMediaType', 'contentEncoding', '$schema', 'deprecated', 'readOnly', 'writeOnly']);

const ASSERTIONS = new Set([
  '$ref', 'type', 'const', 'enum', 'anyOf', 'oneOf', 'allOf', 'not',
  'properties', 'required', 'additionalProperties', 'propertyNames',
  'items', 'prefixItems', 'minItems', 'maxItems',
  'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf',
  'minLength', 'maxLength', 'pattern',
]);

/**
 * Every way `value` fails `schema`, as `path: problem` lines ([] when it is valid). `$ref`s are
 * resolved against `root` (JSON pointers only, e.g. `#/components/schemas/Error`).
 *
 * @example validate(doc, { $ref: '#/components/schemas/Completion' }, body) // []
 */
export function validate(root: unknown, schema: Schema, value: unknown, path = '$'): string[] {
  if (schema === true) return [];
  if (schema === false) return [`${path}: no value is allowed here`];
  for (const key of Object.keys(schema)) {
    if (!ASSERTIONS.has(key) && !ANNOTATIONS.has(key)) throw new Error(`json-schema: unsupported keyword '${key}' at ${path}`);
  }
  const problems: string[] = [];
  const fail = (message: string) => problems.push(`${path}: ${message}`);
  if (typeof schema.$ref === 'string') problems.push(...validate(root, resolve(root, schema.$ref), value, path));
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? (schema.type as string[]) : [schema.type as string];
    if (!types.some((t) => hasType(value, t))) return [`${path}: expected ${types.join(' or ')}, got ${describe(value)}`];
  }
  if ('const' in schema && !equal(value, schema.const)) fail(`expected ${JSON.stringify(schema.const)}, got ${describe(value)}`);
  if (Array.isArray(schema.enum) && !schema.enum.some((e) => equal(value, e))) fail(`expected one of ${JSON.stringify(schema.enum)}, got ${describe(value)}`);
  if (Array.isArray(schema.allOf)) for (const s of schema.allOf as Schema[]) problems.push(...validate(root, s, value, path));
  if (Array.isArray(schema.anyOf)) {
    const each = (schema.anyOf as Schema[]).map((s) => validate(root, s, value, path));
    if (!each.some((p) => p.length === 0)) fail(`matches none of anyOf: ${each.map((p) => p.join('; ')).join(' | ')}`);
  }
  if (Array.isArray(schema.oneOf)) {
    const matching = (schema.oneOf as Schema[]).filter((s) => validate(root, s, value, path).length === 0).length;
    if (matching !== 1) fail(`matches ${matching} of oneOf, expected exactly 1`);
  }
  if (schema.not !== undefined && validate(root, schema.not as Schema, value, path).length === 0) fail('matches a schema it must not');
  if (typeof value === 'number') numberProblems(schema, value).forEach(fail);
  if (typeof value === 'string') stringProblems(schema, value).forEach(fail);
  if (Array.isArray(value)) problems.push(...arrayProblems(root, schema, value, path));
  else if (isObject(value)) problems.push(...objectProblems(root, schema, value, path));
  return problems;
}

function numberProblems(s: Record<string, unknown>, n: number): string[] {
  const out: string[] = [];
  if (typeof s.minimum === 'number' && n < s.minimum) out.push(`${n} < minimum ${s.minimum}`);
  if (typeof s.maximum === 'number' && n > s.maximum) out.push(`${n} > maximum ${s.maximum}`);
  if (typeof s.exclusiveMinimum === 'number' && n <= s.exclusiveMinimum) out.push(`${n} <= exclusiveMinimum ${s.exclusiveMinimum}`);
  if (typeof s.exclusiveMaximum === 'number' && n >= s.exclusiveMaximum) out.push(`${n} >= exclusiveMaximum ${s.exclusiveMaximum}`);
  if (typeof s.multipleOf === 'number' && !Number.isInteger(n / s.multipleOf)) out.push(`${n} is not a multiple of ${s.multipleOf}`);
  return out;
}

function stringProblems(s: Record<string, unknown>, text: string): string[] {
  const out: string[] = [];
  const length = [...text].length;
  if (typeof s.minLength === 'number' && length < s.minLength) out.push(`length ${length} < minLength ${s.minLength}`);
  if (typeof s.maxLength === 'number' && length > s.maxLength) out.push(`length ${length} > maxLength ${s.maxLength}`);
  if (typeof s.pattern === 'string' && !new RegExp(s.pattern, 'u').test(text)) out.push(`${JSON.stringify(text.slice(0, 80))} does not match /${s.pattern}/`);
  return out;
}

function arrayProblems(root: unknown, s: Record<string, unknown>, items: unknown[], path: string): string[] {
  const out: string[] = [];
  if (typeof s.minItems === 'number' && items.length < s.minItems) out.push(`${path}: ${items.length} items < minItems ${s.minItems}`);
  if (typeof s.maxItems === 'number' && items.length > s.maxItems) out.push(`${path}: ${items.length} items > maxItems ${s.maxItems}`);
  const prefix = Array.isArray(s.prefixItems) ? (s.prefixItems as Schema[]) : [];
  items.forEach((item, i) => {
    const itemSchema = i < prefix.length ? prefix[i] : (s.items as Schema | undefined);
    if (itemSchema !== undefined) out.push(...validate(root, itemSchema, item, `${path}[${i}]`));
  });
  return out;
}

function objectProblems(root: unknown, s: Record<string, unknown>, object: Record<string, unknown>, path: string): string[] {
  const out: string[] = [];
  const properties = (s.properties ?? {}) as Record<string, Schema>;
  for (const key of (s.required ?? []) as string[]) if (!(key in object)) out.push(`${path}: required property '${key}' is missing`);
  for (const [key, item] of Object.entries(object)) {
    if (s.propertyNames !== undefined) out.push(...validate(root, s.propertyNames as Schema, key, `${path}{${key}}`));
    if (key in properties) out.push(...validate(root, properties[key]!, item, `${path}.${key}`));
    else if (s.additionalProperties !== undefined) {
      if (s.additionalProperties === false) out.push(`${path}: property '${key}' is not allowed`);
      else out.push(...validate(root, s.additionalProperties as Schema, item, `${path}.${key}`));
    }
  }
  return out;
}

function resolve(root: unknown, ref: string): Schema {
  if (!ref.startsWith('#/')) throw new Error(`json-schema: only local $refs are supported, got '${ref}'`);
  let at: unknown = root;
  for (const part of ref.slice(2).split('/').map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))) {
    if (!isObject(at) || !(part in at)) throw new Error(`json-schema: $ref '${ref}' does not resolve`);
    at = at[part];
  }
  return at as Schema;
}

function hasType(value: unknown, type: string): boolean {
  switch (type) {
    case 'null': return value === null;
    case 'boolean': return typeof value === 'boolean';
    case 'string': return typeof value === 'string';
    case 'number': return typeof value === 'number' && Number.isFinite(value);
    case 'integer': return typeof value === 'number' && Number.isInteger(value);
    case 'array': return Array.isArray(value);
    case 'object': return isObject(value);
    default: throw new Error(`json-schema: unknown type '${type}'`);
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function equal(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value === 'object' ? 'object' : `${typeof value} ${JSON.stringify(value).slice(0, 60)}`;
}
