import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { ParsedDelta } from '../src/deltas/kind.js';
import { readDeltaDirectory } from '../src/deltas/parse.js';
import { deltaLimits, type ModelRuntime, type RowSlots } from '../src/engine/model-runtime.js';
import { argmax } from '../src/engine/sampler.js';
import { readCheckpointWeight } from '../src/model/weight-data.js';

export const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'hf-tiny-llama');

export interface Reference {
  input_ids: number[][];
  tokenizer_samples: { text: string; ids: number[] }[];
  chat_template_render: { messages: { role: string; content: string }[]; add_generation_prompt: boolean; text: string };
  base: { logits: number[][][]; greedy_12: number[][] };
  lora_all_r8: { logits: number[][][]; greedy_12: number[][] };
}

export function loadReference(): Reference {
  return JSON.parse(fs.readFileSync(path.join(FIXTURE, 'reference.json'), 'utf8'));
}

const made: string[] = [];
// Each test file runs in its own process: whatever it left in the temp directory goes when it exits.
process.on('exit', () => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

/** A fresh directory under the system temp directory, removed when the test process exits. */
export function tempDir(prefix = 'deltaserve-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}

/** The JSON log lines (pino) a server writes, for tests that read them. */
export class LogLines extends Writable {
  readonly lines: any[] = []; // eslint-disable-line @typescript-eslint/no-explicit-any
  override _write(chunk: Buffer, _encoding: string, done: () => void): void {
    for (const line of chunk.toString().split('\n').filter(Boolean)) this.lines.push(JSON.parse(line));
    done();
  }
}

/** log_softmax in float64. */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(logits as ArrayLike<number>, (v) => v - lse);
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

/** An adapter directory validated for a runtime's backbone and limits (with its frozen weights, as the loader thread has them). */
export function readDelta(rt: ModelRuntime, dir: string, name = path.basename(dir)): ParsedDelta {
  return readDeltaDirectory(dir, name, rt.arch, deltaLimits(rt.options), (weight) => readCheckpointWeight(rt.checkpoint, weight));
}

/** Puts a delta into a slot of its kind, as the residency manager would. */
export function writeSlot(rt: ModelRuntime, slot: number, delta: ParsedDelta): void {
  rt.stacks.get(delta.kind)!.write(slot, delta);
}

/** Rows' LoRA slots as forward() takes them: -1 is a row without a delta. */
export function loraSlots(slots: number[]): RowSlots[] {
  return slots.map((s): RowSlots => (s < 0 ? {} : { lora: s }));
}

/** Greedy continuations of equal-length rows (all from position 0, one LoRA slot each, -1 none) straight through the runtime. */
export async function greedyRows(rt: ModelRuntime, rows: number[][], lora: number[], steps: number): Promise<number[][]> {
  const slots = loraSlots(lora);
  const vocab = rt.arch.vocabSize;
  const length = rows[0]!.length;
  let logits = await rt.forward({ firstRow: 0, tokens: rows, pastLengths: rows.map(() => 0), slots, logits: 'last' });
  const generated: number[][] = rows.map(() => []);
  for (let step = 0; step < steps; step++) {
    const next = rows.map((_, r) => argmax(logits.subarray(r * vocab, (r + 1) * vocab)));
    next.forEach((t, r) => generated[r]!.push(t));
    logits = await rt.forward({ firstRow: 0, tokens: next.map((t) => [t]), pastLengths: rows.map(() => length + step), slots, logits: 'last' });
  }
  return generated;
}
