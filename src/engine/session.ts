import os from 'node:os';
import ort from 'onnxruntime-node';
import type { Device } from './model-runtime.js';

const EXECUTION_PROVIDERS: Record<Device, string[]> = { cpu: ['cpu'], webgpu: ['webgpu'], cuda: ['cuda'] };

const DEVICE_HINTS: Record<Device, string> = {
  cpu: '',
  webgpu: 'WebGPU needs a Vulkan loader (libvulkan1) and a GPU driver, or Mesa lavapipe for a software device',
  cuda: 'the CUDA execution provider is only present when installed with ONNXRUNTIME_NODE_INSTALL=cuda12 on a CUDA 12 + cuDNN 9 machine',
};

/** A session on the chosen device; an unavailable device is one clear error naming what it needs. */
export async function createSession(
  modelPath: string,
  options: { device: Device; threads?: number | undefined; spinning?: boolean; optimization?: 'all' | 'extended' | 'basic'; gpuOutputs?: string[] },
): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(modelPath, {
      executionProviders: EXECUTION_PROVIDERS[options.device],
      graphOptimizationLevel: options.optimization ?? 'all',
      intraOpNumThreads: options.threads ?? os.availableParallelism(),
      interOpNumThreads: 1,
      executionMode: 'sequential',
      // Outputs fed back into the next run (the device KV cache) stay in GPU memory; the rest come to the host.
      ...(options.gpuOutputs?.length ? { preferredOutputLocation: Object.fromEntries(options.gpuOutputs.map((name) => [name, 'gpu-buffer' as const])) } : {}),
      // A session that shares the cores with another (training beside serving) must not keep its
      // idle threads spinning while the other runs.
      ...(options.spinning === false ? { extra: { session: { intra_op: { allow_spinning: '0' } } } } : {}),
    });
  } catch (err) {
    if (options.device === 'cpu') throw err;
    const reason = (err as Error).message.split('\n')[0]!.slice(0, 300);
    throw new Error(`device '${options.device}' is not available: ${reason} (${DEVICE_HINTS[options.device]})`, { cause: err });
  }
}

