import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { gradients } from '../../src/graph/autodiff.js';
import { serializeModel } from '../../src/graph/onnx/serialize.js';
import { TypedGraph } from '../../src/graph/typed-graph.js';
import { elementCount } from '../../src/graph/ops/shapes.js';
import { mulberry32 } from '../../src/model/random.js';

export interface GradientCheck {
  /** Shapes of the float64 inputs the op is differentiated against. */
  shapes: number[][];
  /** Builds the function under test from the inputs (add constants such as axes here). */
  build: (g: TypedGraph, xs: string[]) => string;
  /** Input sampler; default uniform in [-1, 1). Use positive values for Log/Sqrt. */
  sample?: (random: () => number) => number;
  seed?: number;
}

/**
 * Checks autodiff's gradient of an op in float64 against central finite differences, through
 * real ORT sessions: L = sum(f(x) * r) with a random r, so every output element is weighted
 * differently and a rule that mixes up elements fails.
 *
 * @example await checkGradient({ shapes: [[2, 3]], build: (g, [x]) => g.apply('Exp', [x!]) });
 */
export async function checkGradient(check: GradientCheck): Promise<void> {
  const random = mulberry32(check.seed ?? 7);
  const sample = check.sample ?? ((r: () => number) => 2 * r() - 1);
  const g = new TypedGraph('gradient_check');
  const xs = check.shapes.map((shape, i) => g.input(`x${i}`, 'float64', shape));
  const y = check.build(g, xs);
  const weights = Array.from({ length: elementCount(g.shape(y)) }, () => 2 * random() - 1);
  const loss = g.apply('ReduceSum', [g.apply('Mul', [y, g.constant('float64', g.shape(y), weights)])], { keepdims: 0 });
  g.output(loss, 'loss');
  const grads = gradients(g, loss, xs);
  xs.forEach((x, i) => g.output(grads.get(x)!, `grad${i}`));
  const session = await ort.InferenceSession.create(serializeModel(g.build()));
  try {
    const values = check.shapes.map((shape) => Float64Array.from({ length: elementCount(shape) }, () => sample(random)));
    const feeds = () => Object.fromEntries(values.map((v, i) => [`x${i}`, new ort.Tensor('float64', v, check.shapes[i]!)]));
    const analytic = await session.run(feeds());
    const lossAt = async () => Number((await session.run(feeds(), ['loss']))['loss']!.data[0]);
    const h = 1e-6;
    for (let i = 0; i < values.length; i++) {
      const grad = analytic[`grad${i}`]!;
      assert.deepEqual([...grad.dims], check.shapes[i], `grad${i} shape`);
      for (let k = 0; k < values[i]!.length; k++) {
        const x0 = values[i]![k]!;
        values[i]![k] = x0 + h;
        const up = await lossAt();
        values[i]![k] = x0 - h;
        const down = await lossAt();
        values[i]![k] = x0;
        const numeric = (up - down) / (2 * h);
        const got = Number(grad.data[k]);
        assert.ok(Math.abs(got - numeric) <= 1e-6 * Math.max(1, Math.abs(numeric)), `input ${i} element ${k}: autodiff ${got}, finite difference ${numeric}`);
      }
    }
  } finally {
    await session.release();
  }
}
