/**
 * DoRA through the lora kind's parse: the slot layout against PEFT's formula (the oracle's
 * get_weight_norm, test/oracle/kinds/dora.ts), the key forms PEFT loads, and every bad input
 * named. Engine numerics are in test/engine/dora.test.ts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { tempDir } from '../../../test/helpers.js';
import { loadSafetensorsF32, loadWeightsF32, writeTinyCheckpoint, writeTinyLora, type TinyFamily } from '../../../test/oracle/checkpoints.js';
import { doraWeightNorm, writeTinyDora } from '../../../test/oracle/kinds/dora.js';
import { oracleLoraFromPeft } from '../../../test/oracle/transformer.js';
import { allProjections } from '../../model/architecture.js';
import { openCheckpoint, type Checkpoint } from '../../model/checkpoint.js';
import { encodeSafetensors } from '../../model/safetensors.js';
import { readCheckpointWeight } from '../../model/weight-data.js';
import { DeltaValidationError } from '../errors.js';
import type { BaseWeightReader, ParsedDelta } from '../kind.js';
import { parseDelta } from '../parse.js';
import { doraGain, loraB } from './lora.js';

const LIMITS = { maxRank: 16, maxVirtualTokens: 64, maxBottleneck: 256 };
const Q = 'model.layers.0.self_attn.q_proj';
const V = 'model.layers.1.self_attn.v_proj';
const mag = (module: string) => `base_model.model.${module}.lora_magnitude_vector`;
type Tensors = Parameters<typeof encodeSafetensors>[0];

/** A tiny backbone with a DoRA adapter on `targets`, and the adapter's files to vary. */
function setup(family: TinyFamily, targets: string[]) {
  const root = tempDir('deltaserve-dora-unit-');
  const modelDir = path.join(root, 'model');
  writeTinyCheckpoint(modelDir, family, { seed: 9 });
  writeTinyDora(path.join(root, 'dora'), family, { seed: 3, r: 4, alpha: 8, targetModules: targets, baseDir: modelDir });
  writeTinyLora(path.join(root, 'lora'), family, { seed: 3, r: 4, alpha: 8, targetModules: targets, baseDir: modelDir });
  const ckpt = openCheckpoint(modelDir);
  const read = (dir: string) => ({ config: JSON.parse(fs.readFileSync(path.join(root, dir, 'adapter_config.json'), 'utf8')), tensors: loadSafetensorsF32(path.join(root, dir, 'adapter_model.safetensors')) });
  return { root, modelDir, ckpt, dora: read('dora'), lora: read('lora'), reader: ((name) => readCheckpointWeight(ckpt, name)) as BaseWeightReader };
}

/** Parses an adapter given as a config object and F32 tensors (a tensor given with its own dtype is kept). */
function parse(ckpt: Checkpoint, config: object, tensors: Map<string, { shape: number[]; data: Float32Array }> | Tensors, reader?: BaseWeightReader): ParsedDelta {
  const record: Tensors = tensors instanceof Map ? Object.fromEntries([...tensors].map(([k, t]) => [k, { dtype: 'F32' as const, shape: t.shape, data: t.data }])) : tensors;
  return parseDelta('acme/dora@1', { config: JSON.stringify(config), weights: encodeSafetensors(record, { format: 'pt' }) }, ckpt.arch, LIMITS, reader);
}

function problemsOf(run: () => unknown): string[] {
  let caught: unknown;
  assert.throws(run, (err) => ((caught = err), err instanceof DeltaValidationError));
  return (caught as DeltaValidationError).problems;
}

const withTensors = (base: Map<string, { shape: number[]; data: Float32Array }>, change: (t: Map<string, { shape: number[]; data: Float32Array }>) => void) => {
  const copy = new Map([...base].map(([k, t]) => [k, { shape: [...t.shape], data: Float32Array.from(t.data) }]));
  change(copy);
  return copy;
};

