import type ort from 'onnxruntime-node';
import type { DeviceUploader } from './device-upload.js';
import type { LoraSlotStacks } from './lora-slots.js';

/**
 * On webgpu, the resident delta slot stacks as GPU tensors, so a forward pass reads every
 * resident delta from device memory instead of uploading the slots it uses on each run. The host
 * stacks remain the source of truth, and a slot write (a delta made resident) re-uploads them
 * before the next pass.
 *
 * @example
 * const gpu = new GpuSlotStacks(new DeviceUploader(), runtime.slots);
 * await gpu.sync(); // after slots.write(...)
 * feeds['lora_A.model.layers.0.self_attn.q_proj'] = gpu.get('model.layers.0.self_attn.q_proj').a;
 */
export class GpuSlotStacks {
  private readonly tensors = new Map<string, { a: ort.Tensor; b: ort.Tensor }>();
  private uploadedGeneration = -1;

  constructor(private readonly uploader: DeviceUploader, private readonly stacks: LoraSlotStacks) {}

  /** Uploads the stacks again if any slot was written since the last upload. */
  async sync(): Promise<void> {
    if (this.uploadedGeneration === this.stacks.generation) return;
    const { slots, maxRank: R } = this.stacks;
    for (const m of this.stacks.modules) {
      const { a, b } = this.stacks.range(m.modulePath, 0, slots);
      const next = { a: await this.uploader.upload(a, [slots, m.inFeatures, R]), b: await this.uploader.upload(b, [slots, R, m.outFeatures]) };
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

  release(): void {
    for (const { a, b } of this.tensors.values()) {
      a.dispose();
      b.dispose();
    }
    this.tensors.clear();
  }
}
