import { GraphBuilder } from '../graph/builder.js';
import { inlineTensor, type Graph } from '../graph/ir.js';
import type { AttrValue } from '../graph/ir.js';
import type { ArchitectureSpec, NormSpec } from './architecture.js';
import type { DeltaLowering, HookContext } from './delta-hooks.js';
import type { Checkpoint } from './checkpoint.js';
import { ropeTables } from './rope.js';
import { decoderForward, type BlockBackend } from './transformer.js';
import { frozenWeights } from './weight-data.js';

/**
 * Lowers an architecture to the inference graph: the shared forward (model/transformer.ts) over
 * `batch` rows of `seq` new tokens each, with this file's backend: fused ORT ops, attention over a
 * KV cache, dynamic batch and sequence dims, and the delta kinds' per-row hooks.
 *
 * Graph interface (names are the engine's contract, see engine/feeds.ts):
 *   input_ids, position_ids  int64 [batch, seq]
 *   seqlens_k                int32 [batch]   total length - 1 per row (only with attention 'group-query')
 *   total_sequence_length    int32 []        max total length in the batch (only with attention 'group-query')
 *   logits_index             int64 [n]       flattened token positions whose logits are returned
 *   past_key.L/past_value.L  f32 [batch, kv_heads, max_cache, head_dim]  zero-copy views of the engine's cache
 * Outputs: logits [n, vocab], and new_key.L/new_value.L [batch, seq, kv_heads*head_dim] (after rotary),
 * which the engine writes into its cache. Only these small tensors leave the graph: onnxruntime-node
 * copies every output into a fresh JS array, even a preallocated one, so a graph that returned the
 * whole cache would copy it on every step. (With `kvCache: 'device'` the cache is instead a whole
 * input and output that stays in GPU memory: cache_rows, cache_writes, cache_key.L/cache_value.L
 * and cache_visible in, cache_key_out.L/cache_value_out.L out; see InferenceGraphOptions.)
 * Each delta kind hooked in adds its own inputs (its slot stacks and per-token slot indices) and
 * its math at the hook points; they are documented in the kind's file (src/deltas/kinds/*.ts, e.g.
 * lora.ts: lora_gather, lora_scatter, lora_A.<module>, lora_B.<module>).
 */
export interface InferenceGraphOptions {
  /** Maps a weight name to the initializer file location the session will see. */
  weightFile: (file: string) => string;
  /** Cache length every row's KV buffer has (positions beyond it cannot be attended). */
  maxCacheLength: number;
  /**
   * How attention reads the KV cache:
   *   'group-query': ORT's fused GroupQueryAttention (GPU providers). Its present output is a
   *     separate buffer unless it aliases the past input, which onnxruntime-node cannot arrange
   *     (outputs are always copied into fresh JS arrays), so on CPU every step clears and copies
   *     the whole cache of every row: at batch 8, half the attention time.
   *   'matmul': scores against the cache and against this pass's own keys, masked, one softmax
   *     over both, then the two weighted sums. Only reads the cache; the CPU default.
   */
  attention: AttentionKernel;
  /**
   * Where the KV cache lives:
   *   'host' (default): the engine's JS buffers, fed as past_key.L/past_value.L views of the
   *     pass's rows; the graph returns the new keys/values (new_key.L/new_value.L).
   *   'device' (GPU providers, attention 'group-query'): the whole cache is an input,
   *     cache_key.L/cache_value.L [cache_rows, max_cache, kv_heads, head_dim], fed as the GPU
   *     tensors the previous pass returned; the graph gathers the pass's rows (cache_rows) as
   *     the past, scatters the new keys/values in at (row, position) (cache_writes), and returns
   *     the updated cache as cache_key_out.L/cache_value_out.L, which stay on the device.
   */
  kvCache?: 'host' | 'device';
  /** The delta kinds' graph hooks, in the order they run (see model/delta-hooks.ts). */
  deltas?: readonly DeltaLowering[];
}

export type AttentionKernel = 'group-query' | 'matmul';

export const GRAPH_INPUTS = {
  inputIds: 'input_ids',
  positionIds: 'position_ids',
  seqlensK: 'seqlens_k',
  totalSequenceLength: 'total_sequence_length',
  logitsIndex: 'logits_index',
  cacheRows: 'cache_rows',
  cacheWrites: 'cache_writes',
  cacheVisible: 'cache_visible',
} as const;

