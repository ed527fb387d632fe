import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { gradients } from '../autodiff.js';
import { serializeModel } from '../onnx/serialize.js';
import { TypedGraph } from '../typed-graph.js';
import { mulberry32 } from '../../model/random.js';

/** erf in float64 by its Maclaurin series (|x| < 3: terms fall below 1e-18 well before 100). */
function erf64(x: number): number {
  let term = x;
  let sum = x;
  for (let n = 1; n < 100 && Math.abs(term) > 1e-18; n++) {
    term *= (-x * x) / n;
    sum += term / (2 * n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

// ONNX Runtime has no float64 Erf kernel, so checkGradient's all-float64 session cannot run it:
// the rule is checked in float32 against central differences of L = Σ r·erf(x) in float64.
test('Erf gradient', async () => {
  const random = mulberry32(7);
  const n = 12;
  const g = new TypedGraph('erf_gradient');
  const x = g.input('x', 'float32', [3, 4]);
  const r = Array.from({ length: n }, () => 2 * random() - 1);
  const y = g.apply('Erf', [x]);
  const loss = g.apply('ReduceSum', [g.apply('Mul', [y, g.constant('float32', [3, 4], r)])], { keepdims: 0 });
  g.output(loss, 'loss');
  g.output(gradients(g, loss, [x]).get(x)!, 'grad');
  g.output(y, 'y');
  const session = await ort.InferenceSession.create(serializeModel(g.build()));
  try {
    const values = Float32Array.from({ length: n }, () => 5 * random() - 2.5);
    const out = await session.run({ x: new ort.Tensor('float32', values, [3, 4]) });
    const h = 1e-5;
    values.forEach((v, k) => {
      assert.ok(Math.abs(Number(out['y']!.data[k]) - erf64(v)) <= 1e-6, `erf(${v}): ${out['y']!.data[k]} vs ${erf64(v)}`);
      const numeric = (r[k]! * (erf64(v + h) - erf64(v - h))) / (2 * h);
      const got = Number(out['grad']!.data[k]);
      assert.ok(Math.abs(got - numeric) <= 1e-6 * Math.max(1, Math.abs(numeric)), `element ${k} (x = ${v}): autodiff ${got}, finite difference ${numeric}`);
    });
  } finally {
    await session.release();
  }
});
