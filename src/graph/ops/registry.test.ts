import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import '../typed-graph.js';
import { registeredOps, registerOp } from './registry.js';

const NON_DIFFERENTIABLE = new Set(['Equal', 'Min', 'Max', 'Cast', 'ScatterND']);

test('every differentiable op has a gradient rule and a finite-difference test beside it', () => {
  const dir = fileURLToPath(new URL('.', import.meta.url));
  const tests = fs.readdirSync(dir).filter((f) => f.endsWith('.test.ts')).map((f) => fs.readFileSync(`${dir}/${f}`, 'utf8'));
  for (const def of registeredOps()) {
    if (NON_DIFFERENTIABLE.has(def.op)) continue;
    assert.ok(def.grad, `${def.op} has no gradient rule`);
    assert.ok(tests.some((t) => t.includes(`test('${def.op} gradient`)), `${def.op} has no gradient test`);
  }
});

test('registering an op twice throws', () => {
  assert.throws(() => registerOp({ op: 'Add', infer: ([x]) => x! }), /registered twice/);
});
