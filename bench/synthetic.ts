import fs from 'node:fs';
import path from 'node:path';
import { mulberry32 } from '../src/model/random.js';
import { allProjections } from '../src/model/architecture.js';
import { describeArchitecture } from '../src/model/families/index.js';
import { expectedShapes } from '../src/model/checkpoint.js';
import type { ParsedDelta } from '../src/deltas/kind.js';
import { toSlotLayout } from '../src/deltas/kinds/lora.js';
import type { LoraModule } from '../src/deltas/peft-lora.js';
import type { ArchitectureSpec } from '../src/model/architecture.js';

/** SmolLM2-135M's shape: the bench model (random weights, generated locally). */
export const SMOLLM2_135M_CONFIG = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 576,
  intermediate_size: 1536,
  num_hidden_layers: 30,
  num_attention_heads: 9,
  num_key_value_heads: 3,
  head_dim: 64,
  vocab_size: 49152,
  max_position_embeddings: 8192,
  rms_norm_eps: 1e-5,
  rope_parameters: { rope_theta: 100000, rope_type: 'default' },
  tie_word_embeddings: true,
  bos_token_id: 0,
  eos_token_id: 0,
  torch_dtype: 'float32',
};

/**
 * Writes a random-weight checkpoint of the given Llama config, streaming one tensor at a time
 * (the file is never held in memory). Reused when it already exists.
 */
export function ensureSyntheticCheckpoint(dir: string, config: Record<string, unknown>, seed = 1): string {
  const file = path.join(dir, 'model.safetensors');
  if (fs.existsSync(file)) return dir;
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  const arch = describeArchitecture(config, new Set(), 'config.json');
  const shapes = [...expectedShapes(arch)].sort(([a], [b]) => (a < b ? -1 : 1));
  let offset = 0;
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  for (const [name, shape] of shapes) {
    const bytes = shape.reduce((a, b) => a * b, 1) * 4;
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  fs.writeSync(fd, length);
  fs.writeSync(fd, json);
  const random = mulberry32(seed);
  for (const [name, shape] of shapes) {
    const values = new Float32Array(shape.reduce((a, b) => a * b, 1));
    const isNorm = shape.length === 1;
    for (let i = 0; i < values.length; i++) values[i] = isNorm ? 1 : (random() - 0.5) * 0.07;
    fs.writeSync(fd, new Uint8Array(values.buffer));
    void name;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
  return dir;
}

/** A random rank-r LoRA on every projection (all-linear), laid out for slots of rank maxRank, as the engine holds it. */
export function randomLora(arch: ArchitectureSpec, name: string, rank: number, seed: number, maxRank = rank): ParsedDelta {
  const random = mulberry32(seed);
  const fill = (n: number, scale: number) => Float32Array.from({ length: n }, () => (random() - 0.5) * scale);
  const modules = new Map<string, LoraModule>();
  const projections = allProjections(arch).flat();
  for (const p of projections) {
    modules.set(p.modulePath, { a: fill(rank * p.inFeatures, 0.05), b: fill(p.outFeatures * rank, 0.05), rank, scale: 2 });
  }
  return { kind: 'lora', name, tensors: toSlotLayout(projections, modules, maxRank), virtualTokens: 0, summary: { rank, modules: modules.size }, warnings: [] };
}
