/**
 * The engine checks both specification kinds (BitFit, LN tuning) share: on tiny Llama, Qwen2 and
 * GPT-2 checkpoints and both attention kernels, the real ONNX Runtime engine against the kind's
 * oracle (test/oracle/kinds/), alone, beside base and LoRA rows, stacked with a LoRA, through the
 * KV cache, and beside a poisoned slot. Each kind's test file calls describeKindAgainstOracle.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ParsedDelta } from '../../src/deltas/kind.js';
import { ModelRuntime, type RowSlots } from '../../src/engine/model-runtime.js';
import { maxAbsDiff, readDelta, tempDir, writeSlot } from '../helpers.js';
import { loadOracleLora, loadWeightsF32, readConfig, writeTinyCheckpoint, writeTinyLora, type TinyFamily } from '../oracle/checkpoints.js';
import { argmax, oracleForward, oracleGreedy, type OracleDelta, type OracleLora, type OracleWeights } from '../oracle/transformer.js';

export type Variant = 'full' | 'partial';

export interface KindUnderTest {
  kind: string;
  /** Writes an adapter of the kind for the checkpoint in baseDir: 'full' tunes every place the kind has, 'partial' a few. */
  write(dir: string, family: TinyFamily, baseDir: string, variant: Variant): void;
  oracle(dir: string, modelConfig: any, weights: OracleWeights): OracleDelta;
}

const FAMILIES: [TinyFamily, number][] = [['llama', 51], ['qwen2', 52], ['gpt2', 53]];
const LORA_TARGETS: Record<TinyFamily, string[]> = { llama: ['q_proj', 'v_proj', 'down_proj'], qwen2: ['q_proj', 'v_proj', 'down_proj'], gpt2: ['c_attn', 'c_fc'] };
const PROMPTS = [
  [1, 17, 42, 7, 250, 99, 3, 128],
  [1, 200, 11, 11, 290, 33, 71, 8],
  [5, 64, 64, 13, 2, 180, 77, 31],
  [9, 8, 7, 6, 5, 4, 3, 2],
];
const VOCAB = 300;
const NEW_TOKENS = 5;
/** Slots of the kind: the full delta, the partial one, and one for poison. */
const FULL = 0, PARTIAL = 1, SPARE = 2;