export const pastKey = (layer: number) => `past_key.${layer}`;
export const pastValue = (layer: number) => `past_value.${layer}`;
export const newKey = (layer: number) => `new_key.${layer}`;
export const newValue = (layer: number) => `new_value.${layer}`;
export const cacheKey = (layer: number) => `cache_key.${layer}`;
export const cacheValue = (layer: number) => `cache_value.${layer}`;
export const cacheKeyOut = (layer: number) => `cache_key_out.${layer}`;
export const cacheValueOut = (layer: number) => `cache_value_out.${layer}`;

/**
 * The inference graph for a checkpoint: logits of the `logits_index` tokens and this pass's keys
 * and values (see the module doc for its inputs and outputs).
 *
 * @example const graph = lowerInferenceGraph(ckpt, { weightFile: (f) => path.basename(f), maxCacheLength: 512, attention: 'matmul' });
 */
export function lowerInferenceGraph(ckpt: Checkpoint, options: InferenceGraphOptions): Graph {
  const b = new GraphBuilder('deltaserve_inference');
  const backend = new InferenceBackend(b, ckpt, options);
  const logits = decoderForward(backend, options.deltas ?? [], hookContext(b, ckpt.arch, backend.weight));
  b.output(logits, 'logits', 'float32', ['n_logits', ckpt.arch.vocabSize]);
  return b.build();
}

/** The graph's own inputs, declared before anything else. */
interface PassInputs {
  ids: string;
  positions: string;
  seqlens: string;
  total: string;
  logitsIndex: string;
}

/** The inference half of the shared block: fused norms and GELU, rotary and attention kernels over the KV cache. */
class InferenceBackend implements BlockBackend {
  private readonly arch: ArchitectureSpec;
  /** A frozen weight as a float32 value (see frozenWeights). */
  readonly weight: (name: string) => string;
  private readonly io: PassInputs;
  private rope?: { cos: string; sin: string };

  constructor(private readonly b: GraphBuilder, ckpt: Checkpoint, private readonly options: InferenceGraphOptions) {
    this.arch = ckpt.arch;
    this.weight = frozenWeights(ckpt, options.weightFile, { initializer: (name, data) => b.initializer(name, data), castToFloat32: (value) => b.op1('Cast', [value], { to: 1 }) });
    const I = GRAPH_INPUTS;
    const groupQuery = options.attention === 'group-query';
    this.io = {
      ids: b.input(I.inputIds, 'int64', ['batch', 'seq']),
      positions: b.input(I.positionIds, 'int64', ['batch', 'seq']),
      seqlens: groupQuery ? b.input(I.seqlensK, 'int32', ['batch']) : '',
      total: groupQuery ? b.input(I.totalSequenceLength, 'int32', []) : '',
      logitsIndex: b.input(I.logitsIndex, 'int64', ['n_logits']),
    };
  }

