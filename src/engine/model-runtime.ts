import ort from 'onnxruntime-node';
import type { ArchitectureSpec } from '../model/architecture.js';
import { openCheckpoint, type Checkpoint } from '../model/checkpoint.js';
import * as G from '../model/lower-inference.js';
import { checkFeeds, float32, int32, int64 } from './feeds.js';
import { prepareInferenceGraph } from './graph-cache.js';
import { createSession } from './session.js';
import { DeviceKvCache } from './device-kv-cache.js';
import { DeviceUploader } from './device-upload.js';
import { GpuSlotStacks } from './gpu-slot-stacks.js';
import { KvCache, type KvCacheShape } from './kv-cache.js';
import { deltaKinds, type DeltaKind, type DeltaLimits, type FeedTensor, type LayerKeyValues } from '../deltas/kind.js';
import '../deltas/kinds/index.js';
import { SlotStacks, slotRange } from './slot-stacks.js';
import { EngineError } from './types.js';

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
  /** Most virtual tokens a prompt- or prefix-tuning delta may add (default 64). */
  maxVirtualTokens?: number;
  /** Widest bottleneck an adapter may have (default 64). */
  maxBottleneck?: number;
  /** The delta kinds that may be served (default: every registered kind). */
  deltaKinds?: readonly string[];
  /**
   * The kinds hooked into the graph from the start (default: every kind that may be served).
   * Others are added on demand (enableKinds): a kind's hooks run in every pass, so a server
   * that serves only LoRA should not pay for the rest.
   */
  initialKinds?: readonly string[];
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
  /** Per row, the slot of each delta kind it uses (a row without deltas: {}). */
  slots: RowSlots[];
  /** 'last': logits of each row's last token; 'all': of every position, row-major [rows, longest row]. */
  logits: 'last' | 'all';
}


/** A row's resident deltas: kind name → slot (at most one delta per kind). */
export type RowSlots = Readonly<Record<string, number>>;

/** The server limits delta kinds lay their slots out for. */
export function deltaLimits(options: Pick<RuntimeOptions, 'maxRank' | 'maxVirtualTokens' | 'maxBottleneck' | 'deltaKinds'>): DeltaLimits {
  return { maxRank: options.maxRank, maxVirtualTokens: options.maxVirtualTokens ?? 64, maxBottleneck: options.maxBottleneck ?? 64, ...(options.deltaKinds?.length ? { kinds: options.deltaKinds } : {}) };
}

/** What the scheduler does with the KV cache, wherever it lives: rows move, capacity follows the live sequences. */
export type KvRows = Pick<KvCache, 'capacity' | 'byteLength' | 'reserve' | 'fit' | 'moveRow' | 'clearRow' | 'writePrefix'> & { readPrefix(row: number, n: number): LayerKeyValues[] | undefined };

/** On webgpu: the KV cache and the slot stacks kept in device memory, and the uploader that put them there. */
interface DeviceResidents {
  uploader: DeviceUploader;
  cache: DeviceKvCache;
  stacks: GpuSlotStacks;
}

/**
 * The backbone on one device: the ORT session, the KV cache and the resident delta slots.
 * `forward()` is the only place that calls `session.run()`.
 */
export class ModelRuntime {
  /** A session with more kinds hooked in, ready to replace the current one before the next pass. */
  private pending?: { session: ort.InferenceSession; stacks: SlotStacks[] };
  /** The enableKinds call in progress, so calls run one after another. */
  private enabling: Promise<void> = Promise.resolve();
  /** Whether a pass is running, when the session must not be swapped or released. */
  private inPass = false;
  /** enableKinds calls waiting for the pass in flight to end before their kinds are committed. */
  private commitWaiters: (() => void)[] = [];

  private constructor(
    readonly checkpoint: Checkpoint,
    private session: ort.InferenceSession,
    private readonly hostCache: KvCache | undefined,
    /** Per delta kind hooked into the graph, its resident slot stacks (grows with enableKinds). */
    private readonly kindStacks: Map<string, SlotStacks>,
    readonly options: RuntimeOptions & { maxContext: number; attention: G.AttentionKernel; kvCache: 'host' | 'device' },
    private readonly device?: DeviceResidents,
  ) {}

  /** Per delta kind hooked into the graph, its resident slot stacks. */
  get stacks(): ReadonlyMap<string, SlotStacks> {
    return this.kindStacks;
  }

  /** Whether a kind may be served here at all (allowed and with a place in this backbone). */
  servesKind(kind: string): boolean {
    return kindsFor(this.arch, deltaLimits(this.options)).some((k) => k.name === kind);
  }