export function describeKindAgainstOracle(k: KindUnderTest): void {
  for (const [family, seed] of FAMILIES) for (const attention of ['matmul', 'group-query'] as const) {
    describe(`${k.kind} vs its oracle: ${family} (attention: ${attention})`, () => {
      let rt: ModelRuntime;
      let config: any;
      let weights: OracleWeights;
      let lora: OracleLora;
      const deltas = {} as Record<Variant, { parsed: ParsedDelta; oracle: OracleDelta }>;

      before(async () => {
        const root = tempDir(`deltaserve-${k.kind}-`);
        const modelDir = path.join(root, 'model');
        writeTinyCheckpoint(modelDir, family, { seed });
        writeTinyLora(path.join(root, 'lora'), family, { seed: 6, r: 4, alpha: 8, targetModules: LORA_TARGETS[family], baseDir: modelDir });
        config = readConfig(modelDir);
        weights = loadWeightsF32(modelDir);
        lora = loadOracleLora(path.join(root, 'lora'));
        rt = await ModelRuntime.create({ modelDir, cacheDir: path.join(root, 'cache'), device: 'cpu', maxRows: 4, maxContext: 32, deltaSlots: 3, maxRank: 8, threads: 1, attention });
        for (const variant of ['full', 'partial'] as const) {
          const dir = path.join(root, variant);
          k.write(dir, family, modelDir, variant);
          deltas[variant] = { parsed: readDelta(rt, dir, `${k.kind}-${variant}`), oracle: k.oracle(dir, config, weights) };
        }
        writeSlot(rt, FULL, deltas.full.parsed);
        writeSlot(rt, PARTIAL, deltas.partial.parsed);
        writeSlot(rt, 0, readDelta(rt, path.join(root, 'lora'), 'lora'));
      });
      after(() => rt?.release());

      const mine = (slot: number, extra: RowSlots = {}): RowSlots => ({ [k.kind]: slot, ...extra });
      const prefill = (tokens: number[][], slots: RowSlots[], firstRow = 0) => rt.forward({ firstRow, tokens, pastLengths: tokens.map(() => 0), slots, logits: 'all' });
      const rowOf = (logits: Float32Array, r: number) => logits.subarray(r * PROMPTS[0]!.length * VOCAB, (r + 1) * PROMPTS[0]!.length * VOCAB);
      const checkAgainst = (logits: Float32Array, expected: Float32Array[], what: string) => {
        expected.forEach((row, pos) => {
          const diff = maxAbsDiff(logits.subarray(pos * VOCAB, (pos + 1) * VOCAB), row);
          assert.ok(diff <= 1e-4, `${what} position ${pos}: max abs diff ${diff}`);
        });
      };

      it('prompt logits of a full and a partial delta match the oracle within 1e-4, and differ from the base', async () => {
        const base = oracleForward(config, weights, PROMPTS[0]!);
        for (const [variant, slot] of [['full', FULL], ['partial', PARTIAL]] as const) {
          const expected = oracleForward(config, weights, PROMPTS[0]!, undefined, [deltas[variant].oracle]);
          checkAgainst(await prefill([PROMPTS[0]!], [mine(slot)]), expected, variant);
          assert.ok(maxAbsDiff(expected.at(-1)!, base.at(-1)!) > 1e-2, `the ${variant} delta visibly changes the logits`);
        }
      });

      it('one pass of base, kind+LoRA, partial and LoRA rows: each equals its row alone (1e-5) and the oracle (1e-4); the base row is bit-identical', async () => {
        const slots = [{}, mine(FULL, { lora: 0 }), mine(PARTIAL), { lora: 0 }];
        const mixed = await prefill(PROMPTS, slots);
        const allBase = await prefill(PROMPTS, slots.map(() => ({})));
        assert.deepEqual(bits(rowOf(mixed, 0)), bits(rowOf(allBase, 0)), 'the base row is computed exactly as in a pass without deltas');
        const oracleDeltas = [[], [deltas.full.oracle], [deltas.partial.oracle], []];
        for (let r = 0; r < PROMPTS.length; r++) {
          const alone = await prefill([PROMPTS[r]!], [slots[r]!], r);
          const diff = maxAbsDiff(rowOf(mixed, r), alone);
          assert.ok(diff <= 1e-5, `row ${r}: ${diff} from the row alone`);
          checkAgainst(rowOf(mixed, r), oracleForward(config, weights, PROMPTS[r]!, r === 1 || r === 3 ? lora : undefined, oracleDeltas[r]!), `row ${r}`);
        }
      });

      it("a right-padded prefill's last-token logits (the final norm sees only those tokens) match the oracle within 1e-4", async () => {
        const tokens = PROMPTS.map((p, r) => p.slice(0, [8, 5, 7, 3][r]));
        const slots = [mine(PARTIAL), {}, mine(FULL, { lora: 0 }), mine(FULL)];
        const wanted = [[undefined, [deltas.partial.oracle]], [undefined, []], [lora, [deltas.full.oracle]], [undefined, [deltas.full.oracle]]] as const;
        const logits = await rt.forward({ firstRow: 0, tokens, pastLengths: [0, 0, 0, 0], slots, logits: 'last' });
        wanted.forEach(([l, d], r) => checkAgainst(logits.subarray(r * VOCAB, (r + 1) * VOCAB), [oracleForward(config, weights, tokens[r]!, l, [...d]).at(-1)!], `row ${r}`));
      });

      it(`greedy ${NEW_TOKENS}-token decode through the KV cache equals the oracle's (base, full, full+LoRA, partial rows)`, async () => {
        const slots = [{}, mine(FULL), mine(FULL, { lora: 0 }), mine(PARTIAL)];
        const wanted = [[undefined, []], [undefined, [deltas.full.oracle]], [lora, [deltas.full.oracle]], [undefined, [deltas.partial.oracle]]] as const;
        let logits = await rt.forward({ firstRow: 0, tokens: PROMPTS, pastLengths: [0, 0, 0, 0], slots, logits: 'last' });
        const generated: number[][] = [[], [], [], []];
        for (let step = 0; step < NEW_TOKENS; step++) {
          const next = generated.map((_, r) => argmax(logits.subarray(r * VOCAB, (r + 1) * VOCAB)));
          next.forEach((t, r) => generated[r]!.push(t));
          const past = PROMPTS[0]!.length + step;
          logits = await rt.forward({ firstRow: 0, tokens: next.map((t) => [t]), pastLengths: [past, past, past, past], slots, logits: 'last' });
        }
        wanted.forEach(([l, d], r) => assert.deepEqual(generated[r], oracleGreedy(config, weights, PROMPTS[r]!, NEW_TOKENS, l, [...d]), `row ${r}`));
      });

      it('a slot poisoned with NaN past validation changes no other row of the pass, and only its own', async () => {
        const slots = [{}, mine(FULL), mine(SPARE), mine(PARTIAL, { lora: 0 })];
        writeSlot(rt, SPARE, deltas.partial.parsed);
        const clean = await prefill(PROMPTS, slots);
        writeSlot(rt, SPARE, { ...deltas.full.parsed, tensors: new Map([...deltas.full.parsed.tensors].map(([n, t]) => [n, t.map(() => NaN)])) });
        const poisoned = await prefill(PROMPTS, slots);
        for (const r of [0, 1, 3]) assert.deepEqual(bits(rowOf(poisoned, r)), bits(rowOf(clean, r)), `row ${r}`);
        assert.ok(rowOf(poisoned, 2).some((v) => Number.isNaN(v)), 'the poisoned row itself does see its NaN');
      });
    });
  }
}

/** Bit patterns, so NaN and -0 compare exactly too. */
const bits = (x: Float32Array) => [...new Uint32Array(x.buffer, x.byteOffset, x.length)];
