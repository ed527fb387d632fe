/**
 * Bottleneck adapters through the real ONNX Runtime engine, against the oracle written from the
 * `adapters` library (test/oracle/kinds/bottleneck.ts): prompt logits, rows of every kind in one
 * pass, greedy decoding through the KV cache, on llama, qwen2 and gpt2 with both attention
 * kernels; then many option sets side by side in one pass (each slot its own options).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ParsedDelta } from '../../src/deltas/kind.js';
import { ModelRuntime, type RowSlots } from '../../src/engine/model-runtime.js';
import { argmax } from '../../src/engine/sampler.js';
import { maxAbsDiff, readDelta, tempDir, writeSlot } from '../helpers.js';
import { loadOracleLora, loadWeightsF32, readConfig, writeTinyCheckpoint, writeTinyLora, type TinyFamily } from '../oracle/checkpoints.js';
import { oracleForward, oracleGreedy, type OracleDelta, type OracleLora, type OracleWeights } from '../oracle/transformer.js';
import { writeTinyBottleneck, type TinyBottleneckOptions } from '../oracle/kinds/bottleneck-checkpoint.js';
import { oracleBottleneck } from '../oracle/kinds/bottleneck.js';

const FAMILIES: { family: TinyFamily; seed: number; lora: string[] }[] = [
  { family: 'llama', seed: 11, lora: ['q_proj', 'v_proj', 'down_proj'] },
  { family: 'qwen2', seed: 21, lora: ['q_proj', 'v_proj', 'down_proj'] },
  { family: 'gpt2', seed: 31, lora: ['c_attn', 'c_fc'] },
];
const VOCAB = 300;
const PROMPTS = [
  [1, 17, 42, 7, 250, 99, 3, 128, 64, 5],
  [1, 200, 11, 11, 290, 33, 71, 8, 150, 42],
  [1, 5, 6, 7, 8, 9, 10, 11, 12, 13],
  [1, 299, 2, 298, 3, 297, 4, 296, 5, 295],
];
const NEW_TOKENS = 6;
const MAX_BOTTLENECK = 32;

interface Setup {
  rt: ModelRuntime;
  config: any;
  weights: OracleWeights;
  root: string;
  modelDir: string;
}

async function setUp(family: TinyFamily, seed: number, attention: 'matmul' | 'group-query', deltaSlots: number): Promise<Setup> {
  const root = tempDir('deltaserve-bottleneck-');
  const modelDir = path.join(root, 'model');
  writeTinyCheckpoint(modelDir, family, { seed });
  const rt = await ModelRuntime.create({ modelDir, cacheDir: path.join(root, 'cache'), device: 'cpu', maxRows: 4, maxContext: 32, deltaSlots, maxRank: 16, maxBottleneck: MAX_BOTTLENECK, threads: 1, attention });
  return { rt, config: readConfig(modelDir), weights: loadWeightsF32(modelDir), root, modelDir };
}

/** Writes an adapter, loads it into a bottleneck slot, and returns its oracle. */
function install(s: Setup, slot: number, label: string, options: Omit<TinyBottleneckOptions, 'baseDir'>): OracleDelta {
  const dir = path.join(s.root, `bn-${label.replace(/\W+/g, '-')}`);
  writeTinyBottleneck(dir, { baseDir: s.modelDir, ...options });
  const delta = readDelta(s.rt, dir, label);
  assert.deepEqual(delta.warnings, [], label);
  writeSlot(s.rt, slot, delta);
  return oracleBottleneck(dir, s.config);
}

function assertLogits(logits: Float32Array, expected: Float32Array[], what: string, tol = 1e-4): void {
  assert.equal(logits.length, expected.length * VOCAB);
  expected.forEach((row, pos) => {
    const diff = maxAbsDiff(logits.subarray(pos * VOCAB, (pos + 1) * VOCAB), row);
    assert.ok(diff <= tol, `${what} position ${pos}: max abs diff ${diff}`);
  });
}