  /**
   * Hooks more delta kinds into the graph: builds (or reuses) the graph with them and creates its
   * session while the current one keeps serving, then switches to it between passes. Settles
   * once the kinds' slot stacks exist. The slot stacks of the kinds already served are kept as
   * they are, resident deltas included.
   */
  enableKinds(kinds: readonly string[]): Promise<void> {
    const next = this.enabling.then(async () => {
      await this.addKinds(kinds);
      this.commitKinds();
      if (this.pending) await new Promise<void>((resolve) => this.commitWaiters.push(resolve));
    });
    this.enabling = next.catch(() => undefined);
    return next;
  }

  private async addKinds(names: readonly string[]): Promise<void> {
    const limits = deltaLimits(this.options);
    const served = kindsFor(this.arch, limits);
    const unknown = names.filter((n) => !served.some((k) => k.name === n));
    if (unknown.length) throw new EngineError('invalid_delta', `delta kind${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} cannot be served here (--delta-kinds, or no place in this backbone)`);
    const have = new Set([...this.kindStacks.keys(), ...(this.pending?.stacks.map((s) => s.kind) ?? [])]);
    const added = served.filter((k) => names.includes(k.name) && !have.has(k.name));
    if (!added.length) return;
    const kinds = served.filter((k) => have.has(k.name) || added.includes(k));
    const stacks = added.map((k) => new SlotStacks(k.name, k.slotTensors(this.arch, limits), this.options.deltaSlots));
    const session = kinds.some((k) => added.includes(k) && hooked(k, this.arch, limits)) ? await this.sessionFor(kinds) : undefined;
    const previous = this.pending;
    this.pending = { session: session ?? previous?.session ?? this.session, stacks: [...(previous?.stacks ?? []), ...stacks] };
    if (previous && previous.session !== this.pending.session) void previous.session.release();
  }

  private async sessionFor(kinds: DeltaKind[]): Promise<ort.InferenceSession> {
    const o = this.options;
    const modelPath = inferenceGraph(this.checkpoint, o.cacheDir, { maxCacheLength: o.maxContext, attention: o.attention, kvCache: o.kvCache, limits: deltaLimits(o), kinds: kinds.map((k) => k.name) });
    const cacheOutputs = o.kvCache === 'device' ? Array.from({ length: this.arch.numLayers }, (_, l) => [G.cacheKeyOut(l), G.cacheValueOut(l)]).flat() : [];
    return createSession(modelPath, { ...o, gpuOutputs: cacheOutputs });
  }

  /**
   * Switches to the session enableKinds prepared, and adds the new kinds' slot stacks. Called
   * by whoever needs the new kinds' slots (the engine, once enableKinds settles) and around every
   * pass; during a pass it waits for the pass to end, so no run is in flight on the session it
   * releases.
   */
  commitKinds(): void {
    const pending = this.pending;
    if (!pending || this.inPass) return;
    this.pending = undefined;
    for (const stacks of pending.stacks) this.kindStacks.set(stacks.kind, stacks);
    if (pending.session !== this.session) {
      void this.session.release();
      this.session = pending.session;
    }
    for (const resolve of this.commitWaiters.splice(0)) resolve();
  }

  get cache(): KvRows {
    return this.device?.cache ?? this.hostCache!;
  }

  get arch(): ArchitectureSpec {
    return this.checkpoint.arch;
  }

  static async create(options: RuntimeOptions): Promise<ModelRuntime> {
    const checkpoint = openCheckpoint(options.modelDir);
    const { arch } = checkpoint;
    const maxContext = Math.min(options.maxContext, arch.maxPositions);
    const attention = options.attention ?? (options.device === 'cpu' ? 'matmul' : 'group-query');
    // WebGPU keeps the KV cache on the device (needs gpu-buffer outputs, which only it has here).
    const kvCache = options.device === 'webgpu' ? 'device' : 'host';
    const limits = deltaLimits(options);
    const kinds = kindsFor(arch, limits).filter((k) => !options.initialKinds || options.initialKinds.includes(k.name));
    const modelPath = inferenceGraph(checkpoint, options.cacheDir, { maxCacheLength: maxContext, attention, kvCache, limits, kinds: kinds.map((k) => k.name) });
    const cacheOutputs = kvCache === 'device' ? Array.from({ length: arch.numLayers }, (_, l) => [G.cacheKeyOut(l), G.cacheValueOut(l)]).flat() : [];
    const session = await createSession(modelPath, { device: options.device, threads: options.threads, gpuOutputs: cacheOutputs });
    const shape: KvCacheShape = { layers: arch.numLayers, rows: options.maxRows, kvHeads: arch.numKvHeads, maxLength: maxContext, headDim: arch.headDim };
    const stacks = new Map(kinds.map((k) => [k.name, new SlotStacks(k.name, k.slotTensors(arch, limits), options.deltaSlots)]));
    let device: DeviceResidents | undefined;
    if (kvCache === 'device') {
      const uploader = new DeviceUploader();
      device = { uploader, cache: await DeviceKvCache.create(shape, uploader), stacks: new GpuSlotStacks(uploader, stacks) };
    }
    return new ModelRuntime(checkpoint, session, device ? undefined : new KvCache(shape), stacks, { ...options, maxContext, attention, kvCache }, device);
  }

