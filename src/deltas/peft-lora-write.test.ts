import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { FIXTURE } from '../../test/helpers.js';
import { openCheckpoint } from '../model/checkpoint.js';
import { encodeSafetensors, float32ToBf16, parseSafetensors } from '../model/safetensors.js';
import { parsePeftLora } from './peft-lora.js';
import { encodePeftLora, loraWeightsFromPeft, type LoraWeights } from './peft-lora-write.js';

const ADAPTER = path.join(FIXTURE, 'lora_all_r8');
const arch = openCheckpoint(path.join(FIXTURE, 'base')).arch;
const configText = fs.readFileSync(path.join(ADAPTER, 'adapter_config.json'), 'utf8');
const weightBytes = new Uint8Array(fs.readFileSync(path.join(ADAPTER, 'adapter_model.safetensors')));

describe('loraWeightsFromPeft', () => {
  const weights = loraWeightsFromPeft(configText, weightBytes, arch);

  it('reads the hyperparameters and every projection of the fixture', () => {
    assert.equal(weights.r, 8);
    assert.equal(weights.alpha, 16);
    assert.equal(weights.useRslora, false);
    assert.deepEqual(weights.targetModules, ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
    assert.equal(weights.baseModel, undefined);
    assert.equal(weights.modules.size, 14);
    const q = weights.modules.get('model.layers.1.self_attn.q_proj')!;
    assert.equal(q.inFeatures, 64);
    assert.equal(q.outFeatures, 64);
    assert.equal(q.a.length, 8 * 64);
    const down = weights.modules.get('model.layers.0.mlp.down_proj')!;
    assert.deepEqual([down.inFeatures, down.outFeatures], [176, 64]);
  });

  it('reads BF16 adapters as exact F32 values', () => {
    const { header, tensor } = parseSafetensors(weightBytes, 'fixture');
    const tensors: Parameters<typeof encodeSafetensors>[0] = {};
    for (const [name, entry] of header.tensors) tensors[name] = { dtype: 'BF16', shape: entry.shape, data: float32ToBf16(tensor(name)) };
    const bf16 = loraWeightsFromPeft(configText, encodeSafetensors(tensors), arch);
    const a = bf16.modules.get('model.layers.0.self_attn.v_proj')!.a;
    const bits = float32ToBf16(weights.modules.get('model.layers.0.self_attn.v_proj')!.a);
    assert.deepEqual([...float32ToBf16(a)], [...bits]);
  });

  it('rejects what it cannot represent, naming each field', () => {
    const config = JSON.parse(configText);
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ rank_pattern: { q_proj: 4 } }, /rank_pattern/],
      [{ alpha_pattern: { q_proj: 4 } }, /alpha_pattern/],
      [{ use_dora: true }, /use_dora/],
      [{ bias: 'all' }, /bias/],
      [{ peft_type: 'IA3' }, /peft_type/],
    ];
    for (const [override, message] of cases) {
      assert.throws(() => loraWeightsFromPeft(JSON.stringify({ ...config, ...override }), weightBytes, arch), message);
    }
    assert.throws(() => loraWeightsFromPeft('{', weightBytes, arch), /not valid JSON/);
  });
});

describe('encodePeftLora', () => {
  const weights = loraWeightsFromPeft(configText, weightBytes, arch);
  const encoded = encodePeftLora({ ...weights, baseModel: 'hf-tiny-llama' });

  it('round-trips the fixture: parsePeftLora sees the same modules and scales', () => {
    const original = parsePeftLora('original', configText, weightBytes, arch, 16);
    const rewritten = parsePeftLora('rewritten', encoded.config, encoded.weights, arch, 16);
    assert.deepEqual([...rewritten.modules.keys()].sort(), [...original.modules.keys()].sort());
    for (const [modulePath, m] of original.modules) {
      const r = rewritten.modules.get(modulePath)!;
      assert.equal(r.rank, m.rank, modulePath);
      assert.equal(r.scale, m.scale, modulePath);
      assert.deepEqual(r.a, m.a, modulePath);
      assert.deepEqual(r.b, m.b, modulePath);
    }
  });

  it('writes the same tensors as PEFT, bitwise, in the same order', () => {
    const ours = parseSafetensors(encoded.weights, 'ours');
    const theirs = parseSafetensors(weightBytes, 'fixture');
    assert.deepEqual([...ours.header.tensors.keys()], [...theirs.header.tensors.keys()]);
    assert.deepEqual(ours.header.metadata, { format: 'pt' });
    for (const [name, entry] of theirs.header.tensors) {
      const mine = ours.header.tensors.get(name)!;
      assert.deepEqual([mine.dtype, mine.shape], [entry.dtype, entry.shape], name);
      const bytes = (b: Uint8Array, e: typeof entry) => Buffer.from(b.subarray(e.fileOffset, e.fileOffset + e.byteLength));
      assert.ok(bytes(encoded.weights, mine).equals(bytes(weightBytes, entry)), `${name} differs`);
    }
    // The header is laid out as PEFT's writer lays it out, so the whole file matches byte for byte.
    assert.ok(Buffer.from(encodePeftLora(weights).weights).equals(weightBytes));
  });

  it('writes a PEFT LoRA config with sorted target modules', () => {
    const config = JSON.parse(encoded.config);
    assert.deepEqual(config, {
      alpha_pattern: {},
      base_model_name_or_path: 'hf-tiny-llama',
      bias: 'none',
      fan_in_fan_out: false,
      inference_mode: true,
      init_lora_weights: true,
      lora_alpha: 16,
      lora_dropout: 0,
      modules_to_save: null,
      peft_type: 'LORA',
      r: 8,
      rank_pattern: {},
      target_modules: ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj'],
      task_type: 'CAUSAL_LM',
      use_dora: false,
      use_rslora: false,
    });
  });

  it('keeps use_rslora, so the scale is alpha / sqrt(r)', () => {
    const rs = encodePeftLora({ ...weights, useRslora: true });
    const delta = parsePeftLora('rs', rs.config, rs.weights, arch, 16);
    assert.equal(delta.modules.get('model.layers.0.mlp.up_proj')!.scale, 16 / Math.sqrt(8));
  });

  it('rejects factors whose sizes do not match r and the features', () => {
    const bad: LoraWeights = { ...weights, modules: new Map([['model.layers.0.self_attn.q_proj', { a: new Float32Array(10), b: new Float32Array(64 * 8), inFeatures: 64, outFeatures: 64 }]]) };
    assert.throws(() => encodePeftLora(bad), /lora_A has 10 values, expected r \* in = 8 \* 64/);
    assert.throws(() => encodePeftLora({ ...weights, r: 0 }), /positive integer/);
  });
});
