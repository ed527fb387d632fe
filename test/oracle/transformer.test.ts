import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadOracleLora, loadSafetensorsF32, loadWeightsF32, readConfig, writeTinyCheckpoint, writeTinyLora, type TinyFamily } from './checkpoints.js';
import { argmax, logSoftmax, oracleForward, oracleGreedy, oracleLoraFromPeft, ropeInvFreq, type OracleLora, type OracleWeights } from './transformer.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIXTURE = path.join(here, '..', 'fixtures', 'hf-tiny-llama');

/** Minimal all-F32 safetensors reader, kept separate from both src/ and checkpoints.ts. */
function readF32Safetensors(file: string): OracleWeights {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, any>;
  const out: OracleWeights = new Map();
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    assert.equal(e.dtype, 'F32', `${name} is ${e.dtype}`);
    const [begin, end] = e.data_offsets as [number, number];
    const bytes = new Uint8Array(buf.subarray(8 + n + begin, 8 + n + end)); // copy: Buffer#slice would not
    out.set(name, { shape: e.shape, data: new Float32Array(bytes.buffer, 0, bytes.byteLength / 4) });
  }
  return out;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function allFinite(rows: Float32Array[]): boolean {
  return rows.every((r) => r.every((x) => Number.isFinite(x)));
}

describe('oracle vs PyTorch reference (hf-tiny-llama)', () => {
  const ref = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'reference.json'), 'utf8'));
  const config = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'base', 'config.json'), 'utf8'));
  const weights = readF32Safetensors(path.join(FIXTURE, 'base', 'model.safetensors'));
  const adapterConfig = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'lora_all_r8', 'adapter_config.json'), 'utf8'));
  const lora = oracleLoraFromPeft(adapterConfig, readF32Safetensors(path.join(FIXTURE, 'lora_all_r8', 'adapter_model.safetensors')));
  const inputIds: number[][] = ref.input_ids;

  test('adapter parsed with PEFT scale lora_alpha / r = 2', () => {
    assert.equal(Object.keys(lora).length, 14);
    const q = lora['model.layers.0.self_attn.q_proj']!;
    assert.equal(q.r, 8);
    assert.equal(q.scale, 2);
    assert.equal(q.A.length, 8 * 64);
    assert.equal(lora['model.layers.1.mlp.down_proj']!.A.length, 8 * 176);
  });

  for (const variant of ['base', 'lora_all_r8'] as const) {
    const adapter = variant === 'base' ? undefined : lora;

    test(`${variant}: logits match reference within 1e-4`, () => {
      const expected: number[][][] = ref[variant].logits;
      assert.equal(expected.length, inputIds.length);
      for (let row = 0; row < inputIds.length; row++) {
        const logits = oracleForward(config, weights, inputIds[row]!, adapter);
        assert.equal(logits.length, 8);
        for (let t = 0; t < logits.length; t++) {
          assert.equal(logits[t]!.length, 512);
          const d = maxAbsDiff(logits[t]!, expected[row]![t]!);
          assert.ok(d < 1e-4, `${variant} row ${row} pos ${t}: max |diff| ${d}`);
        }
      }
    });

    test(`${variant}: greedy_12 matches reference`, () => {
      for (let row = 0; row < inputIds.length; row++) {
        assert.deepEqual(oracleGreedy(config, weights, inputIds[row]!, 12, adapter), ref[variant].greedy_12[row]);
      }
    });
  }

  test('checkpoints.ts reader agrees with the plain F32 reader', () => {
    const viaLoader = loadWeightsF32(path.join(FIXTURE, 'base'));
    assert.deepEqual([...viaLoader.keys()].sort(), [...weights.keys()].sort());
    for (const [k, v] of weights) assert.deepEqual(viaLoader.get(k)!.data, v.data);
    const l2 = loadOracleLora(path.join(FIXTURE, 'lora_all_r8'));
    assert.deepEqual(Object.keys(l2).sort(), Object.keys(lora).sort());
  });
});