  op(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}): string {
    return this.b.op1(op, inputs, attrs);
  }

  tokenEmbeddings(): string {
    const flat = this.flat();
    return this.b.op1('Reshape', [this.b.op1('Gather', [this.weight(this.arch.embedTokens), this.io.ids]), flat]); // [T, H]
  }

  positionEmbeddings(weight: string): string {
    return this.b.op1('Reshape', [this.b.op1('Gather', [this.weight(weight), this.io.positions]), this.flat()]); // [T, H]
  }

  /** The rotary cos/sin caches [max_cache, D/2] (RotaryEmbedding picks rows by position_ids). */
  startBlocks(): void {
    const { arch, b } = this;
    if (arch.positions.kind !== 'rope') return;
    const length = Math.max(this.options.maxCacheLength, 1);
    const { cos, sin } = ropeTables(arch.positions.invFreq, length, arch.positions.attentionScaling);
    const dims = [length, arch.headDim / 2];
    this.rope = { cos: b.initializer('rope_cos', inlineTensor('float32', dims, cos)), sin: b.initializer('rope_sin', inlineTensor('float32', dims, sin)) };
  }

  norm(spec: NormSpec, x: string): string {
    const eps = { float: spec.eps };
    if (spec.kind === 'rms') return this.b.op1('SimplifiedLayerNormalization', [x, this.weight(spec.weight)], { axis: -1, epsilon: eps });
    return this.b.op1('LayerNormalization', [x, this.weight(spec.weight), this.weight(spec.bias!)], { axis: -1, epsilon: eps });
  }

  /** The fused norm with a ones weight (and zeros bias). */
  normalized(spec: NormSpec, x: string): string {
    const { b } = this;
    const H = this.arch.hiddenSize;
    const eps = { float: spec.eps };
    const ones = b.constant('float32', [H], Array<number>(H).fill(1));
    if (spec.kind === 'rms') return b.op1('SimplifiedLayerNormalization', [x, ones], { axis: -1, epsilon: eps });
    return b.op1('LayerNormalization', [x, ones, b.constant('float32', [H], Array<number>(H).fill(0))], { axis: -1, epsilon: eps });
  }

  splitColumns(x: string, widths: number[]): string[] {
    return this.b.op('Split', [x, this.b.constant('int64', [widths.length], widths)], { axis: 1 }, { outputs: widths.length });
  }

  geluTanh(x: string): string {
    return this.b.op1('FastGelu', [x], {}, { domain: 'com.microsoft' });
  }

  /** Only the `logits_index` tokens go through the final norm and the LM head. */
  outputRows(hidden: string): { hidden: string; tokens: string } {
    return { hidden: this.b.op1('Gather', [hidden, this.io.logitsIndex], { axis: 0 }), tokens: this.io.logitsIndex }; // [n, H]
  }

  /** Rotary positions and attention over the cache; also returns this pass's keys/values as outputs. */
  attention(layer: number, q: string, k: string, v: string): string {
    const { b, arch } = this;
    const { positions } = this.io;
    const batched = (t: string, width: number) => b.op1('Reshape', [t, this.batchShape(positions, width)]);
    let q3 = batched(q, arch.numHeads * arch.headDim); // [B, S, Hq*D]
    let k3 = batched(k, arch.numKvHeads * arch.headDim); // [B, S, Hkv*D]
    const v3 = batched(v, arch.numKvHeads * arch.headDim);
    if (this.rope) {
      const { cos, sin } = this.rope;
      q3 = b.op1('RotaryEmbedding', [q3, positions, cos, sin], { interleaved: 0 }, { domain: 'com.microsoft' });
      k3 = b.op1('RotaryEmbedding', [k3, positions, cos, sin], { interleaved: 0 }, { domain: 'com.microsoft' });
    }
    const past = this.options.kvCache === 'device' ? this.deviceCache(layer, k3, v3) : this.hostCache(layer, k3, v3);
    if (this.options.attention === 'matmul') return this.matmulAttention(q3, k3, v3, past);
    const [attn] = b.op(
      'GroupQueryAttention',
      [q3, k3, v3, past.key, past.value, this.io.seqlens, this.io.total],
      { num_heads: arch.numHeads, kv_num_heads: arch.numKvHeads },
      { domain: 'com.microsoft', outputs: 3 },
    );
    return b.op1('Reshape', [attn!, b.constant('int64', [2], [-1, arch.numHeads * arch.headDim])]);
  }

  private flat(): string {
    return this.b.constant('int64', [2], [-1, this.arch.hiddenSize]);
  }

  /** past_* views of the engine's cache rows as inputs; this pass's keys/values as outputs. */
  private hostCache(layer: number, k3: string, v3: string): { key: string; value: string } {
    const { b, arch } = this;
    const cacheDims = ['batch', arch.numKvHeads, 'max_cache', arch.headDim];
    const kvWidth = arch.numKvHeads * arch.headDim;
    b.output(k3, newKey(layer), 'float32', ['batch', 'seq', kvWidth]);
    b.output(v3, newValue(layer), 'float32', ['batch', 'seq', kvWidth]);
    return { key: b.input(pastKey(layer), 'float32', cacheDims), value: b.input(pastValue(layer), 'float32', cacheDims) };
  }

  /** The whole cache in and out (see InferenceGraphOptions.kvCache); the past is the pass's rows before this pass's writes. */
  private deviceCache(layer: number, k3: string, v3: string): { key: string; value: string } {
    const { b, arch } = this;
    const rows = this.deviceCacheRows ??= b.input(GRAPH_INPUTS.cacheRows, 'int64', ['batch']);
    const writes = this.deviceCacheWrites ??= b.input(GRAPH_INPUTS.cacheWrites, 'int64', ['tokens', 2]);
    const dims = ['cache_rows', 'max_cache', arch.numKvHeads, arch.headDim];
    const perToken = b.constant('int64', [3], [-1, arch.numKvHeads, arch.headDim]);
    const zero = b.constant('float32', [], [0]);
    const one = (input: string, output: string, fresh: string): string => {
      const cache = b.input(input, 'float32', dims);
      b.output(b.op1('ScatterND', [cache, writes, b.op1('Reshape', [fresh, perToken])]), output, 'float32', dims);
      // A physical row keeps whatever its earlier occupants wrote past the current one's length;
      // only the positions before that length are selected, so stale values are never read.
      // (The mask is an input: computing it in the graph put int64 Range/Less on the CPU.)
      const visible = this.deviceVisible ??= b.op1('Unsqueeze', [b.input(GRAPH_INPUTS.cacheVisible, 'bool', ['batch', 'max_cache']), b.constant('int64', [2], [1, 3])]); // [B, 1, C, 1]
      const past = b.op1('Transpose', [b.op1('Gather', [cache, rows], { axis: 0 })], { perm: [0, 2, 1, 3] }); // [B, Hkv, C, D]
      return b.op1('Where', [visible, past, zero]);
    };
    return { key: one(cacheKey(layer), cacheKeyOut(layer), k3), value: one(cacheValue(layer), cacheValueOut(layer), v3) };
  }

  private deviceCacheRows?: string;
  private deviceCacheWrites?: string;
  private deviceVisible?: string;

  /**
   * Attention that only reads the cache. Query heads are grouped by the KV head they share, as
   * [batch, kv_heads, group*seq, head_dim] (row g*seq + s), so each KV head is one batched matmul.
   * Cache position j is visible to a row's new tokens when j < the row's past length (its first
   * position id); this pass's own key s' is visible to query s when s' <= s. Padding tokens (in a
   * first prefill) only ever follow a row's real tokens, so no real query sees them.
   */
  private matmulAttention(q: string, k: string, v: string, past: { key: string; value: string }): string {
    const { b, arch } = this;
    const group = arch.numHeads / arch.numKvHeads;
    const D = arch.headDim;
    const masks = this.attentionMasks(past.key, this.io.positions);
    const heads = (t: string) => b.op1('Transpose', [b.op1('Reshape', [t, b.constant('int64', [4], [0, 0, arch.numKvHeads, D])])], { perm: [0, 2, 1, 3] }); // [B, Hkv, S, D]
    const grouped = b.op1('Transpose', [b.op1('Reshape', [q, b.constant('int64', [5], [0, 0, arch.numKvHeads, group, D])])], { perm: [0, 2, 3, 1, 4] }); // [B, Hkv, G, S, D]
    const queries = b.op1('Reshape', [grouped, b.constant('int64', [4], [0, arch.numKvHeads, -1, D])]); // [B, Hkv, G*S, D]
    const scaled = (keys: string) => b.op1('FusedMatMul', [queries, keys], { alpha: { float: 1 / Math.sqrt(D) }, transB: 1 }, { domain: 'com.microsoft' });
    // Masked by selection: a score that is NaN (a stale or poisoned key) becomes -inf, never NaN + -inf.
    const cacheScores = b.op1('Where', [masks.cache, scaled(past.key), masks.hidden]); // [B, Hkv, G*S, C]
    const ownScores = b.op1('Where', [masks.own, scaled(heads(k)), masks.hidden]); // [B, Hkv, G*S, S]
    const probs = b.op1('Softmax', [b.op1('Concat', [cacheScores, ownScores], { axis: -1 })], { axis: -1 });
    const axis3 = b.constant('int64', [1], [3]);
    const cacheProbs = b.op1('Slice', [probs, b.constant('int64', [1], [0]), masks.cacheLength, axis3]);
    const ownProbs = b.op1('Slice', [probs, masks.cacheLength, b.constant('int64', [1], [Number.MAX_SAFE_INTEGER]), axis3]);
    const out = b.op1('Add', [b.op1('MatMul', [cacheProbs, past.value]), b.op1('MatMul', [ownProbs, heads(v)])]); // [B, Hkv, G*S, D]
    const ungrouped = b.op1('Transpose', [b.op1('Reshape', [out, b.constant('int64', [5], [0, arch.numKvHeads, group, -1, D])])], { perm: [0, 3, 1, 2, 4] }); // [B, S, Hkv, G, D]
    return b.op1('Reshape', [ungrouped, b.constant('int64', [2], [-1, arch.numHeads * D])]);
  }

  private masks?: { cache: string; own: string; cacheLength: string; hidden: string };

  /**
   * Boolean visibility masks shared by every layer (see matmulAttention): `cache` [B, 1, 1, C]
   * and `own` [G*S, S]; `hidden` is the -inf that Where puts in place of an invisible score.
   */
  private attentionMasks(pastKey: string, positions: string): { cache: string; own: string; cacheLength: string; hidden: string } {
    if (this.masks) return this.masks;
    const { b, arch } = this;
    const i64 = (values: number[]) => b.constant('int64', [values.length], values);
    const scalar = (value: number) => b.constant('int64', [], [value]);
    const cacheLength = b.op1('Slice', [b.op1('Shape', [pastKey]), i64([2]), i64([3])]); // [1]
    const cache = this.pastVisibility(positions, cacheLength, [1, 2]); // [B, 1, 1, C]
    const seq = b.op1('Squeeze', [b.op1('Slice', [b.op1('Shape', [positions]), i64([1]), i64([2])])]);
    const steps = b.op1('Range', [scalar(0), seq, scalar(1)]); // [S]
    const causal = b.op1('LessOrEqual', [b.op1('Unsqueeze', [steps, i64([0])]), b.op1('Unsqueeze', [steps, i64([1])])]); // [S(query), S(key)]
    const group = arch.numHeads / arch.numKvHeads;
    const own = group === 1 ? causal : b.op1('Cast', [b.op1('Tile', [b.op1('Cast', [causal], { to: 6 }), i64([group, 1])])], { to: 9 }); // [G*S, S]
    this.masks = { cache, own, cacheLength, hidden: b.constant('float32', [], [-Infinity]) };
    return this.masks;
  }

  /**
   * Which cache positions each row may read: position j < the row's past length (its first
   * position id), as a boolean [B, 1, ..., C] with singleton axes inserted at `axes`.
   */
  private pastVisibility(positions: string, cacheLength: string, axes: number[]): string {
    const { b } = this;
    const i64 = (values: number[]) => b.constant('int64', [values.length], values);
    const scalar = (value: number) => b.constant('int64', [], [value]);
    const cachePositions = b.op1('Range', [scalar(0), b.op1('Squeeze', [cacheLength]), scalar(1)]); // [C]
    const pastLengths = b.op1('Slice', [positions, i64([0]), i64([1]), i64([1])]); // [B, 1]
    return b.op1('Unsqueeze', [b.op1('Less', [cachePositions, pastLengths]), i64(axes)]);
  }

  private readonly batchShapes = new Map<number, string>();

  /** [batch, seq, width] from position_ids' shape, for reshaping [tokens, width] activations. */
  private batchShape(positions: string, width: number): string {
    const { b } = this;
    let shape = this.batchShapes.get(width);
    if (!shape) {
      const batchSeq = b.op1('Shape', [positions]); // [2] = (batch, seq)
      shape = b.op1('Concat', [batchSeq, b.constant('int64', [1], [width])], { axis: 0 });
      this.batchShapes.set(width, shape);
    }
    return shape;
  }
}

/** The hooks' view of the graph under construction: inputs declared once, values shared by key. */
function hookContext(b: GraphBuilder, arch: ArchitectureSpec, weight: (name: string) => string): HookContext {
  const inputs = new Map<string, string>();
  const shared = new Map<string, string>();
  return {
    b,
    arch,
    weight,
    input(name, dtype, shape) {
      let value = inputs.get(name);
      if (!value) inputs.set(name, (value = b.input(name, dtype, shape)));
      return value;
    },
    shared(key, make) {
      let value = shared.get(key);
      if (!value) shared.set(key, (value = make()));
      return value;
    },
  };
}
