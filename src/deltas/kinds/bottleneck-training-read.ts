/**
 * A stored bottleneck adapter as a starting point for training (bottleneck-training.ts fromDelta):
 * read by the serving kind's parser (../adapterhub/), then checked to be an adapter this training
 * computes — SeqBnConfig's arrangement with one width everywhere — since continuing any other
 * would silently change what the adapter computes. Its tensors are renamed to the training's keys
 * (the adapter's own name becomes ADAPTER_NAME).
 */
import type { ArchitectureSpec } from '../../model/architecture.js';
import { parseSafetensors } from '../../model/safetensors.js';
import { readBottleneckConfig, type BottleneckSettings } from '../adapterhub/bottleneck-config.js';
import { loadBottleneckModules } from '../adapterhub/bottleneck-weights.js';
import { parseConfigObject } from '../peft/config-fields.js';
import type { DeltaFileBytes } from '../training.js';
import { bottleneckLayout, type BottleneckLayout, type BottleneckTrainingOptions, type Placement } from './bottleneck-training.js';

/**
 * The adapter's training layout and its tensors under the training's parameter names; throws
 * naming every setting that training does not compute.
 *
 * @example readBottleneckAdapter(files, arch).layout.placement // 'mlp'
 */
export function readBottleneckAdapter(files: DeltaFileBytes, arch: ArchitectureSpec): { layout: BottleneckLayout; tensors: Map<string, Float32Array> } {
  const raw = parseConfigObject(files.config);
  if (typeof raw === 'string') throw new Error(`adapter_config.json: ${raw}`);
  const problems: string[] = [];
  const warnings: string[] = [];
  const settings = readBottleneckConfig(raw, arch, problems);
  const modules = problems.length ? [] : loadBottleneckModules(settings, parseSafetensors(files.weights, 'adapter.safetensors'), arch, Infinity, problems, warnings);
  problems.push(...untrainable(settings, arch));
  if (problems.length) throw new Error(`the bottleneck adapter cannot be continued by method.bottleneck: ${problems.join('; ')}`);
  const inner = typeof raw['config'] === 'object' && raw['config'] !== null ? (raw['config'] as Record<string, unknown>) : {};
  const initWeights = (inner['init_weights'] ?? 'bert') as BottleneckTrainingOptions['init_weights'];
  const placement: Placement = settings.mhAdapter && settings.outputAdapter ? 'both' : settings.mhAdapter ? 'attention' : 'mlp';
  const layout = bottleneckLayout(arch, { reductionFactor: Number(settings.reductionFactor(0)), nonLinearity: settings.activationName, placement, initWeights }, Infinity);
  const tensors = new Map<string, Float32Array>();
  for (const m of modules) {
    const prefix = layout.modules.find((p) => p.layer === m.layer && p.location === m.location)!.prefix;
    tensors.set(`${prefix}.adapter_down.0.weight`, Float32Array.from(m.down)).set(`${prefix}.adapter_down.0.bias`, Float32Array.from(m.downBias));
    tensors.set(`${prefix}.adapter_up.weight`, Float32Array.from(m.up)).set(`${prefix}.adapter_up.bias`, Float32Array.from(m.upBias));
  }
  return { layout, tensors };
}

/** Every setting that differs from what method.bottleneck trains, by the library's field name. */
function untrainable(s: BottleneckSettings, arch: ArchitectureSpec): string[] {
  const out: string[] = [];
  const want = { original_ln_before: [s.originalLnBefore, true], original_ln_after: [s.originalLnAfter, true], residual_before_ln: [s.residualBeforeLn, true], ln_before: [s.lnBefore, false], ln_after: [s.lnAfter, false], adapter_residual_before_ln: [s.adapterResidualBeforeLn, false], is_parallel: [s.parallel, false], scaling: [s.scaling, 1] } as const;
  for (const [field, [got, expected]] of Object.entries(want)) if (got !== expected) out.push(`config.${field} is ${JSON.stringify(got)} (method.bottleneck trains ${JSON.stringify(expected)})`);
  if (s.leaveOut.size) out.push(`config.leave_out [${[...s.leaveOut].join(', ')}] (method.bottleneck places an adapter in every layer)`);
  if (!s.mhAdapter && !s.outputAdapter) out.push('config places no adapter (mh_adapter and output_adapter false)');
  const widths = new Set(arch.blocks.map((_, layer) => s.reductionFactor(layer)));
  if (widths.size > 1) out.push(`config.reduction_factor differs between layers (${[...widths].join(', ')}); method.bottleneck takes one`);
  return out;
}
