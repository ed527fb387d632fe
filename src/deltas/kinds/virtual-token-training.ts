/**
 * What the trainable kinds whose deltas are virtual tokens share — prompt tuning
 * (prompt-tuning-training.ts), P-tuning (p-tuning-training.ts) and prefix tuning
 * (prefix-tuning-training.ts): the server's bound on their number, the saved tokens
 * (`prompt_embeddings` [n, width], as get_prompt_embedding_to_save leaves them), and the Linear
 * layers their encoders run to compute that tensor for save_pretrained.
 */
import { encodeSafetensors, parseSafetensors } from '../../model/safetensors.js';
import type { DeltaLimits } from '../kind.js';
import { TrainingOptionsError, type DeltaFileBytes } from '../training.js';
import { PROMPT_EMBEDDINGS } from './virtual-tokens.js';

/** Refuses num_virtual_tokens above the server's --max-virtual-tokens (a 400 naming the option). */
export function checkVirtualTokenCount(n: number, limits: DeltaLimits): void {
  if (n > limits.maxVirtualTokens) throw new TrainingOptionsError('num_virtual_tokens', `${n} exceeds the server's max virtual tokens ${limits.maxVirtualTokens} (--max-virtual-tokens)`);
}

/** adapter_model.safetensors holding the virtual tokens `data` [n, width] as PEFT saves them. */
export function encodeVirtualTokens(n: number, width: number, data: Float32Array): Uint8Array {
  return encodeSafetensors({ [PROMPT_EMBEDDINGS]: { dtype: 'F32', shape: [n, width], data } }, { format: 'pt' });
}

/**
 * The config and saved virtual tokens [n, width] of a stored delta a job continues from; a delta
 * of another PEFT type, or with tokens of another width, is refused.
 *
 * @example const { config, n, tokens } = readVirtualTokens(files, 'P_TUNING', arch.hiddenSize);
 */
export function readVirtualTokens(files: DeltaFileBytes, peftType: string, width: number): { config: Record<string, unknown>; n: number; tokens: Float32Array } {
  const config = JSON.parse(files.config) as Record<string, unknown>;
  if (config['peft_type'] !== peftType) throw new Error(`a ${peftType.toLowerCase()} job continues from a ${peftType} delta, not ${String(config['peft_type'])}`);
  const weights = parseSafetensors(files.weights, 'adapter_model.safetensors');
  const [n, saved] = weights.header.tensors.get(PROMPT_EMBEDDINGS)?.shape ?? [];
  if (n === undefined || saved !== width) throw new Error(`the delta's ${PROMPT_EMBEDDINGS} is not [n, ${width}]`);
  return { config, n, tokens: Float32Array.from(weights.view(PROMPT_EMBEDDINGS)) };
}

/**
 * One row through a Linear layer (weight [out, in], bias [out]) and `activation`, accumulated in
 * float64 and stored as float32, as an encoder's output for save_pretrained is computed.
 *
 * @example const hidden = linearRow(embeddingRow, w1, b1, Math.tanh);
 */
export function linearRow(x: Float32Array, weight: Float32Array, bias: Float32Array, activation: (v: number) => number = (v) => v): Float32Array {
  const inF = x.length;
  const y = new Float32Array(bias.length);
  for (let o = 0; o < y.length; o++) {
    let acc = bias[o]!;
    for (let j = 0; j < inF; j++) acc += weight[o * inF + j]! * x[j]!;
    y[o] = activation(acc);
  }
  return y;
}
