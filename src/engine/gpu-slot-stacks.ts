import type ort from 'onnxruntime-node';
import type { DeviceUploader } from './device-upload.js';
import type { SlotStacks } from './slot-stacks.js';

/**
 * On webgpu, the resident delta slot stacks as GPU tensors, so a forward pass reads every
 * resident delta from device memory instead of uploading the slots it uses on each run. The host
 * stacks remain the source of truth, and a slot write (a delta made resident) re-uploads that
 * kind's stacks before the next pass.
 *
 * @example
 * const gpu = new GpuSlotStacks(new DeviceUploader(), runtime.stacks);
 * await gpu.sync(); // after a slot write
 * feeds['lora_A.model.layers.0.self_attn.q_proj'] = gpu.get('lora_A.model.layers.0.self_attn.q_proj');
 */
export class GpuSlotStacks {
  private readonly tensors = new Map<string, ort.Tensor>();
  private readonly uploaded = new Map<string, number>();

  constructor(private readonly uploader: DeviceUploader, private readonly stacks: ReadonlyMap<string, SlotStacks>) {}

  /** Uploads a kind's stacks again if any of its slots was written since its last upload. */
  async sync(): Promise<void> {
    for (const [kind, stacks] of this.stacks) {
      if (this.uploaded.get(kind) === stacks.generation) continue;
      for (const spec of stacks.specs) {
        if (spec.hostOnly) continue; // read on the host only, never by a pass (see SlotTensor.hostOnly)
        const next = await this.uploader.upload(stacks.range(spec.name, 0, stacks.slots), [stacks.slots, ...spec.dims]);
        this.tensors.get(spec.name)?.dispose();
        this.tensors.set(spec.name, next);
      }
      this.uploaded.set(kind, stacks.generation);
    }
  }

  get(name: string): ort.Tensor {
    const tensor = this.tensors.get(name);
    if (!tensor) throw new Error(`no device copy of slot tensor ${name}; call sync() first`);
    return tensor;
  }

  release(): void {
    for (const t of this.tensors.values()) t.dispose();
    this.tensors.clear();
  }
}
