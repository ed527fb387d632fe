import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z, type ZodType } from 'zod';
import { validate } from './json-schema.js';

/** zod's schema converted as the document converts it. */
const converted = (schema: ZodType) => z.toJSONSchema(schema, { io: 'output', target: 'draft-2020-12' }) as Record<string, unknown>;

describe('the JSON Schema validator the contract test uses', () => {
  const Item = z.strictObject({
    id: z.string().startsWith('x-'),
    n: z.number().int().min(0).max(9),
    ratio: z.number().gt(0).lt(1).optional(),
    tag: z.enum(['a', 'b']).nullable(),
    ok: z.literal(true),
    tags: z.array(z.string().min(1).max(3)).min(1).max(2),
    scores: z.record(z.string(), z.number()),
    either: z.union([z.string(), z.array(z.number())]),
    loose: z.looseObject({ kind: z.string() }),
  });
  const good = { id: 'x-1', n: 3, tag: null, ok: true, tags: ['ab'], scores: { a: 1 }, either: [1, 2], loose: { kind: 'k', extra: 1 } };
  const schema = converted(Item);

  it('agrees with zod on a valid value and on each kind of invalid one', () => {
    const cases: [string, unknown][] = [
      ['valid', good],
      ['missing required', { ...good, ok: undefined }],
      ['extra property on a strict object', { ...good, surprise: 1 }],
      ['pattern', { ...good, id: 'y-1' }],
      ['integer', { ...good, n: 1.5 }],
      ['maximum', { ...good, n: 10 }],
      ['exclusive bounds', { ...good, ratio: 1 }],
      ['enum', { ...good, tag: 'c' }],
      ['const', { ...good, ok: false }],
      ['minItems', { ...good, tags: [] }],
      ['maxItems', { ...good, tags: ['a', 'b', 'c'] }],
      ['minLength', { ...good, tags: [''] }],
      ['record values', { ...good, scores: { a: 'x' } }],
      ['union', { ...good, either: [1, 'x'] }],
      ['nested required', { ...good, loose: { extra: 1 } }],
      ['type', [good]],
    ];
    for (const [label, value] of cases) {
      const json = JSON.parse(JSON.stringify(value));
      const problems = validate(schema, schema, json);
      assert.equal(problems.length === 0, Item.safeParse(json).success, `${label}: validator says ${JSON.stringify(problems)}`);
    }
  });

  it('resolves $refs against the root document and names the path that failed', () => {
    const doc = { components: { schemas: { Item: schema } }, list: { type: 'array', items: { $ref: '#/components/schemas/Item' } } };
    assert.deepEqual(validate(doc, doc.list, [good]), []);
    const problems = validate(doc, doc.list, [good, { ...good, n: -1 }]);
    assert.equal(problems.length, 1);
    assert.match(problems[0]!, /^\$\[1\]\.n: -1 < minimum 0$/);
    assert.throws(() => validate(doc, { $ref: '#/components/schemas/Missing' }, 1), /does not resolve/);
  });

  it('refuses keywords outside its subset instead of ignoring them', () => {
    assert.throws(() => validate({}, { type: 'object', dependentRequired: { a: ['b'] } }, {}), /unsupported keyword 'dependentRequired'/);
    assert.throws(() => validate({}, { $ref: 'https://example.com/schema' }, {}), /only local \$refs/);
  });
});
