import type { LoraDelta } from '../deltas/peft-lora.js';
import { firstNonFinite } from '../deltas/peft-lora.js';
import type { ModelRuntime } from './model-runtime.js';
import { logSoftmax, topK } from './sampler.js';
import { Sequence } from './sequence.js';
import { SlotTable } from './slot-table.js';
import { EngineError, type FinishReason, type GenerateEvent, type GenerateRequest, type TokenLogprob } from './types.js';

export interface SchedulerOptions {
  /** Prompt tokens prefilled per step, so a long prompt cannot stall running streams. */
  prefillChunk: number;
  maxQueue: number;
  /** Called when a delta load settles, so an idle engine loop runs a step. */
  wake?: () => void;
  /** Hears every finished delta load (telemetry). */
  onLoad?: (name: string, load: DeltaLoad) => void;
}

/**
 * Where the scheduler finds a delta's weights when it must make it resident. `lookup` is
 * synchronous (host memory); a source with `load` can fetch a cold delta asynchronously, after
 * which `lookup` returns it. Without `load`, a delta `lookup` does not know does not exist.
 */
export interface DeltaSource {
  lookup(name: string): LoraDelta | undefined;
  /** Whether `lookup` would find it, without counting as a use. */
  has?(name: string): boolean;
  /** Brings a delta into host memory; rejects (EngineError delta_not_found, or any error) when it cannot. */
  load?(name: string): Promise<DeltaLoad | void>;
  /** The delta was written into a slot. */
  resident?(name: string): void;
}

/** Which tier a finished load read from, and how long it took (parse and layout included). */
export interface DeltaLoad {
  tier: 'host' | 'disk' | 'store';
  ms: number;
}

/** Why a delta load failed: code delta_not_found or internal_error. */
export interface LoadFailure {
  code: string;
  message: string;
}

/**
 * Iteration-level continuous batching. Rows [0, d) of the KV cache hold the d decoding sequences
 * and rows [d, d + p) the p prefilling ones, in admission order. Each step prefills up to
 * `prefillChunk` prompt tokens, first sequence first, then runs one decode step for every decoding
 * row. Because prefills finish in order, the one that finishes is always at row d and joins the
 * decode range where it is; a decoding row that leaves is back-filled by the last one and the
 * prefill block slides down a row, so the decode batch stays one contiguous range.
 */
export class Scheduler {
  private readonly waiting: Sequence[] = [];
  private readonly decoding: Sequence[] = [];
  private readonly prefilling: Sequence[] = [];
  /** Loads in flight, one per delta however many requests wait for it. */
  private readonly loading = new Map<string, Promise<LoadFailure | undefined>>();
  /** Loads that failed since the last admission pass; their waiting requests end with this error. */
  private readonly failed = new Map<string, LoadFailure>();
  /** Deltas an operator pinned resident (admin pin); each holds one slot pin. */
  private readonly held = new Set<string>();
  /** The last completed load of each delta, so requests that waited for it can report its tier. */
  private readonly lastLoads = new Map<string, DeltaLoad & { at: number }>();
  readonly slotTable: SlotTable;

  constructor(
    private readonly runtime: ModelRuntime,
    private readonly deltas: DeltaSource,
    private readonly emit: (event: GenerateEvent) => void,
    private readonly options: SchedulerOptions,
  ) {
    this.slotTable = new SlotTable(runtime.slots.slots);
  }

  /** Nothing to do until a message or a load arrives: every waiting request (if any) waits for a load in flight. */
  get idle(): boolean {
    return this.prefilling.length === 0 && this.decoding.length === 0 && this.failed.size === 0 && this.waiting.every((seq) => seq.request.delta !== null && this.loading.has(seq.request.delta));
  }

  /** Delta loads in flight. */
  get loads(): number {
    return this.loading.size;
  }

  /** Deltas of the rows in flight and of the waiting requests (for routers' LoRA affinity). */
  get deltaUse(): { running: string[]; waiting: string[] } {
    const names = (seqs: Sequence[]) => [...new Set(seqs.map((s) => s.request.delta).filter((d): d is string => d !== null))];
    return { running: names([...this.decoding, ...this.prefilling]), waiting: names(this.waiting) };
  }

  get stats() {
    const use = this.deltaUse;
    return {
      runningDeltas: use.running,
      waitingDeltas: use.waiting,
      waiting: this.waiting.length,
      decoding: this.decoding.length,
      running: this.decoding.length + this.prefilling.length,
      residentSlots: this.slotTable.occupants.filter(Boolean).length,
      pinnedDeltas: this.held.size,
      loadsInFlight: this.loading.size,
    };
  }