  async forward(pass: ForwardPass): Promise<Float32Array> {
    this.commitKinds();
    this.inPass = true;
    try {
      return await this.runPass(pass);
    } finally {
      this.inPass = false;
      this.commitKinds();
    }
  }

  private async runPass(pass: ForwardPass): Promise<Float32Array> {
    const batch = pass.tokens.length;
    const lengths = pass.tokens.map((t) => t.length);
    const seq = Math.max(...lengths);
    if (lengths.some((n) => n !== seq) && pass.pastLengths.some((p) => p !== 0)) throw new Error('rows of different lengths are only allowed in a first prefill');
    const totals = pass.pastLengths.map((p, r) => p + lengths[r]!);
    if (Math.max(...pass.pastLengths) + seq > this.options.maxContext) throw new Error(`sequence exceeds the context of ${this.options.maxContext} tokens`);
    this.cache.reserve(Math.max(...pass.pastLengths) + seq);
    // Virtual tokens (prompt tuning) arrive as -(k + 1) for the row's k-th one; the embedding
    // table is read at id 0 for them and the kind's hook selects the delta's embedding instead.
    const flatTokens = pass.tokens.flatMap((t) => padded(t, seq));
    const virtualIndex = Int32Array.from(flatTokens, (t) => (t < 0 ? -t - 1 : -1));
    const feeds: Record<string, ort.Tensor> = {
      [G.GRAPH_INPUTS.inputIds]: int64(flatTokens.map((t) => Math.max(t, 0)), [batch, seq]),
      [G.GRAPH_INPUTS.positionIds]: int64(pass.pastLengths.flatMap((p) => Array.from({ length: seq }, (_, i) => p + i)), [batch, seq]),
      [G.GRAPH_INPUTS.logitsIndex]: int64(pass.logits === 'all' ? range(batch * seq) : lengths.map((n, r) => r * seq + n - 1), [pass.logits === 'all' ? batch * seq : batch]),
    };
    if (this.options.attention === 'group-query') {
      // GroupQueryAttention masks each row beyond its own length, so padding is never attended.
      feeds[G.GRAPH_INPUTS.seqlensK] = int32(totals.map((t) => t - 1), [batch]);
      feeds[G.GRAPH_INPUTS.totalSequenceLength] = int32([Math.max(...pass.pastLengths) + seq], []);
    }
    const device = this.device?.cache;
    if (device) this.addDeviceCacheFeeds(feeds, device, pass, seq);
    else this.addHostCacheFeeds(feeds, pass.firstRow, batch);
    await this.addDeltaFeeds(feeds, pass, lengths, seq, virtualIndex);
    checkFeeds(this.session.inputNames, feeds);
    const out = await this.session.run(feeds);
    for (let layer = 0; layer < this.arch.numLayers; layer++) {
      if (device) device.replace(layer, out[G.cacheKeyOut(layer)]!, out[G.cacheValueOut(layer)]!);
      else this.hostCache!.append(layer, pass.firstRow, pass.pastLengths, lengths, seq, out[G.newKey(layer)]!.data as Float32Array, out[G.newValue(layer)]!.data as Float32Array);
    }
    return out.logits!.data as Float32Array;
  }

  /** Zero-copy views of the pass's rows of the host cache. */
  private addHostCacheFeeds(feeds: Record<string, ort.Tensor>, firstRow: number, batch: number): void {
    for (let layer = 0; layer < this.arch.numLayers; layer++) {
      const view = this.hostCache!.view(layer, firstRow, batch);
      feeds[G.pastKey(layer)] = float32(view.key, view.dims);
      feeds[G.pastValue(layer)] = float32(view.value, view.dims);
    }
  }

  /**
   * The whole device cache, the pass's physical rows, and where each new token's keys/values land
   * (padding positions of a first prefill land past the row's length, where attention never looks
   * and later tokens overwrite them).
   */
  private addDeviceCacheFeeds(feeds: Record<string, ort.Tensor>, cache: DeviceKvCache, pass: ForwardPass, seq: number): void {
    const rows = cache.rows(pass.firstRow, pass.tokens.length);
    feeds[G.GRAPH_INPUTS.cacheRows] = int64(rows, [rows.length]);
    feeds[G.GRAPH_INPUTS.cacheWrites] = int64(rows.flatMap((row, r) => Array.from({ length: seq }, (_, s) => [row, pass.pastLengths[r]! + s]).flat()), [rows.length * seq, 2]);
    feeds[G.GRAPH_INPUTS.cacheVisible] = pastVisible(pass.pastLengths, cache.capacity);
    for (let layer = 0; layer < this.arch.numLayers; layer++) {
      const { key, value } = cache.layer(layer);
      feeds[G.cacheKey(layer)] = key;
      feeds[G.cacheValue(layer)] = value;
    }
  }

