import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

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

export function tempDir(prefix = 'deltaserve-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
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
