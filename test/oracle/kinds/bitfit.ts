/**
 * BitFit for the oracle, and a writer of test adapters. PEFT has no BitFit; the format is
 * deltaserve's own, defined in src/deltas/kinds/bitfit.ts's header (PEFT's style): the adapter
 * stores `base_model.model.<module>.bias` [out], the full tuned bias of a linear layer, and a
 * targeted layer computes x Wᵀ + b_tuned instead of x Wᵀ + b_base (b_base = 0 where the layer has
 * no bias). Targets follow PEFT's check_target_module_exists (./peft-targets.ts); null or
 * "all-linear" is every linear layer of the blocks.
 */
import fs from 'node:fs';
import path from 'node:path';
import { encodeSafetensors } from '../../../src/model/safetensors.js';
import { seededNormal } from '../../../src/model/random.js';
import { loadSafetensorsF32, loadWeightsF32, type TinyFamily } from '../checkpoints.js';
import type { OracleDelta, OracleTensor, OracleWeights, Vec } from '../transformer.js';
import { checkTargetModuleExists } from './peft-targets.js';

const KEY = /^base_model\.model\.(.+)\.bias$/;

/** A base tensor by its module path (GPT-2 checkpoints may name tensors without `transformer.`). */
function baseTensor(base: OracleWeights, name: string): OracleTensor | undefined {
  return base.get(name) ?? base.get(name.replace(/^transformer\./, ''));
}

/** The block linear layers of a checkpoint, by PEFT module path: 2-D weights but embeddings and the head. */
function linearModules(base: OracleWeights): string[] {
  return [...base.entries()]
    .filter(([name, t]) => name.endsWith('.weight') && t.shape.length === 2 && !/(embed_tokens|wte|wpe|lm_head)\.weight$/.test(name))
    .map(([name]) => modulePath(name.replace(/\.weight$/, '')));
}

function modulePath(stem: string): string {
  return /^(h|ln_f|wte|wpe)\b/.test(stem) ? `transformer.${stem}` : stem;
}

/** The OracleDelta of a BitFit adapter directory: projectionOutput swaps the base bias for the tuned one. */
export function bitfitOracle(adapterDir: string, base: OracleWeights): OracleDelta {
  const config = JSON.parse(fs.readFileSync(path.join(adapterDir, 'adapter_config.json'), 'utf8'));
  const linear = new Set(linearModules(base));
  const target = config.target_modules === null || config.target_modules === undefined || config.target_modules === 'all-linear' ? [...linear] : config.target_modules;
  const biases = new Map<string, { tuned: Vec; base: Vec }>();
  for (const [key, t] of loadSafetensorsF32(path.join(adapterDir, 'adapter_model.safetensors'))) {
    const module = KEY.exec(key)?.[1];
    if (!module || !linear.has(module) || !checkTargetModuleExists({ ...config, target_modules: target }, module)) continue;
    const b0 = baseTensor(base, `${module}.bias`);
    biases.set(module, { tuned: Float64Array.from(t.data), base: b0 ? Float64Array.from(b0.data) : new Float64Array(t.data.length) });
  }
  return {
    projectionOutput(module, _x, y) {
      const bias = biases.get(module);
      if (!bias) return y;
      return y.map((v, o) => v - bias.base[o]! + bias.tuned[o]!);
    },
  };
}

export interface TinyBitfitOptions {
  baseDir: string;
  seed?: number;
  /** Short names (`q_proj`, `c_fc`) of the layers to tune, written as target_modules; null: every linear layer. */
  targetModules?: string[] | null;
  /** Std of the change to each bias (default 0.1). */
  scale?: number;
}

/**
 * Writes a BitFit adapter for a tiny checkpoint: each tuned layer's bias is the base's (or zero)
 * plus seeded noise. Returns the module paths it wrote.
 */
export function writeTinyBitfit(dir: string, family: TinyFamily, options: TinyBitfitOptions): string[] {
  const base = loadWeightsF32(options.baseDir);
  const rand = seededNormal(options.seed ?? 3);
  const scale = options.scale ?? 0.1;
  const targets = options.targetModules ?? null;
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  const written: string[] = [];
  for (const module of linearModules(base).sort()) {
    if (targets && !targets.includes(module.split('.').pop()!)) continue;
    const w = baseTensor(base, `${module}.weight`)!;
    const out = family === 'gpt2' ? w.shape[1]! : w.shape[0]!; // GPT-2's Conv1D stores [in, out]
    const b0 = baseTensor(base, `${module}.bias`)?.data ?? new Float32Array(out);
    tensors[`base_model.model.${module}.bias`] = { dtype: 'F32', shape: [out], data: b0.map((v) => v + scale * rand()) };
    written.push(module);
  }
  if (written.length === 0) throw new Error(`writeTinyBitfit: no linear layer matches ${JSON.stringify(targets)}`);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), encodeSafetensors(tensors, { format: 'pt' }));
  const config = { auto_mapping: null, base_model_name_or_path: null, exclude_modules: null, inference_mode: true, layers_pattern: null, layers_to_transform: null, modules_to_save: null, peft_type: 'BITFIT', peft_version: '0.21.0', revision: null, target_modules: targets, task_type: 'CAUSAL_LM' };
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2));
  return written;
}

/**
 * The oracle's BitFit for training checks: from a target_modules field (null or "all-linear":
 * every linear layer of the blocks) the layers whose bias the format tunes, decided by the
 * oracle's own matching; returns a builder of the OracleDelta from trained biases by
 * `<module>.bias` (the file's key without `base_model.model.`), and the base biases a fresh delta
 * starts from (the base's, zeros where it has none). The builder refuses any other parameter set.
 */
export function bitfitOracleFromParams(targetModules: string | string[] | null, base: OracleWeights): { initial: Map<string, Float32Array>; delta(params: ReadonlyMap<string, Float64Array>): OracleDelta } {
  const linear = linearModules(base);
  const target = targetModules === null || targetModules === 'all-linear' ? linear : targetModules;
  const tuned = linear.filter((m) => checkTargetModuleExists({ target_modules: target }, m));
  const initial = new Map<string, Float32Array>();
  for (const module of tuned) {
    const w = baseTensor(base, `${module}.weight`)!;
    const out = module.startsWith('transformer.') ? w.shape[1]! : w.shape[0]!; // GPT-2's Conv1D stores [in, out]
    initial.set(`${module}.bias`, Float32Array.from(baseTensor(base, `${module}.bias`)?.data ?? new Float32Array(out)));
  }
  const delta = (params: ReadonlyMap<string, Float64Array>): OracleDelta => {
    const biases = new Map<string, { tuned: Vec; base: Vec }>();
    for (const [name, b0] of initial) {
      const v = params.get(name);
      if (!v || v.length !== b0.length) throw new Error(`oracle: ${name} needs ${b0.length} values, got ${v?.length ?? 'none'}`);
      biases.set(name.slice(0, -'.bias'.length), { tuned: v, base: Float64Array.from(baseTensor(base, name)?.data ?? new Float32Array(b0.length)) });
    }
    if (params.size !== initial.size) throw new Error(`oracle: ${params.size} parameters for ${initial.size} tuned biases`);
    return {
      projectionOutput(module, _x, y) {
        const bias = biases.get(module);
        return bias ? y.map((v, o) => v - bias.base[o]! + bias.tuned[o]!) : y;
      },
    };
  };
  return { initial, delta };
}