  /**
   * Each delta kind's feeds: its slot stacks — on CPU zero-copy views of the slot range the pass
   * uses, on webgpu the device-resident stacks of every slot (a range of a GPU tensor cannot be
   * taken from JS) — and its per-pass index inputs, from the slot each token's row uses.
   */
  private async addDeltaFeeds(feeds: Record<string, ort.Tensor>, pass: ForwardPass, lengths: number[], seq: number, virtualIndex: Int32Array): Promise<void> {
    const gpu = this.device?.stacks;
    await gpu?.sync();
    for (const [name, stacks] of this.stacks) {
      const tokenSlots = Int32Array.from(pass.slots.flatMap((row, r) => padded(Array<number>(lengths[r]!).fill(row[name] ?? -1), seq, -1)));
      const { lo, hi } = gpu ? { lo: 0, hi: stacks.slots } : slotRange(tokenSlots);
      for (const spec of stacks.specs) {
        if (spec.hostOnly) continue; // not a graph input (see SlotTensor.hostOnly)
        feeds[spec.name] = gpu ? gpu.get(spec.name) : float32(stacks.range(spec.name, lo, hi), [hi - lo, ...spec.dims]);
      }
      const relative = tokenSlots.map((s) => (s < 0 ? -1 : s - lo));
      for (const f of kindOf(name).feeds({ tokenSlots: relative, slotCount: hi - lo, virtualIndex })) feeds[f.name] = tensorOf(f);
    }
  }

  async release(): Promise<void> {
    // A graph being built finishes first, so its session is released with the rest.
    await this.enabling;
    this.commitKinds();
    if (this.device) {
      this.device.stacks.release();
      this.device.cache.release();
      await this.device.uploader.release();
    }
    await this.session.release();
  }
}

/** [rows, capacity] booleans: cache position j is visible to row r when j < pastLengths[r]. */
function pastVisible(pastLengths: number[], capacity: number): ort.Tensor {
  const visible = new Uint8Array(pastLengths.length * capacity);
  pastLengths.forEach((length, r) => visible.fill(1, r * capacity, r * capacity + length));
  return new ort.Tensor('bool', visible, [pastLengths.length, capacity]);
}

/** The delta kinds this backbone has a place for (a kind with no slot tensors here is not hooked in). */
function kindsFor(arch: ArchitectureSpec, limits: DeltaLimits): DeltaKind[] {
  return deltaKinds().filter((k) => (!limits.kinds || limits.kinds.includes(k.name)) && k.slotTensors(arch, limits).length > 0);
}

/** Whether a kind adds anything to the graph (prefix tuning, read only on the host, does not). */
function hooked(kind: DeltaKind, arch: ArchitectureSpec, limits: DeltaLimits): boolean {
  return kind.slotTensors(arch, limits).some((t) => !t.hostOnly);
}

/**
 * The runtime's inference graph with the given delta kinds hooked in (default: every kind that
 * may be served), built or reused (see graph-cache). Kinds that add nothing to the graph are
 * left out of it and of its cache key.
 */
export function inferenceGraph(checkpoint: Checkpoint, cacheDir: string, o: { maxCacheLength: number; attention: G.AttentionKernel; kvCache: 'host' | 'device'; limits: DeltaLimits; kinds?: readonly string[] }): string {
  const kinds = kindsFor(checkpoint.arch, o.limits).filter((k) => (!o.kinds || o.kinds.includes(k.name)) && hooked(k, checkpoint.arch, o.limits));
  const { kinds: _allowed, ...limits } = o.limits;
  const key = { maxCacheLength: o.maxCacheLength, attention: o.attention, kvCache: o.kvCache, deltas: { kinds: kinds.map((k) => k.name), limits } };
  return prepareInferenceGraph(checkpoint, cacheDir, key, kinds.map((k) => k.lowering(checkpoint.arch, o.limits)));
}

function kindOf(name: string): DeltaKind {
  return deltaKinds().find((k) => k.name === name)!;
}

function tensorOf(f: FeedTensor): ort.Tensor {
  if (f.dtype === 'int64') return int64(f.data, f.dims);
  if (f.dtype === 'int32') return int32(f.data, f.dims);
  if (f.dtype === 'bool') return new ort.Tensor('bool', Uint8Array.from(f.data), f.dims);
  return float32(Float32Array.from(f.data), f.dims);
}

function padded(values: number[], length: number, fill = 0): number[] {
  return values.length === length ? values : [...values, ...Array<number>(length - values.length).fill(fill)];
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
