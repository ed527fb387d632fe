import ort from 'onnxruntime-node';
import { GraphBuilder } from '../graph/builder.js';
import { serializeModel } from '../graph/onnx/serialize.js';
import type { LoraSlotStacks } from './lora-slots.js';

/**
 * On webgpu, the resident delta slot stacks as GPU tensors, so a forward pass reads every
 * resident delta from device memory instead of uploading the slots it uses on each run. JS code
 * cannot create GPU tensors, so each stack goes up through a one-node Identity session whose
 * output stays a `gpu-buffer`; the host stacks remain the source of truth, and a slot write
 * (a delta made resident) re-uploads them before the next pass.
 *
 * @example
 * const gpu = await GpuSlotStacks.create(runtime.slots);
 * await gpu.sync(); // after slots.write(...)
 * feeds['lora_A.model.layers.0.self_attn.q_proj'] = gpu.get('model.layers.0.self_attn.q_proj').a;
 */
export class GpuSlotStacks {
  private readonly tensors = new Map<string, { a: ort.Tensor; b: ort.Tensor }>();
  private uploadedGeneration = -1;

  private constructor(private readonly uploader: ort.InferenceSession, private readonly stacks: LoraSlotStacks) {}

  static async create(stacks: LoraSlotStacks): Promise<GpuSlotStacks> {
    const b = new GraphBuilder('deltaserve_upload');
    b.output(b.op1('Identity', [b.input('x', 'float32', ['s', 'i', 'o'])]), 'y', 'float32', ['s', 'i', 'o']);
    const uploader = await ort.InferenceSession.create(serializeModel(b.build()), { executionProviders: ['webgpu'], preferredOutputLocation: 'gpu-buffer' });
    return new GpuSlotStacks(uploader, stacks);
  }

  /** Uploads the stacks again if any slot was written since the last upload. */
  async sync(): Promise<void> {
    if (this.uploadedGeneration === this.stacks.generation) return;
    const { slots, maxRank: R } = this.stacks;
    for (const m of this.stacks.modules) {
      const { a, b } = this.stacks.range(m.modulePath, 0, slots);
      const next = { a: await this.upload(a, [slots, m.inFeatures, R]), b: await this.upload(b, [slots, R, m.outFeatures]) };
      const old = this.tensors.get(m.modulePath);
      this.tensors.set(m.modulePath, next);
      old?.a.dispose();
      old?.b.dispose();
    }
    this.uploadedGeneration = this.stacks.generation;
  }

  get(modulePath: string): { a: ort.Tensor; b: ort.Tensor } {
    const tensors = this.tensors.get(modulePath);
    if (!tensors) throw new Error(`no device copy of the slot stacks for ${modulePath}; call sync() first`);
    return tensors;
  }

  async release(): Promise<void> {
    for (const { a, b } of this.tensors.values()) {
      a.dispose();
      b.dispose();
    }
    this.tensors.clear();
    await this.uploader.release();
  }

  private async upload(values: Float32Array, dims: number[]): Promise<ort.Tensor> {
    return (await this.uploader.run({ x: new ort.Tensor('float32', values, dims) }))['y']!;
  }
}
