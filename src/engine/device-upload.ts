import ort from 'onnxruntime-node';
import { GraphBuilder } from '../graph/builder.js';
import { serializeModel } from '../graph/onnx/serialize.js';

/**
 * Puts host arrays into WebGPU memory. JS code cannot create GPU tensors, so each upload runs a
 * one-node Identity session whose output stays a `gpu-buffer` (one session per rank, built on
 * first use). The caller owns the returned tensor and disposes it.
 *
 * @example const t = await uploader.upload(new Float32Array(6), [2, 3]); ... t.dispose();
 */
export class DeviceUploader {
  private readonly sessions = new Map<number, Promise<ort.InferenceSession>>();

  async upload(values: Float32Array, dims: number[]): Promise<ort.Tensor> {
    const session = await this.session(dims.length);
    return (await session.run({ x: new ort.Tensor('float32', values, dims) }))['y']!;
  }

  async release(): Promise<void> {
    for (const session of this.sessions.values()) await (await session).release();
    this.sessions.clear();
  }

  private session(rank: number): Promise<ort.InferenceSession> {
    let session = this.sessions.get(rank);
    if (!session) {
      const b = new GraphBuilder('deltaserve_upload');
      const dims = Array.from({ length: rank }, (_, i) => `d${i}`);
      b.output(b.op1('Identity', [b.input('x', 'float32', dims)]), 'y', 'float32', dims);
      session = ort.InferenceSession.create(serializeModel(b.build()), { executionProviders: ['webgpu'], preferredOutputLocation: 'gpu-buffer' });
      this.sessions.set(rank, session);
    }
    return session;
  }
}
