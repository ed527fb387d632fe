/**
 * A synthetic model: a small random Llama with a byte-level tokenizer in ordinary Hugging Face
 * format, generated from code, byte-identical on every machine. Output is gibberish, but every
 * code path (tokenizer, chat template, checkpoint loading, graph lowering, deltas) runs exactly as
 * it does for a real checkpoint, so tests use it where a model's shape matters and its knowledge
 * does not. (The server's default is the pretrained src/model/default-model.ts.)
 */
import fs from 'node:fs';
import path from 'node:path';
import { byteLevelBpeTokenizerJson, chatMlTokenizerConfigJson } from './byte-level-bpe.js';
import { initialTensor } from './initial-weights.js';
import { generationConfig, llamaConfig } from './llama-config.js';
import { encodeSafetensors } from './safetensors.js';

export const EMBEDDED_MODEL_NAME = 'deltaserve-embedded-llama';

/** Directory name under the cache; bump the version whenever any written byte changes. */
export const EMBEDDED_MODEL_DIRNAME = 'embedded-llama-v1';

const SEED = 20240601;
const INIT_STD = 0.02;

/** Added tokens follow the 256 byte tokens; ChatML needs im_start / im_end. */
const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const;
const ENDOFTEXT_ID = 256;
const IM_END_ID = 258;
const IDS = { endOfText: ENDOFTEXT_ID, imEnd: IM_END_ID };

const SHAPE = {
  hidden: 256,
  intermediate: 688,
  layers: 4,
  heads: 8,
  kvHeads: 4,
  headDim: 32,
  // 259 tokens rounded up to a multiple of 128, as real checkpoints pad for matmul tiling.
  vocab: 384,
} as const;

/**
 * GPT-2's bytes_to_unicode: byte values in vocabulary order, each with the printable character
 * the ByteLevel pre-tokenizer maps it to. Printable bytes map to themselves and come first;
 * the rest map to U+0100 onwards.
 *
 * @example
 * byteLevelAlphabet()[0]; // { byte: 33, symbol: '!' }
 */
export function byteLevelAlphabet(): { byte: number; symbol: string }[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const alphabet: { byte: number; symbol: string }[] = [];
  for (let b = 0; b < 256; b++) if (printable(b)) alphabet.push({ byte: b, symbol: String.fromCharCode(b) });
  let next = 256;
  for (let b = 0; b < 256; b++) if (!printable(b)) alphabet.push({ byte: b, symbol: String.fromCharCode(next++) });
  return alphabet;
}

function tokenizerJson(): object {
  const vocab = [...byteLevelAlphabet().map(({ symbol }) => symbol), ...SPECIAL_TOKENS];
  const specialIds = SPECIAL_TOKENS.map((_, i) => ENDOFTEXT_ID + i);
  // No merges: every byte is its own token, which needs no training data and covers all UTF-8.
  return byteLevelBpeTokenizerJson({ vocab, merges: [], specialIds }, { ignoreMerges: true });
}

function tokenizerConfigJson(): object {
  return chatMlTokenizerConfigJson(2048);
}

function configJson(): object {
  return llamaConfig(SHAPE, SHAPE.vocab, IDS, 2048);
}

function generationConfigJson(): object {
  return generationConfig(IDS);
}

/** Every weight's [out, in] shape (or [n] for norms), in HF Llama naming. */
function tensorShapes(): Map<string, number[]> {
  const { hidden, intermediate, layers, heads, kvHeads, headDim, vocab } = SHAPE;
  const shapes = new Map<string, number[]>([['model.embed_tokens.weight', [vocab, hidden]]]);
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}`;
    shapes.set(`${p}.self_attn.q_proj.weight`, [heads * headDim, hidden]);
    shapes.set(`${p}.self_attn.k_proj.weight`, [kvHeads * headDim, hidden]);
    shapes.set(`${p}.self_attn.v_proj.weight`, [kvHeads * headDim, hidden]);
    shapes.set(`${p}.self_attn.o_proj.weight`, [hidden, heads * headDim]);
    shapes.set(`${p}.mlp.gate_proj.weight`, [intermediate, hidden]);
    shapes.set(`${p}.mlp.up_proj.weight`, [intermediate, hidden]);
    shapes.set(`${p}.mlp.down_proj.weight`, [hidden, intermediate]);
    shapes.set(`${p}.input_layernorm.weight`, [hidden]);
    shapes.set(`${p}.post_attention_layernorm.weight`, [hidden]);
  }
  // No lm_head.weight: tie_word_embeddings reuses the embedding.
  shapes.set('model.norm.weight', [hidden]);
  return shapes;
}

/** As a freshly initialised HF model: RMSNorm weights 1, every matrix N(0, 0.02²). */
function initialWeights(name: string, shape: number[]): Float32Array {
  return initialTensor(name, shape, name.endsWith('norm.weight') ? 'norm_weight' : 'matrix', SEED, INIT_STD);
}

function weightsFile(): Uint8Array {
  const tensors: Parameters<typeof encodeSafetensors>[0] = {};
  for (const [name, shape] of tensorShapes()) tensors[name] = { dtype: 'F32', shape, data: initialWeights(name, shape) };
  return encodeSafetensors(tensors, { format: 'pt' });
}

function jsonText(value: object): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/**
 * Writes the embedded model's Hugging Face directory (config.json, generation_config.json,
 * tokenizer.json, tokenizer_config.json, model.safetensors); the bytes are the same every time.
 *
 * @example
 * writeEmbeddedModel('/tmp/embedded');
 * openCheckpoint('/tmp/embedded').arch.numLayers; // 4
 */
export function writeEmbeddedModel(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const files: [string, string | Uint8Array][] = [
    ['config.json', jsonText(configJson())],
    ['generation_config.json', jsonText(generationConfigJson())],
    ['tokenizer.json', jsonText(tokenizerJson())],
    ['tokenizer_config.json', jsonText(tokenizerConfigJson())],
    ['model.safetensors', weightsFile()],
  ];
  for (const [name, content] of files) fs.writeFileSync(path.join(dir, name), content);
}

/**
 * The embedded model's directory under `cacheDir`, written on first use. It is built in a
 * temporary sibling and renamed into place, so a crash or a concurrent server never leaves a
 * half-written model behind.
 *
 * @example
 * const dir = ensureEmbeddedModel('.cache'); // '.cache/embedded-llama-v1'
 */
export function ensureEmbeddedModel(cacheDir: string): string {
  const target = path.join(cacheDir, EMBEDDED_MODEL_DIRNAME);
  if (fs.existsSync(target)) return target;
  fs.mkdirSync(cacheDir, { recursive: true });
  const temp = fs.mkdtempSync(path.join(cacheDir, `.${EMBEDDED_MODEL_DIRNAME}.tmp-`));
  try {
    writeEmbeddedModel(temp);
    fs.renameSync(temp, target);
  } catch (err) {
    fs.rmSync(temp, { recursive: true, force: true });
    // Another process finished first: its copy is identical, so use it.
    if (!fs.existsSync(target)) throw err;
  }
  return target;
}