describe('oracle helpers', () => {
  test('logSoftmax normalises', () => {
    const ls = logSoftmax(new Float32Array([1, 2, 3, 1000]));
    const sum = ls.reduce((a, b) => a + Math.exp(b), 0);
    assert.ok(Math.abs(sum - 1) < 1e-12);
    assert.ok(Math.abs(ls[3]!) < 1e-12);
  });

  test('argmax picks the first maximum', () => {
    assert.equal(argmax([1, 3, 3, 2]), 1);
  });

  test('llama3 rope scaling follows transformers _compute_llama3_parameters', () => {
    const base = { hidden_size: 64, num_attention_heads: 4, head_dim: 16 };
    const plain = ropeInvFreq({ ...base, rope_parameters: { rope_theta: 10000, rope_type: 'default' } });
    const params = { rope_theta: 10000, rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 32 };
    const v5 = ropeInvFreq({ ...base, rope_parameters: params });
    const { rope_theta, ...scaling } = params;
    const v4 = ropeInvFreq({ ...base, rope_theta, rope_scaling: scaling });
    assert.deepEqual(v4, v5);
    for (let i = 0; i < plain.length; i++) {
      const wavelen = (2 * Math.PI) / plain[i]!;
      if (wavelen < 8) assert.equal(v5[i], plain[i]); // high frequency: unchanged
      else if (wavelen > 32) assert.ok(Math.abs(v5[i]! - plain[i]! / 8) < 1e-18); // low frequency: / factor
      else {
        const smooth = (32 / wavelen - 1) / (4 - 1);
        assert.ok(Math.abs(v5[i]! - ((1 - smooth) * plain[i]! / 8 + smooth * plain[i]!)) < 1e-15);
      }
    }
    // the tiny config exercises all three regimes
    const wl = [...plain].map((f) => (2 * Math.PI) / f);
    assert.ok(wl.some((w) => w < 8) && wl.some((w) => w > 32) && wl.some((w) => w >= 8 && w <= 32));
  });
});

