import ort from 'onnxruntime-node';
import type { ArchitectureSpec } from '../model/architecture.js';
import { openCheckpoint, type Checkpoint } from '../model/checkpoint.js';
import * as G from '../model/lower-inference.js';
import { checkFeeds, float32, int32, int64 } from './feeds.js';
import { prepareInferenceGraph } from './graph-cache.js';
import { createSession } from './session.js';
import { GpuSlotStacks } from './gpu-slot-stacks.js';
import { KvCache } from './kv-cache.js';
import { loraGrouping, LoraSlotStacks, slotRange } from './lora-slots.js';

export type Device = 'cpu' | 'webgpu' | 'cuda';

export interface RuntimeOptions {
  modelDir: string;
  cacheDir: string;
  device: Device;
  /** Sequences that can hold a KV-cache row at once (the largest decode batch). */
  maxRows: number;
  /** Longest sequence (prompt + completion) a row can hold. */
  maxContext: number;
  /** Resident delta slots. */
  deltaSlots: number;
  /** Largest LoRA rank a slot holds; smaller ranks are zero-padded. */
  maxRank: number;
  threads?: number;
  /** Defaults to 'matmul' on CPU and 'group-query' on GPU providers (see InferenceGraphOptions). */
  attention?: G.AttentionKernel;
}

/**
 * One forward pass over `tokens.length` consecutive cache rows. Rows carry the same number of new
 * tokens, except in a first prefill (every pastLength 0), where shorter rows are right-padded.
 */
export interface ForwardPass {
  firstRow: number;
  tokens: number[][];
  /** Tokens already in each row's cache (the position of its first new token). */
  pastLengths: number[];
  /** Delta slot per row, -1 for the base model. */
  slots: number[];
  /** 'last': logits of each row's last token; 'all': of every position, row-major [rows, longest row]. */
  logits: 'last' | 'all';
}


/**
 * The backbone on one device: the ORT session, the KV cache and the resident delta slots.
 * `forward()` is the only place that calls `session.run()`.
 */
export class ModelRuntime {
  private constructor(
    readonly checkpoint: Checkpoint,
    readonly session: ort.InferenceSession,
    readonly cache: KvCache,
    readonly slots: LoraSlotStacks,
    readonly options: RuntimeOptions,
    /** On webgpu: the slot stacks kept in device memory. */
    private readonly gpuSlots?: GpuSlotStacks,
  ) {}

  get arch(): ArchitectureSpec {
    return this.checkpoint.arch;
  }

  static async create(options: RuntimeOptions): Promise<ModelRuntime> {
    const checkpoint = openCheckpoint(options.modelDir);
    const { arch } = checkpoint;
    const maxContext = Math.min(options.maxContext, arch.maxPositions);
    const attention = options.attention ?? (options.device === 'cpu' ? 'matmul' : 'group-query');
    const modelPath = prepareInferenceGraph(checkpoint, options.cacheDir, maxContext, attention);
    const session = await createSession(modelPath, options);
    const cache = new KvCache({ layers: arch.numLayers, rows: options.maxRows, kvHeads: arch.numKvHeads, maxLength: maxContext, headDim: arch.headDim });
    const modules = G.loraModules(arch).map((p) => ({ modulePath: p.modulePath, inFeatures: p.inFeatures, outFeatures: p.outFeatures }));
    const slots = new LoraSlotStacks(modules, options.deltaSlots, options.maxRank);
    const gpuSlots = options.device === 'webgpu' ? await GpuSlotStacks.create(slots) : undefined;
    return new ModelRuntime(checkpoint, session, cache, slots, { ...options, maxContext, attention }, gpuSlots);
  }

