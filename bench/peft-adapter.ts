import fs from 'node:fs';
import path from 'node:path';
import { allProjections } from '../src/model/architecture.js';
import { describeArchitecture } from '../src/model/families/index.js';
import { mulberry32 } from '../src/model/random.js';
import { encodeSafetensors } from '../src/model/safetensors.js';

/**
 * Writes a real PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) with
 * random weights for the given Hugging Face model config: rank `rank` on every linear projection
 * (all-linear), keys `base_model.model.<module>.lora_A.weight` [r, in] and `lora_B.weight` [out, r],
 * F32. Deterministic in `seed`; reused when the directory already holds both files.
 *
 * @example writeRandomPeftAdapter('/tmp/a0', SMOLLM2_135M_CONFIG, { rank: 16, alpha: 32, seed: 1 })
 */
export function writeRandomPeftAdapter(dir: string, modelConfig: Record<string, unknown>, options: { rank: number; alpha: number; seed: number }): string {
  const configFile = path.join(dir, 'adapter_config.json');
  const weightsFile = path.join(dir, 'adapter_model.safetensors');
  if (fs.existsSync(configFile) && fs.existsSync(weightsFile)) return dir;
  const { rank, alpha, seed } = options;
  const arch = describeArchitecture(modelConfig, new Set(), 'config.json');
  const projections = allProjections(arch).flat();
  const random = mulberry32(seed);
  const fill = (n: number, scale: number) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = (random() - 0.5) * scale;
    return out;
  };
  const tensors: Parameters<typeof encodeSafetensors>[0] = {};
  for (const p of projections) {
    tensors[`base_model.model.${p.modulePath}.lora_A.weight`] = { dtype: 'F32', shape: [rank, p.inFeatures], data: fill(rank * p.inFeatures, 0.05) };
    tensors[`base_model.model.${p.modulePath}.lora_B.weight`] = { dtype: 'F32', shape: [p.outFeatures, rank], data: fill(p.outFeatures * rank, 0.05) };
  }
  const targetModules = [...new Set(projections.map((p) => p.name))].sort();
  const adapterConfig = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    r: rank,
    lora_alpha: alpha,
    lora_dropout: 0,
    target_modules: targetModules,
    bias: 'none',
    fan_in_fan_out: false,
    use_rslora: false,
    use_dora: false,
    modules_to_save: null,
    inference_mode: true,
    base_model_name_or_path: null,
  };
  fs.mkdirSync(dir, { recursive: true });
  // Write to temporary names, then rename, so an interrupted run never leaves a half-written adapter.
  fs.writeFileSync(`${weightsFile}.tmp`, encodeSafetensors(tensors, { format: 'pt' }));
  fs.writeFileSync(`${configFile}.tmp`, JSON.stringify(adapterConfig, null, 2));
  fs.renameSync(`${weightsFile}.tmp`, weightsFile);
  fs.renameSync(`${configFile}.tmp`, configFile);
  return dir;
}