const rowOf = (all: Float32Array, row: number) => all.subarray(row * PROMPTS[0]!.length * VOCAB, (row + 1) * PROMPTS[0]!.length * VOCAB);

for (const { family, seed, lora: loraTargets } of FAMILIES) for (const attention of ['matmul', 'group-query'] as const) {
  describe(`bottleneck adapters vs the adapters-library oracle: ${family} (attention: ${attention})`, () => {
    let s: Setup;
    let houlsby: OracleDelta;
    let lora: OracleLora;
    const ROWS: RowSlots[] = [{}, { lora: 0 }, { bottleneck: 1 }, { bottleneck: 1, lora: 0 }];

    before(async () => {
      s = await setUp(family, seed, attention, 2);
      houlsby = install(s, 1, 'houlsby', { preset: 'double_seq_bn', seed: 4 });
      const loraDir = path.join(s.root, 'lora');
      writeTinyLora(loraDir, family, { seed: 5, r: 8, alpha: 16, targetModules: loraTargets, baseDir: s.modelDir });
      writeSlot(s.rt, 0, readDelta(s.rt, loraDir, 'lora'));
      lora = loadOracleLora(loraDir);
    });
    after(async () => {
      await s?.rt.release();
      fs.rmSync(s.root, { recursive: true, force: true });
    });

    it('prompt logits match the oracle within 1e-4 (and differ from the base)', async () => {
      const logits = await s.rt.forward({ firstRow: 0, tokens: [PROMPTS[0]!], pastLengths: [0], slots: [{ bottleneck: 1 }], logits: 'all' });
      const expected = oracleForward(s.config, s.weights, PROMPTS[0]!, undefined, [houlsby]);
      assertLogits(logits, expected, 'houlsby');
      const base = oracleForward(s.config, s.weights, PROMPTS[0]!);
      assert.ok(maxAbsDiff(expected.at(-1)!, base.at(-1)!) > 1e-2, 'the adapter visibly changes the logits');
    });

    it('one pass of base, LoRA, bottleneck and bottleneck+LoRA rows: each as alone (1e-5) and as the oracle (1e-4)', async () => {
      const mixed = await s.rt.forward({ firstRow: 0, tokens: PROMPTS, pastLengths: [0, 0, 0, 0], slots: ROWS, logits: 'all' });
      for (let r = 0; r < 4; r++) {
        const alone = await s.rt.forward({ firstRow: r, tokens: [PROMPTS[r]!], pastLengths: [0], slots: [ROWS[r]!], logits: 'all' });
        const diff = maxAbsDiff(rowOf(mixed, r), alone);
        assert.ok(diff <= 1e-5, `row ${r} (${JSON.stringify(ROWS[r])}): max abs diff ${diff} from the row alone`);
        const deltas = ROWS[r]!['bottleneck'] === undefined ? [] : [houlsby];
        assertLogits(alone, oracleForward(s.config, s.weights, PROMPTS[r]!, ROWS[r]!['lora'] === undefined ? undefined : lora, deltas), `row ${r}`);
      }
    });

    it(`greedy ${NEW_TOKENS}-token decode through the KV cache equals the oracle's, beside base and LoRA rows`, async () => {
      let logits = await s.rt.forward({ firstRow: 0, tokens: PROMPTS, pastLengths: [0, 0, 0, 0], slots: ROWS, logits: 'last' });
      const generated: number[][] = [[], [], [], []];
      for (let step = 0; step < NEW_TOKENS; step++) {
        const next = [0, 1, 2, 3].map((r) => argmax(logits.subarray(r * VOCAB, (r + 1) * VOCAB)));
        next.forEach((t, r) => generated[r]!.push(t));
        if (step === NEW_TOKENS - 1) break;
        const past = PROMPTS[0]!.length + step;
        logits = await s.rt.forward({ firstRow: 0, tokens: next.map((t) => [t]), pastLengths: [past, past, past, past], slots: ROWS, logits: 'last' });
      }
      assert.deepEqual(generated[0], oracleGreedy(s.config, s.weights, PROMPTS[0]!, NEW_TOKENS), 'base row');
      assert.deepEqual(generated[2], oracleGreedy(s.config, s.weights, PROMPTS[2]!, NEW_TOKENS, undefined, [houlsby]), 'bottleneck row');
      assert.deepEqual(generated[3], oracleGreedy(s.config, s.weights, PROMPTS[3]!, NEW_TOKENS, lora, [houlsby]), 'bottleneck + LoRA row');
    });
  });
}

