import type { DType } from '../ir.js';
import { registerOp } from './registry.js';
import { elementwise } from './shapes.js';

/**
 * Ops that only ever compute indices, masks or optimiser arithmetic, off the path from
 * parameters to loss: they need types but no gradient rule (autodiff fails loudly if one is
 * ever reached).
 */
const ONNX_TO_DTYPE: Record<number, DType> = { 1: 'float32', 6: 'int32', 7: 'int64', 9: 'bool', 10: 'float16', 11: 'float64', 16: 'bfloat16' };

registerOp({ op: 'Equal', infer: (inputs) => ({ ...elementwise(inputs), dtype: 'bool' }) });
registerOp({ op: 'Min', infer: elementwise });
registerOp({ op: 'Max', infer: elementwise });
registerOp({
  op: 'Cast',
  infer: ([x], attrs) => {
    const dtype = ONNX_TO_DTYPE[attrs['to'] as number];
    if (!dtype) throw new Error(`unsupported Cast target ${String(attrs['to'])}`);
    return { dtype, shape: x!.shape };
  },
});
// ScatterND only adds Gather's gradient into zeros; nothing differentiates through it.
registerOp({
  op: 'ScatterND',
  infer: ([data]) => ({ dtype: data!.dtype, shape: data!.shape }),
});