  submit(request: GenerateRequest): void {
    if (request.delta !== null && !this.deltas.load && !this.deltas.lookup(request.delta)) throw new EngineError('delta_not_found', `delta '${request.delta}' is not registered`);
    const limit = this.runtime.options.maxContext;
    if (request.promptIds.length + Math.max(request.maxTokens, 0) > limit && request.promptIds.length >= limit) {
      throw new EngineError('context_length_exceeded', `prompt has ${request.promptIds.length} tokens; the context holds ${limit}`);
    }
    if (this.waiting.length >= this.options.maxQueue) throw new EngineError('queue_full', `the queue holds ${this.options.maxQueue} requests`);
    this.waiting.push(new Sequence(request));
  }

  cancel(id: string): void {
    for (const seq of [...this.waiting, ...this.decoding, ...this.prefilling]) if (seq.id === id) seq.cancelled = true;
  }

  /** Runs one iteration: retire, admit, one prefill chunk, one decode step. */
  async step(): Promise<void> {
    this.retireAbandoned();
    this.admit();
    let budget = this.options.prefillChunk;
    const together = this.wholePromptsWithin(budget);
    if (together.length > 1) budget -= await this.prefillTogether(together);
    while (budget > 0 && this.prefilling.length) budget -= await this.prefillChunk(this.prefilling[0]!, budget);
    if (this.decoding.length) await this.decodeStep();
  }

  private retireAbandoned(): void {
    for (const seq of [...this.waiting]) {
      if (seq.cancelled || seq.expired) {
        this.waiting.splice(this.waiting.indexOf(seq), 1);
        this.finish(seq, seq.cancelled ? 'cancelled' : 'timeout');
      }
    }
    for (const seq of [...this.decoding, ...this.prefilling]) {
      if (seq.cancelled || seq.expired) this.finish(seq, seq.cancelled ? 'cancelled' : 'timeout');
    }
  }

  /**
   * Starts loading a cold delta unless a load of it is in flight; resolves when it settles, with
   * the failure if it failed (never rejects: the failure is also recorded for the admission pass,
   * which errors the requests waiting for it).
   */
  requestLoad(name: string): Promise<LoadFailure | undefined> {
    const inFlight = this.loading.get(name);
    if (inFlight) return inFlight;
    if (!this.deltas.load) {
      const failure = { code: 'delta_not_found', message: `delta '${name}' is not registered` };
      this.failed.set(name, failure);
      return Promise.resolve(failure);
    }
    const settled = this.deltas.load(name).then(
      (load) => {
        if (!load) return undefined;
        this.lastLoads.delete(name);
        this.lastLoads.set(name, { ...load, at: performance.now() });
        if (this.lastLoads.size > 4096) this.lastLoads.delete(this.lastLoads.keys().next().value!);
        this.options.onLoad?.(name, load);
        return undefined;
      },
      (err: Error & { code?: string }) => {
        const code = err.code === 'delta_not_found' ? 'delta_not_found' : 'internal_error';
        const failure = { code, message: `delta '${name}' could not be loaded: ${err.message}` };
        this.failed.set(name, failure);
        return failure;
      },
    );
    const tracked = settled.finally(() => {
      this.loading.delete(name);
      this.options.wake?.();
    });
    this.loading.set(name, tracked);
    return tracked;
  }

  /**
   * Makes a delta resident without a request (admin prefetch): into a free slot or the least
   * recently used unpinned one; false when it is not in host memory or every slot is pinned.
   */
  makeResident(name: string): boolean {
    if (this.slotTable.find(name) >= 0) return true;
    return this.place(name) !== undefined;
  }

  /** Keeps a delta resident until `unpinDelta` (admin pin); false when no slot can be freed now. */
  pinDelta(name: string): boolean {
    if (this.held.has(name)) return true;
    const slot = this.slotTable.find(name) >= 0 ? this.slotTable.find(name) : this.place(name);
    if (slot === undefined) return false;
    this.slotTable.pin(slot);
    this.held.add(name);
    return true;
  }

  unpinDelta(name: string): boolean {
    if (!this.held.delete(name)) return false;
    const slot = this.slotTable.find(name);
    if (slot >= 0) this.slotTable.unpin(slot);
    return true;
  }

  get pinnedDeltas(): string[] {
    return [...this.held];
  }

  /** Drops a delta from its slot (unless a running sequence uses it) and any admin pin. */
  forget(name: string): void {
    this.unpinDelta(name);
    this.slotTable.evict(name);
  }

