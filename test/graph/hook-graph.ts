import ort from 'onnxruntime-node';
import { GraphBuilder } from '../../src/graph/builder.js';
import { inlineTensor } from '../../src/graph/ir.js';
import { serializeModel } from '../../src/graph/onnx/serialize.js';
import type { FeedTensor } from '../../src/deltas/kind.js';
import type { ArchitectureSpec } from '../../src/model/architecture.js';
import type { HookContext } from '../../src/model/delta-hooks.js';
import { checkFeeds, float32, int64 } from '../../src/engine/feeds.js';

export interface HookGraph {
  /** Frozen weights the hook may read through ctx.weight, by name. */
  weights: Record<string, { data: Float32Array; dims: number[] }>;
  /** Builds the graph around the hook; returns the values to read back, by output name. */
  build(ctx: HookContext): Record<string, string>;
  /** Every graph input: the kind's feeds and slot stacks plus what `build` declared. */
  feeds: (FeedTensor | { name: string; data: Float32Array; dims: number[] })[];
}

/**
 * Runs a delta kind's hook alone in a small ORT graph (CPU), with the same HookContext contract
 * the inference lowering gives it, so its batched math can be checked against a plain reference.
 *
 * @example const { y } = await runHookGraph(arch, { weights, build: (ctx) => ({ y: hook(ctx) }), feeds });
 */
export async function runHookGraph(arch: ArchitectureSpec, graph: HookGraph): Promise<Record<string, Float32Array>> {
  const b = new GraphBuilder('hook_test');
  const inputs = new Map<string, string>();
  const shared = new Map<string, string>();
  const weights = new Map<string, string>();
  const ctx: HookContext = {
    b,
    arch,
    weight: (name) => weights.get(name) ?? weights.set(name, b.initializer(name, inlineTensor('float32', graph.weights[name]!.dims, graph.weights[name]!.data))).get(name)!,
    input: (name, dtype, shape) => inputs.get(name) ?? inputs.set(name, b.input(name, dtype, shape)).get(name)!,
    shared: (key, make) => shared.get(key) ?? shared.set(key, make()).get(key)!,
  };
  const outputs = graph.build(ctx);
  for (const [name, value] of Object.entries(outputs)) b.output(value, name, 'float32', [`${name}_rows`, `${name}_width`]);
  const session = await ort.InferenceSession.create(serializeModel(b.build()));
  try {
    const feeds = Object.fromEntries(graph.feeds.map((f) => [f.name, 'dtype' in f && f.dtype === 'int64' ? int64(f.data, f.dims) : float32(Float32Array.from(f.data), f.dims)]));
    checkFeeds(session.inputNames, feeds);
    const out = await session.run(feeds);
    return Object.fromEntries(Object.keys(outputs).map((name) => [name, out[name]!.data as Float32Array]));
  } finally {
    await session.release();
  }
}