for (const family of ['llama', 'gpt2'] as const) {
  describe(`DoRA slot layout (${family})`, () => {
    const targets = family === 'gpt2' ? ['c_attn', 'c_proj', 'c_fc'] : ['q_proj', 'v_proj', 'down_proj'];
    let s: ReturnType<typeof setup>;
    before(() => (s = setup(family, targets)));

    it('dora_gain = m / ‖W + s·B·A‖ − 1 and lora_B = g · s · B, with W transposed for Conv1D as PEFT does', () => {
      const delta = parse(s.ckpt, s.dora.config, s.dora.tensors, s.reader);
      const projections = allProjections(s.ckpt.arch).flat();
      assert.deepEqual(delta.summary, { rank: 4, modules: family === 'gpt2' ? 8 : 6, dora: true });
      const modules = oracleLoraFromPeft(s.dora.config, s.dora.tensors);
      const weights = loadWeightsF32(s.modelDir);
      for (const [module, m] of Object.entries(modules)) {
        const p = projections.find((q) => q.modulePath === module)!;
        const w = weights.get(p.weight)!;
        const linear = family === 'gpt2' ? Float64Array.from({ length: w.data.length }, (_, k) => w.data[(k % p.inFeatures) * p.outFeatures + Math.floor(k / p.inFeatures)]!) : Float64Array.from(w.data);
        const norm = doraWeightNorm(linear, m, p.outFeatures);
        const magnitude = s.dora.tensors.get(mag(module))!.data;
        const gain = delta.tensors.get(doraGain(module))!;
        const b = delta.tensors.get(loraB(module))!;
        for (let o = 0; o < p.outFeatures; o++) {
          const g = magnitude[o]! / norm[o]!;
          assert.ok(Math.abs(gain[o]! - (g - 1)) <= 1e-6, `${module} gain ${o}: ${gain[o]} vs ${g - 1}`);
          for (let r = 0; r < m.r; r++) assert.ok(Math.abs(b[r * p.outFeatures + o]! - g * m.scale * m.B[o * m.r + r]!) <= 1e-6);
        }
      }
    });
  });
}