  private admit(): void {
    if (this.failed.size) {
      for (const seq of [...this.waiting]) {
        const failure = seq.request.delta === null ? undefined : this.failed.get(seq.request.delta);
        if (!failure) continue;
        this.waiting.splice(this.waiting.indexOf(seq), 1);
        this.emit({ type: 'error', id: seq.id, code: failure.code, message: failure.message });
      }
      this.failed.clear();
    }
    for (let i = 0; i < this.waiting.length; i++) {
      if (this.decoding.length + this.prefilling.length >= this.runtime.options.maxRows) return;
      const seq = this.waiting[i]!;
      const wasResident = seq.request.delta !== null && this.slotTable.find(seq.request.delta) >= 0;
      const slot = seq.request.delta === null ? -1 : this.acquireSlot(seq.request.delta);
      if (slot === undefined) continue; // every slot pinned by running sequences; try the next request
      this.waiting.splice(i--, 1);
      this.emitAdmitted(seq, wasResident);
      seq.slot = slot;
      seq.row = this.decoding.length + this.prefilling.length;
      this.runtime.cache.clearRow(seq.row);
      this.prefilling.push(seq);
    }
  }

  /** Reports the end of a request's queue wait and where its delta came from. */
  private emitAdmitted(seq: Sequence, wasResident: boolean): void {
    const name = seq.request.delta;
    const load = name === null ? undefined : this.lastLoads.get(name);
    const waitedForLoad = load !== undefined && load.at >= seq.submittedAt;
    const deltaTier = name === null ? 'none' : waitedForLoad ? load.tier : wasResident ? 'slot' : 'host';
    this.emit({ type: 'admitted', id: seq.id, deltaTier, deltaLoadMs: waitedForLoad ? load.ms : 0 });
  }

  /**
   * Makes a delta resident and pins it; undefined when no slot can be freed now or the delta is
   * not in host memory (its load is then started, and the request waits for it).
   */
  private acquireSlot(name: string): number | undefined {
    let slot: number | undefined = this.slotTable.find(name);
    if (slot < 0) {
      slot = this.place(name);
      if (slot === undefined) return undefined;
    }
    this.slotTable.pin(slot);
    return slot;
  }

  /** Writes a host-memory delta into a free or evictable slot (unpinned); starts its load when it is cold. */
  private place(name: string): number | undefined {
    const victim = this.slotTable.chooseVictim();
    if (!victim) {
      // No slot now, but the load can proceed meanwhile.
      if (this.deltas.has && !this.deltas.has(name)) void this.requestLoad(name);
      return undefined;
    }
    const delta = this.deltas.lookup(name);
    if (!delta) {
      void this.requestLoad(name);
      return undefined;
    }
    this.runtime.slots.write(victim.slot, delta.modules);
    this.slotTable.assign(victim.slot, name);
    this.deltas.resident?.(name);
    return victim.slot;
  }

  /** Prefills up to `budget` tokens of the first prefilling sequence; returns how many it used. */
  private async prefillChunk(seq: Sequence, budget: number): Promise<number> {
    const chunk = seq.pending.splice(0, budget);
    const wantAll = seq.request.promptLogprobs;
    const logits = await this.runtime.forward({ firstRow: seq.row, tokens: [chunk], pastLengths: [seq.cached], slots: [seq.slot], logits: wantAll ? 'all' : 'last' });
    const vocab = this.runtime.arch.vocabSize;
    if (wantAll) this.emitPromptLogprobs(seq, chunk, logits, vocab);
    seq.cached += chunk.length;
    if (seq.pending.length) return chunk.length;
    this.prefilling.shift();
    const last = wantAll ? logits.subarray((chunk.length - 1) * vocab) : logits;
    this.decoding.push(seq);
    if (seq.request.maxTokens <= 0) this.finish(seq, 'length');
    else this.accept(seq, last);
    return chunk.length;
  }

  /** The leading prefilling sequences whose whole prompts fit the budget and can share one padded pass. */
  private wholePromptsWithin(budget: number): Sequence[] {
    const out: Sequence[] = [];
    for (const seq of this.prefilling) {
      if (seq.cached > 0 || seq.request.promptLogprobs || seq.pending.length > budget) break;
      budget -= seq.pending.length;
      out.push(seq);
    }
    return out;
  }

  /** Prefills several whole prompts in one right-padded pass; they then join the decode rows in order. */
  private async prefillTogether(batch: Sequence[]): Promise<number> {
    const tokens = batch.map((seq) => seq.pending);
    const logits = await this.runtime.forward({ firstRow: batch[0]!.row, tokens, pastLengths: batch.map(() => 0), slots: batch.map((seq) => seq.slot), logits: 'last' });
    const vocab = this.runtime.arch.vocabSize;
    for (const seq of batch) {
      seq.cached = seq.pending.length;
      seq.pending = [];
    }
    batch.forEach((seq, i) => {
      this.prefilling.shift();
      this.decoding.push(seq);
      if (seq.request.maxTokens <= 0) this.finish(seq, 'length');
      else this.accept(seq, logits.subarray(i * vocab, (i + 1) * vocab));
    });
    return tokens.reduce((sum, t) => sum + t.length, 0);
  }