/** Option sets the kind serves; four at a time share one pass, each in its own slot. */
const VARIANTS: [string, Omit<TinyBottleneckOptions, 'baseDir'>][] = [
  ['pfeiffer', { preset: 'seq_bn' }],
  ['houlsby', { preset: 'double_seq_bn' }],
  ['parallel', { preset: 'par_bn', std: 0.1 }],
  ['scaled parallel + ln_after', { preset: 'scaled_par_bn', config: { ln_after: true }, std: 0.1 }],
  ['ln_before + ln_after + adapter residual first + channel scaling + per-layer widths', { config: { mh_adapter: true, ln_before: true, ln_after: true, adapter_residual_before_ln: true, residual_before_ln: false, non_linearity: 'gelu', scaling: 'channel', reduction_factor: { '0': 8, default: 16 } } }],
  ['no original_ln_before, residual after it, leave_out', { preset: 'double_seq_bn', config: { original_ln_before: false, residual_before_ln: false, non_linearity: 'ReLU', leave_out: [0], scaling: 0.5 } }],
  ['original_ln_after false + ln_after + tanh', { preset: 'double_seq_bn', config: { original_ln_after: false, ln_after: true, non_linearity: 'tanh' } }],
  ['a file without version ("gelu" is gelu_new)', { config: { non_linearity: 'gelu' }, version: null }],
  ['preset name, keys without the model prefix', { preset: 'double_seq_bn', presetName: true, bareKeys: true }],
  ...['gelu_python', 'gelu_fast', 'gelu_pytorch_tanh', 'quick_gelu', 'sigmoid', 'leakyrelu', 'linear', 'silu'].map((act): [string, Omit<TinyBottleneckOptions, 'baseDir'>] => [act, { config: { non_linearity: act, mh_adapter: true } }]),
];

for (const { family, seed } of FAMILIES) {
  describe(`bottleneck options, four slots per pass: ${family}`, () => {
    let s: Setup;
    // qwen2's hooked adapter layers refuse original_ln_after=False (see the kind's unit tests).
    const variants = VARIANTS.filter(([label]) => family !== 'qwen2' || !label.startsWith('original_ln_after false'));
    before(async () => (s = await setUp(family, seed, 'matmul', 4)));
    after(async () => {
      await s?.rt.release();
      fs.rmSync(s.root, { recursive: true, force: true });
    });

    for (let first = 0; first < variants.length; first += 4) {
      const group = variants.slice(first, first + 4);
      it(group.map(([label]) => label).join('; '), async () => {
        const oracles = group.map(([label, options], slot) => install(s, slot, label, { seed: 40 + first + slot, ...options }));
        const rows = group.map((_, r) => PROMPTS[r]!);
        const logits = await s.rt.forward({ firstRow: 0, tokens: rows, pastLengths: rows.map(() => 0), slots: group.map((_, slot) => ({ bottleneck: slot })), logits: 'all' });
        group.forEach(([label], r) => {
          const expected = oracleForward(s.config, s.weights, rows[r]!, undefined, [oracles[r]!]);
          assertLogits(rowOf(logits, r), expected, label);
          const base = oracleForward(s.config, s.weights, rows[r]!);
          assert.ok(maxAbsDiff(expected.at(-1)!, base.at(-1)!) > 1e-3, `${label}: the adapter visibly changes the logits`);
        });
      });
    }
  });
}

