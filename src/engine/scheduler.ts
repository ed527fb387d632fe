import type { LoraDelta } from '../deltas/peft-lora.js';
import type { ModelRuntime } from './model-runtime.js';
import { logSoftmax, topK } from './sampler.js';
import { Sequence } from './sequence.js';
import { SlotTable } from './slot-table.js';
import { EngineError, type FinishReason, type GenerateEvent, type GenerateRequest, type TokenLogprob } from './types.js';

export interface SchedulerOptions {
  /** Prompt tokens prefilled per step, so a long prompt cannot stall running streams. */
  prefillChunk: number;
  maxQueue: number;
}

/** Where the scheduler finds a delta's weights when it must make it resident. */
export interface DeltaSource {
  lookup(name: string): LoraDelta | undefined;
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
  readonly slotTable: SlotTable;

  constructor(
    private readonly runtime: ModelRuntime,
    private readonly deltas: DeltaSource,
    private readonly emit: (event: GenerateEvent) => void,
    private readonly options: SchedulerOptions,
  ) {
    this.slotTable = new SlotTable(runtime.slots.slots);
  }

  get idle(): boolean {
    return this.prefilling.length === 0 && this.decoding.length === 0 && this.waiting.length === 0;
  }

  get stats() {
    return { waiting: this.waiting.length, decoding: this.decoding.length, running: this.decoding.length + this.prefilling.length, residentSlots: this.slotTable.occupants.filter(Boolean).length };
  }

  submit(request: GenerateRequest): void {
    if (request.delta !== null && !this.deltas.lookup(request.delta)) throw new EngineError('delta_not_found', `delta '${request.delta}' is not registered`);
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
        this.finish(seq, seq.cancelled ? 'cancelled' : 'deadline');
      }
    }
    for (const seq of [...this.decoding, ...this.prefilling]) {
      if (seq.cancelled || seq.expired) this.finish(seq, seq.cancelled ? 'cancelled' : 'deadline');
    }
  }

  private admit(): void {
    for (let i = 0; i < this.waiting.length; i++) {
      if (this.decoding.length + this.prefilling.length >= this.runtime.options.maxRows) return;
      const seq = this.waiting[i]!;
      const slot = seq.request.delta === null ? -1 : this.acquireSlot(seq.request.delta);
      if (slot === undefined) continue; // every slot pinned by running sequences; try the next request
      this.waiting.splice(i--, 1);
      seq.slot = slot;
      seq.row = this.decoding.length + this.prefilling.length;
      this.prefilling.push(seq);
    }
  }

  /** Makes a delta resident and pins it; undefined when no slot can be freed now. */
  private acquireSlot(name: string): number | undefined {
    let slot = this.slotTable.find(name);
    if (slot < 0) {
      const victim = this.slotTable.chooseVictim();
      if (!victim) return undefined;
      slot = victim.slot;
      this.runtime.slots.write(slot, this.deltas.lookup(name)!.modules);
      this.slotTable.assign(slot, name);
    }
    this.slotTable.pin(slot);
    return slot;
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

  /** Samples the next token and decides whether the sequence goes on. */
  private accept(seq: Sequence, logits: Float32Array): void {
    const sampled = seq.sampler.sample(logits, { logprobs: seq.request.tokenLogprobs, top: seq.request.topLogprobs });
    if (seq.request.stopTokenIds.includes(sampled.token)) return this.finish(seq, 'stop');
    seq.generated.push(sampled.token);
    seq.nextToken = sampled.token;
    this.emit({ type: 'token', id: seq.id, token: sampled.token, logprob: sampled.logprob, top: sampled.top });
    const full = seq.cached + 1 >= this.runtime.options.maxContext;
    if (seq.generated.length >= seq.request.maxTokens || full) this.finish(seq, 'length');
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