describe('DoRA parse', () => {
  let s: ReturnType<typeof setup>;
  before(() => (s = setup('llama', ['q_proj', 'v_proj'])));

  it('a plain LoRA lays out as before: no dora_gain tensors (the slot keeps exact zeros), B = scale · lora_B', () => {
    const delta = parse(s.ckpt, s.lora.config, s.lora.tensors, s.reader);
    assert.deepEqual(delta.summary, { rank: 4, modules: 4 });
    assert.ok(![...delta.tensors.keys()].some((k) => k.startsWith('dora_gain.')));
    const b = delta.tensors.get(loraB(Q))!;
    const lora = s.lora.tensors.get(`base_model.model.${Q}.lora_B.weight`)!.data;
    assert.equal(b[3 * 64 + 5], Math.fround(2 * lora[5 * 4 + 3]!)); // alpha 8 / r 4
  });

  it('magnitudes under `.lora_magnitude_vector.weight` (which PEFT also loads) give the same slots', () => {
    const renamed = withTensors(s.dora.tensors, (t) => {
      for (const key of [...t.keys()].filter((k) => k.endsWith('lora_magnitude_vector'))) {
        t.set(`${key}.weight`, t.get(key)!);
        t.delete(key);
      }
    });
    assert.deepEqual(parse(s.ckpt, s.dora.config, renamed, s.reader).tensors, parse(s.ckpt, s.dora.config, s.dora.tensors, s.reader).tensors);
  });

  it('F16 magnitudes are read (converted exactly)', () => {
    const record: Tensors = Object.fromEntries([...s.dora.tensors].map(([k, t]) => [k, { dtype: 'F32' as const, shape: t.shape, data: t.data }]));
    record[mag(Q)] = { dtype: 'F16', shape: [64], data: new Uint16Array(64).fill(0x3c00) }; // 1.0
    const delta = parse(s.ckpt, s.dora.config, record, s.reader);
    const f32 = parse(s.ckpt, s.dora.config, withTensors(s.dora.tensors, (t) => t.get(mag(Q))!.data.fill(1)), s.reader);
    assert.deepEqual(delta.tensors.get(doraGain(Q)), f32.tensors.get(doraGain(Q)));
  });

  it('magnitudes in an adapter without use_dora are ignored, as PEFT ignores unexpected keys, with a warning', () => {
    const delta = parse(s.ckpt, { ...s.dora.config, use_dora: false }, s.dora.tensors, s.reader);
    assert.deepEqual(delta.summary, { rank: 4, modules: 4 });
    assert.ok(![...delta.tensors.keys()].some((k) => k.startsWith('dora_gain.')));
    assert.equal(delta.warnings.filter((w) => /lora_magnitude_vector: ignored \(a DoRA magnitude, but use_dora is false/.test(w)).length, 4);
  });

  it('untargeted modules are ignored with a warning, their magnitudes too', () => {
    const delta = parse(s.ckpt, { ...s.dora.config, target_modules: ['q_proj'] }, s.dora.tensors, s.reader);
    assert.equal(delta.summary['modules'], 2);
    assert.ok(delta.warnings.some((w) => w.includes(V) && /target_modules does not select it/.test(w)), JSON.stringify(delta.warnings));
  });

  it('each bad magnitude is named, all in one error', () => {
    const tensors = withTensors(s.dora.tensors, (t) => {
      t.delete(mag('model.layers.0.self_attn.v_proj'));
      t.set(mag(Q), { shape: [1, 64], data: new Float32Array(64).fill(1) });
      t.get(mag(V))!.data[7] = NaN;
      t.set(`${mag('model.layers.1.self_attn.q_proj')}.weight`, t.get(mag('model.layers.1.self_attn.q_proj'))!);
    });
    const problems = problemsOf(() => parse(s.ckpt, s.dora.config, tensors, s.reader));
    assert.equal(problems.length, 4, JSON.stringify(problems));
    assert.ok(problems.some((p) => p === 'model.layers.0.self_attn.v_proj: use_dora is true but base_model.model.model.layers.0.self_attn.v_proj.lora_magnitude_vector is missing'));
    assert.ok(problems.some((p) => p.startsWith(`${mag(Q)}: shape [1,64], expected [64]`)));
    assert.ok(problems.some((p) => p === `${mag(V)}: value at index 7 is not finite (NaN)`));
    assert.ok(problems.some((p) => p.includes('model.layers.1.self_attn.q_proj: both') && /which one wins is unclear/.test(p)));
  });

  it('a magnitude without its lora_A/lora_B, and an integer magnitude, are refused', () => {
    const tensors = withTensors(s.dora.tensors, (t) => {
      t.delete(`base_model.model.${V}.lora_A.weight`);
      t.delete(`base_model.model.${V}.lora_B.weight`);
    });
    const record: Tensors = Object.fromEntries([...tensors].map(([k, t]) => [k, { dtype: 'F32' as const, shape: t.shape, data: t.data }]));
    record[mag(Q)] = { dtype: 'I32', shape: [64], data: new Int32Array(64) };
    const problems = problemsOf(() => parse(s.ckpt, s.dora.config, record, s.reader));
    assert.deepEqual(problems.sort(), [`${mag(Q)}: dtype I32 is not supported (F32, F16, BF16)`, `${V}: needs both base_model.model.${V}.lora_A.weight and base_model.model.${V}.lora_B.weight`].sort());
  });

  it('use_dora is type-checked', () => {
    const problems = problemsOf(() => parse(s.ckpt, { ...s.dora.config, use_dora: 'yes' }, s.dora.tensors, s.reader));
    assert.deepEqual(problems, ['adapter_config.json: use_dora must be true or false, got "yes" (a string)']);
  });

  it('a row whose W + s·B·A is zero (m / 0) and a gain that overflows float32 are refused, naming the output', () => {
    const zeroRow: BaseWeightReader = (name) => {
      const w = s.reader(name);
      if (name === `${Q}.weight`) w.fill(0, 3 * 64, 4 * 64);
      if (name === `${V}.weight`) for (let i = 2 * 64; i < 3 * 64; i++) w[i]! *= 1e-3; // ‖row 2‖ well below 1
      return w;
    };
    const tensors = withTensors(s.dora.tensors, (t) => {
      t.get(`base_model.model.${Q}.lora_B.weight`)!.data.fill(0, 3 * 4, 4 * 4);
      t.get(`base_model.model.${V}.lora_B.weight`)!.data.fill(0, 2 * 4, 3 * 4);
      t.get(mag(V))!.data[2] = 3e38;
    });
    const problems = problemsOf(() => parse(s.ckpt, s.dora.config, tensors, zeroRow));
    assert.equal(problems.length, 2, JSON.stringify(problems));
    assert.match(problems.find((p) => p.startsWith(mag(Q)))!, /at output 3, m \/ ‖W \+ s·B·A‖ = [-\d.e]+ \/ 0 is not a finite float32 gain/);
    assert.match(problems.find((p) => p.startsWith(mag(V)))!, /at output 2, m \/ ‖W \+ s·B·A‖ = 3[\d.]*e\+38 \/ [\d.e-]+ is not a finite float32 gain/);
  });

  it('a DoRA parse without the backbone is a programming error, not a bad delta', () => {
    assert.throws(() => parse(s.ckpt, s.dora.config, s.dora.tensors), (err) => !(err instanceof DeltaValidationError) && /needs the backbone's frozen weights/.test((err as Error).message));
  });
});