describe('a poisoned bottleneck slot beside normal rows', () => {
  let s: Setup;
  let benign: ParsedDelta;
  before(async () => {
    s = await setUp('llama', 11, 'matmul', 3);
    install(s, 0, 'pfeiffer', { preset: 'seq_bn' });
    const dir = path.join(s.root, 'houlsby');
    writeTinyBottleneck(dir, { baseDir: s.modelDir, preset: 'double_seq_bn', config: { ln_after: true } });
    benign = readDelta(s.rt, dir, 'houlsby');
    const loraDir = path.join(s.root, 'lora');
    writeTinyLora(loraDir, 'llama', { seed: 5, r: 8, alpha: 16, targetModules: ['q_proj', 'down_proj'], baseDir: s.modelDir });
    writeSlot(s.rt, 1, readDelta(s.rt, loraDir, 'lora'));
  });
  after(async () => {
    await s?.rt.release();
    fs.rmSync(s.root, { recursive: true, force: true });
  });

  /** A prefill and three shared decode passes of four rows; row 2 uses bottleneck slot 2. Returns the bits of rows 0, 1, 3, and whether row 2 stayed finite. */
  async function passes(slot2: ParsedDelta): Promise<{ others: number[][]; finite: boolean }> {
    writeSlot(s.rt, 2, slot2);
    // The scheduler clears a cache row before reusing it (a poisoned run leaves NaN keys/values behind).
    for (let row = 0; row < 4; row++) s.rt.cache.clearRow(row);
    const slots: RowSlots[] = [{}, { bottleneck: 0 }, { bottleneck: 2 }, { bottleneck: 0, lora: 1 }];
    const out: number[][] = [];
    let finite = true;
    let logits = await s.rt.forward({ firstRow: 0, tokens: PROMPTS, pastLengths: [0, 0, 0, 0], slots, logits: 'last' });
    for (let step = 0; step < 4; step++) {
      for (const r of [0, 1, 3]) out.push([...new Uint32Array(logits.slice(r * VOCAB, (r + 1) * VOCAB).buffer)]);
      finite &&= logits.subarray(2 * VOCAB, 3 * VOCAB).every(Number.isFinite);
      const next = [0, 1, 2, 3].map((r) => (r === 2 ? 7 + step : argmax(logits.subarray(r * VOCAB, (r + 1) * VOCAB))));
      const past = PROMPTS[0]!.length + step;
      logits = await s.rt.forward({ firstRow: 0, tokens: next.map((t) => [t]), pastLengths: [past, past, past, past], slots, logits: 'last' });
    }
    return { others: out, finite };
  }

  const poisons: [string, (name: string, t: Float32Array) => void][] = [
    ['NaN up-projection', (name, t) => name.endsWith('.up') && t.fill(NaN, 0, 9)],
    ['infinite down-projection', (name, t) => name.endsWith('.down') && t.fill(Infinity, 2, 5)],
    ['huge values everywhere', (name, t) => !name.endsWith('.on') && name !== 'bottleneck.options' && t.fill(1e30)],
    ['NaN options and scale', (name, t) => (name === 'bottleneck.options' || name.endsWith('.vectors')) && t.fill(NaN)],
  ];
  for (const [label, poison] of poisons) {
    it(`${label}: the other rows are bit-identical to a pass beside a well-behaved adapter`, async () => {
      const want = await passes(benign);
      const tensors = new Map([...benign.tensors].map(([name, t]) => {
        const copy = Float32Array.from(t);
        poison(name, copy);
        return [name, copy] as const;
      }));
      const got = await passes({ ...benign, tensors });
      assert.ok(want.finite && !got.finite, 'the poisoned row itself goes non-finite');
      assert.deepEqual(got.others, want.others);
    });
  }
});