  async forward(pass: ForwardPass): Promise<Float32Array> {
    const batch = pass.tokens.length;
    const lengths = pass.tokens.map((t) => t.length);
    const seq = Math.max(...lengths);
    if (lengths.some((n) => n !== seq) && pass.pastLengths.some((p) => p !== 0)) throw new Error('rows of different lengths are only allowed in a first prefill');
    const totals = pass.pastLengths.map((p, r) => p + lengths[r]!);
    if (Math.max(...pass.pastLengths) + seq > this.options.maxContext) throw new Error(`sequence exceeds the context of ${this.options.maxContext} tokens`);
    this.cache.reserve(Math.max(...pass.pastLengths) + seq);
    const feeds: Record<string, ort.Tensor> = {
      [G.GRAPH_INPUTS.inputIds]: int64(pass.tokens.flatMap((t) => padded(t, seq)), [batch, seq]),
      [G.GRAPH_INPUTS.positionIds]: int64(pass.pastLengths.flatMap((p) => Array.from({ length: seq }, (_, i) => p + i)), [batch, seq]),
      [G.GRAPH_INPUTS.logitsIndex]: int64(pass.logits === 'all' ? range(batch * seq) : lengths.map((n, r) => r * seq + n - 1), [pass.logits === 'all' ? batch * seq : batch]),
    };
    if (this.options.attention === 'group-query') {
      // GroupQueryAttention masks each row beyond its own length, so padding is never attended.
      feeds[G.GRAPH_INPUTS.seqlensK] = int32(totals.map((t) => t - 1), [batch]);
      feeds[G.GRAPH_INPUTS.totalSequenceLength] = int32([Math.max(...pass.pastLengths) + seq], []);
    }
    for (let layer = 0; layer < this.arch.numLayers; layer++) {
      const view = this.cache.view(layer, pass.firstRow, batch);
      feeds[G.pastKey(layer)] = float32(view.key, view.dims);
      feeds[G.pastValue(layer)] = float32(view.value, view.dims);
    }
    await this.addDeltaFeeds(feeds, pass.slots.flatMap((s, r) => padded(Array<number>(lengths[r]!).fill(s), seq, -1)));
    checkFeeds(this.session.inputNames, feeds);
    const out = await this.session.run(feeds);
    for (let layer = 0; layer < this.arch.numLayers; layer++) {
      const keys = out[G.newKey(layer)]!.data as Float32Array;
      const values = out[G.newValue(layer)]!.data as Float32Array;
      this.cache.append(layer, pass.firstRow, pass.pastLengths, lengths, seq, keys, values);
    }
    return out.logits!.data as Float32Array;
  }

  /**
   * The LoRA feeds: on CPU, zero-copy views of the slot range the pass uses; on webgpu, the
   * device-resident stacks of every slot (a range of a GPU tensor cannot be taken from JS).
   */
  private async addDeltaFeeds(feeds: Record<string, ort.Tensor>, tokenSlots: number[]): Promise<void> {
    const { lo, hi } = this.gpuSlots ? { lo: 0, hi: this.slots.slots } : slotRange(tokenSlots);
    const { gather, cells, scatter } = loraGrouping(tokenSlots, lo, hi);
    const R = this.slots.maxRank;
    feeds[G.GRAPH_INPUTS.loraGather] = int64(gather, [hi - lo, cells]);
    feeds[G.GRAPH_INPUTS.loraScatter] = int64(scatter, [tokenSlots.length]);
    await this.gpuSlots?.sync();
    for (const m of this.slots.modules) {
      if (this.gpuSlots) {
        const { a, b } = this.gpuSlots.get(m.modulePath);
        feeds[G.loraA(m.modulePath)] = a;
        feeds[G.loraB(m.modulePath)] = b;
        continue;
      }
      const { a, b } = this.slots.range(m.modulePath, lo, hi);
      feeds[G.loraA(m.modulePath)] = float32(a, [hi - lo, m.inFeatures, R]);
      feeds[G.loraB(m.modulePath)] = float32(b, [hi - lo, R, m.outFeatures]);
    }
  }

  async release(): Promise<void> {
    await this.gpuSlots?.release();
    await this.session.release();
  }
}

function padded(values: number[], length: number, fill = 0): number[] {
  return values.length === length ? values : [...values, ...Array<number>(length - values.length).fill(fill)];
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