  /** Prompt logprobs: position i's logits score prompt token i + 1; the first token has none. */
  private emitPromptLogprobs(seq: Sequence, chunk: number[], logits: Float32Array, vocab: number): void {
    const prompt = seq.request.promptIds;
    const out: (TokenLogprob | null)[] = seq.cached === 0 ? [null] : [];
    for (let i = 0; i < chunk.length; i++) {
      const nextIndex = seq.cached + i + 1;
      if (nextIndex >= prompt.length) break;
      const lp = logSoftmax(logits.subarray(i * vocab, (i + 1) * vocab));
      const token = prompt[nextIndex]!;
      out.push({ token, logprob: lp[token]!, top: seq.request.topLogprobs ? topK(lp, seq.request.topLogprobs) : undefined });
    }
    this.emit({ type: 'prompt', id: seq.id, logprobs: out });
  }

  private async decodeStep(): Promise<void> {
    const rows = [...this.decoding];
    const logits = await this.runtime.forward({
      firstRow: 0,
      tokens: rows.map((s) => [s.nextToken]),
      pastLengths: rows.map((s) => s.cached),
      slots: rows.map((s) => s.slot),
      logits: 'last',
    });
    const vocab = this.runtime.arch.vocabSize;
    // Every row's KV entry for this step is written now: count it before any row finishes, since
    // a finishing row back-fills its place with the last row, copying `cached` positions.
    for (const seq of rows) seq.cached++;
    rows.forEach((seq, r) => this.accept(seq, logits.subarray(r * vocab, (r + 1) * vocab)));
  }

  /**
   * Samples the next token and decides whether the sequence goes on. Logits that are not finite
   * (a delta whose weights overflow) end that sequence alone with an error; sampling from them
   * would silently pick an arbitrary token.
   */
  private accept(seq: Sequence, logits: Float32Array): void {
    if (firstNonFinite(logits) >= 0) return this.fail(seq, seq.request.delta === null ? 'internal_error' : 'invalid_delta', `${seq.request.delta === null ? 'the base model' : `delta '${seq.request.delta}'`} produced non-finite logits after ${seq.cached} tokens; the request was stopped`);
    const sampled = seq.sampler.sample(logits, { logprobs: seq.request.tokenLogprobs, top: seq.request.topLogprobs });
    if (seq.request.stopTokenIds.includes(sampled.token)) return this.finish(seq, 'stop');
    seq.generated.push(sampled.token);
    seq.nextToken = sampled.token;
    this.emit({ type: 'token', id: seq.id, token: sampled.token, logprob: sampled.logprob, top: sampled.top });
    const full = seq.cached + 1 >= this.runtime.options.maxContext;
    if (seq.generated.length >= seq.request.maxTokens || full) this.finish(seq, 'length');
  }

  /** Ends a running sequence with an error instead of a finish reason. */
  private fail(seq: Sequence, code: string, message: string): void {
    this.release(seq);
    this.emit({ type: 'error', id: seq.id, code, message });
  }

  private finish(seq: Sequence, reason: FinishReason): void {
    this.release(seq);
    this.emit({ type: 'done', id: seq.id, finishReason: reason, promptTokens: seq.request.promptIds.length, completionTokens: seq.generated.length });
  }

  /** Frees the sequence's row and slot pin, keeping decoding rows and the prefill block contiguous. */
  private release(seq: Sequence): void {
    if (seq.slot >= 0) this.slotTable.unpin(seq.slot);
    const cache = this.runtime.cache;
    const prefillIndex = this.prefilling.indexOf(seq);
    if (prefillIndex >= 0) {
      this.prefilling.splice(prefillIndex, 1);
      this.slidePrefills(prefillIndex);
    } else {
      const index = this.decoding.indexOf(seq);
      if (index < 0) return;
      const last = this.decoding.pop()!;
      if (last !== seq) {
        cache.moveRow(last.row, seq.row, last.cached);
        last.row = seq.row;
        this.decoding[index] = last;
      }
      this.slidePrefills(0);
    }
    seq.row = -1;
    seq.slot = -1;
    // The KV cache shrinks once the rows still live need much less than it holds.
    cache.fit(Math.max(0, ...[...this.decoding, ...this.prefilling].map((s) => s.cached + s.pending.length + s.request.maxTokens)));
  }

  /** Moves prefilling sequences from index `from` on down to their rows, d + index. */
  private slidePrefills(from: number): void {
    for (let i = from; i < this.prefilling.length; i++) {
      const seq = this.prefilling[i]!;
      const row = this.decoding.length + i;
      if (seq.row !== row) {
        this.runtime.cache.moveRow(seq.row, row, seq.cached);
        seq.row = row;
      }
    }
  }
}