describe('tiny checkpoints', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-oracle-'));
  after(() => fs.rmSync(root, { recursive: true, force: true }));
  const ids = [3, 17, 250, 42, 7, 299, 0, 128];
  const targets: Record<TinyFamily, string[]> = {
    llama: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    qwen2: ['q_proj', 'v_proj', 'down_proj'],
    gpt2: ['c_attn', 'c_proj', 'c_fc'],
  };

  for (const family of ['llama', 'qwen2', 'gpt2'] as const) {
    test(`${family}: runs, finite, non-trivial, LoRA changes logits`, () => {
      const dir = path.join(root, `${family}-base`);
      const { config } = writeTinyCheckpoint(dir, family, { seed: 7 });
      assert.deepEqual(readConfig(dir), config);
      const w = loadWeightsF32(dir);
      const logits = oracleForward(config, w, ids);
      assert.equal(logits.length, ids.length);
      assert.equal(logits[0]!.length, 300);
      assert.ok(allFinite(logits));
      // non-trivial: different positions predict different distributions, logits not tiny
      assert.ok(maxAbsDiff(logits[0]!, logits[5]!) > 0.1);
      assert.ok(Math.max(...logits[3]!.map(Math.abs)) > 0.5);

      const loraDir = path.join(root, `${family}-lora`);
      writeTinyLora(loraDir, family, { seed: 3, r: 4, alpha: 8, targetModules: targets[family], baseDir: dir });
      const adapterConfig = JSON.parse(fs.readFileSync(path.join(loraDir, 'adapter_config.json'), 'utf8'));
      assert.equal(adapterConfig.peft_type, 'LORA');
      assert.equal(adapterConfig.fan_in_fan_out, family === 'gpt2');
      const lora = loadOracleLora(loraDir);
      for (const m of Object.values(lora)) {
        assert.equal(m.scale, 2);
        assert.ok(m.A.some((x) => x !== 0) && m.B.some((x) => x !== 0));
      }
      const withLora = oracleForward(config, w, ids, lora);
      assert.ok(allFinite(withLora));
      const d = Math.max(...withLora.map((r, t) => maxAbsDiff(r, logits[t]!)));
      assert.ok(d > 1e-2, `LoRA changed logits by only ${d}`);
      // deterministic
      assert.deepEqual(loadWeightsF32(writeTinyCheckpointAgain(family, 7)), w);
    });
  }

  function writeTinyCheckpointAgain(family: TinyFamily, seed: number): string {
    const dir = path.join(root, `${family}-again-${seed}`);
    writeTinyCheckpoint(dir, family, { seed });
    return dir;
  }

  test('gpt2 LoRA shapes follow PEFT Conv1D handling: A [r,in], B [out,r]', () => {
    const dir = path.join(root, 'gpt2-shapes');
    writeTinyCheckpoint(dir, 'gpt2', { seed: 1 });
    const loraDir = path.join(root, 'gpt2-shapes-lora');
    writeTinyLora(loraDir, 'gpt2', { r: 4, alpha: 4, targetModules: ['c_attn', 'c_fc'], baseDir: dir });
    const t = loadSafetensorsF32(path.join(loraDir, 'adapter_model.safetensors'));
    assert.deepEqual(t.get('base_model.model.transformer.h.0.attn.c_attn.lora_A.weight')!.shape, [4, 64]);
    assert.deepEqual(t.get('base_model.model.transformer.h.0.attn.c_attn.lora_B.weight')!.shape, [192, 4]);
    assert.deepEqual(t.get('base_model.model.transformer.h.1.mlp.c_fc.lora_A.weight')!.shape, [4, 64]);
    assert.deepEqual(t.get('base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight')!.shape, [256, 4]);
    assert.equal(t.size, 8);
  });

  test('gpt2 Conv1D LoRA equals merging scale * (B A)^T into the [in,out] weight', () => {
    const dir = path.join(root, 'gpt2-merge');
    const { config } = writeTinyCheckpoint(dir, 'gpt2', { seed: 2 });
    const loraDir = path.join(root, 'gpt2-merge-lora');
    writeTinyLora(loraDir, 'gpt2', { seed: 5, r: 2, alpha: 3, targetModules: ['c_attn', 'c_proj'], baseDir: dir });
    const w = loadWeightsF32(dir);
    const lora = loadOracleLora(loraDir);
    const merged: OracleWeights = new Map(w);
    for (const [mod, { A, B, r, scale }] of Object.entries(lora)) {
      const W = w.get(`${mod}.weight`)!;
      const [inF, outF] = W.shape as [number, number];
      const data = Float32Array.from(W.data);
      for (let i = 0; i < inF; i++)
        for (let o = 0; o < outF; o++) {
          let acc = 0;
          for (let k = 0; k < r; k++) acc += B[o * r + k]! * A[k * inF + i]!;
          data[i * outF + o] = data[i * outF + o]! + scale * acc;
        }
      merged.set(`${mod}.weight`, { shape: W.shape, data });
    }
    const a = oracleForward(config, w, ids, lora);
    const b = oracleForward(config, merged, ids);
    for (let t = 0; t < ids.length; t++) assert.ok(maxAbsDiff(a[t]!, b[t]!) < 1e-4);
  });

  test('gpt2 accepts tensor names without the transformer. prefix', () => {
    const a = path.join(root, 'gpt2-prefixed');
    const b = path.join(root, 'gpt2-bare');
    const { config } = writeTinyCheckpoint(a, 'gpt2', { seed: 9 });
    writeTinyCheckpoint(b, 'gpt2', { seed: 9, bareGpt2Names: true });
    const wb = loadWeightsF32(b);
    assert.ok(wb.has('h.0.attn.c_attn.weight') && !wb.has('transformer.h.0.attn.c_attn.weight'));
    assert.deepEqual(oracleForward(config, wb, ids), oracleForward(config, loadWeightsF32(a), ids));
    // LoRA module keys are always transformer.-prefixed (PEFT wraps GPT2LMHeadModel)
    const loraDir = path.join(root, 'gpt2-bare-lora');
    writeTinyLora(loraDir, 'gpt2', { r: 2, alpha: 2, targetModules: ['c_attn'], baseDir: b });
    const lora = loadOracleLora(loraDir);
    assert.ok('transformer.h.0.attn.c_attn' in lora);
    assert.notDeepEqual(oracleForward(config, wb, ids, lora), oracleForward(config, wb, ids));
  });

  for (const family of ['llama', 'qwen2', 'gpt2'] as const) {
    test(`${family}: sharded and unsharded give identical weights and logits`, () => {
      const one = path.join(root, `${family}-one`);
      const two = path.join(root, `${family}-two`);
      const { config } = writeTinyCheckpoint(one, family, { seed: 11 });
      writeTinyCheckpoint(two, family, { seed: 11, sharded: true });
      assert.ok(!fs.existsSync(path.join(two, 'model.safetensors')));
      const index = JSON.parse(fs.readFileSync(path.join(two, 'model.safetensors.index.json'), 'utf8'));
      assert.deepEqual(new Set(Object.values(index.weight_map)), new Set(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']));
      const w1 = loadWeightsF32(one);
      const w2 = loadWeightsF32(two);
      let bytes = 0;
      for (const t of w1.values()) bytes += t.data.length * 4;
      assert.equal(index.metadata.total_size, bytes);
      assert.deepEqual(new Set(Object.keys(index.weight_map)), new Set(w1.keys()));
      assert.deepEqual(oracleForward(config, w2, ids), oracleForward(config, w1, ids));
    });
  }

  test('qwen2: q/k/v biases present, tied embeddings, no lm_head', () => {
    const dir = path.join(root, 'qwen2-layout');
    const { config } = writeTinyCheckpoint(dir, 'qwen2', { seed: 1 });
    const w = loadWeightsF32(dir);
    assert.equal(config.tie_word_embeddings, true);
    assert.ok(!w.has('lm_head.weight'));
    assert.deepEqual(w.get('model.layers.0.self_attn.q_proj.bias')!.shape, [64]);
    assert.deepEqual(w.get('model.layers.0.self_attn.k_proj.bias')!.shape, [32]);
    assert.ok(!w.has('model.layers.0.self_attn.o_proj.bias'));
  });

  test('transformers 4 and 5 style configs give identical logits (llama, default and llama3 rope)', () => {
    for (const llama3Rope of [false, true]) {
      const d4 = path.join(root, `llama-v4-${llama3Rope}`);
      const d5 = path.join(root, `llama-v5-${llama3Rope}`);
      const c4 = writeTinyCheckpoint(d4, 'llama', { seed: 4, transformersVersion: 4, llama3Rope }).config;
      const c5 = writeTinyCheckpoint(d5, 'llama', { seed: 4, transformersVersion: 5, llama3Rope }).config;
      assert.equal(c4.rope_theta, 10000);
      assert.equal(c4.rope_parameters, undefined);
      assert.equal(c5.rope_parameters.rope_theta, 10000);
      assert.equal(c5.rope_theta, undefined);
      assert.deepEqual(oracleForward(c4, loadWeightsF32(d4), ids), oracleForward(c5, loadWeightsF32(d5), ids));
    }
    // llama3 scaling actually changes something at these positions
    const c = readConfig(path.join(root, 'llama-v5-true'));
    const w = loadWeightsF32(path.join(root, 'llama-v5-true'));
    const plain = { ...c, rope_parameters: { rope_theta: 10000, rope_type: 'default' } };
    assert.notDeepEqual(oracleForward(c, w, ids), oracleForward(plain, w, ids));
  });

  for (const dtype of ['BF16', 'F16'] as const) {
    test(`${dtype} checkpoint loads and is close to the F32 one`, () => {
      for (const family of ['llama', 'gpt2'] as const) {
        const f32 = path.join(root, `${family}-f32-${dtype}`);
        const low = path.join(root, `${family}-${dtype}`);
        const { config } = writeTinyCheckpoint(f32, family, { seed: 5 });
        const c2 = writeTinyCheckpoint(low, family, { seed: 5, dtype, sharded: true }).config;
        assert.equal(c2.dtype, dtype === 'BF16' ? 'bfloat16' : 'float16');
        const header = fs.readFileSync(path.join(low, 'model-00001-of-00002.safetensors'));
        const n = Number(header.readBigUInt64LE(0));
        const entries = Object.entries<any>(JSON.parse(header.subarray(8, 8 + n).toString())).filter(([k]) => k !== '__metadata__');
        assert.ok(entries.every(([, e]) => e.dtype === dtype));
        const wLow = loadWeightsF32(low);
        const wF32 = loadWeightsF32(f32);
        const tol = dtype === 'BF16' ? 2 ** -8 : 2 ** -11;
        for (const [k, v] of wF32) {
          const lv = wLow.get(k)!;
          for (let i = 0; i < v.data.length; i++) assert.ok(Math.abs(lv.data[i]! - v.data[i]!) <= tol * Math.abs(v.data[i]!) + 1e-7, k);
        }
        const a = oracleForward(config, wF32, ids);
        const b = oracleForward(c2, wLow, ids);
        assert.ok(allFinite(b));
        const d = Math.max(...a.map((r, t) => maxAbsDiff(r, b[t]!)));
        assert.ok(d > 0 && d < 0.1, `${family} ${dtype}: max diff ${d}`);
      }
    });
  }

  test('rslora scale is alpha / sqrt(r)', () => {
    const dir = path.join(root, 'llama-rs');
    writeTinyCheckpoint(dir, 'llama', { seed: 1 });
    const loraDir = path.join(root, 'llama-rs-lora');
    writeTinyLora(loraDir, 'llama', { r: 4, alpha: 8, useRslora: true, targetModules: ['q_proj'], baseDir: dir });
    const lora: OracleLora = loadOracleLora(loraDir);
    assert.equal(Object.keys(lora).length, 2);
    for (const m of Object.values(lora)) assert.equal(m.scale, 4);
  });

  test('unknown target module is an error', () => {
    const dir = path.join(root, 'llama-err');
    writeTinyCheckpoint(dir, 'llama', { seed: 1 });
    assert.throws(() => writeTinyLora(path.join(root, 'llama-err-lora'), 'llama', { r: 2, alpha: 2, targetModules: ['c_attn'], baseDir: dir }), /not found/);
  });
});
