import { deltaKind } from '../deltas/kind.js';
import { firstNonFinite } from '../deltas/peft-lora.js';
import type { ModelRuntime, RowSlots } from './model-runtime.js';
import { PrefixCache } from './prefix-cache.js';
import { Residency, type DeltaLoad, type DeltaSource } from './residency.js';
import { logSoftmax, topK } from './sampler.js';
import { Sequence } from './sequence.js';
import { EngineError, type FinishReason, type GenerateEvent, type GenerateRequest, type TokenLogprob } from './types.js';

export interface SchedulerOptions {
  /** Prompt tokens prefilled per step, so a long prompt cannot stall running streams. */
  prefillChunk: number;
  maxQueue: number;
  /** Bytes of prompt-tuning virtual keys/values kept for reuse (see PrefixCache; default 64 MiB). */
  prefixCacheBytes?: number;
  /** Called when a delta load settles, so an idle engine loop runs a step. */
  wake?: () => void;
  /** Hears every finished delta load (telemetry). */
  onLoad?: (name: string, load: DeltaLoad) => void;
  /** Hooks a delta kind into the engine when a request first needs it (see ResidencyOptions). */
  enableKind?: (kind: string) => Promise<void>;
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
  readonly residency: Residency;
  private readonly prefixes: PrefixCache;

  constructor(
    private readonly runtime: ModelRuntime,
    private readonly deltas: DeltaSource,
    private readonly emit: (event: GenerateEvent) => void,
    private readonly options: SchedulerOptions,
  ) {
    this.residency = new Residency(runtime.stacks, deltas, { wake: options.wake, onLoad: options.onLoad, enableKind: options.enableKind });
    this.prefixes = new PrefixCache(options.prefixCacheBytes ?? 64 * 1024 ** 2);
  }

  /** Nothing to do until a message or a load arrives: every waiting request (if any) waits for a load in flight. */
  get idle(): boolean {
    return this.prefilling.length === 0 && this.decoding.length === 0 && !this.residency.hasFailures && this.waiting.every((seq) => seq.request.deltas.some((d) => this.residency.isLoading(d)));
  }

  /** Delta loads in flight. */
  get loads(): number {
    return this.residency.loads;
  }

  /** Deltas of the rows in flight and of the waiting requests (for routers' LoRA affinity). */
  get deltaUse(): { running: string[]; waiting: string[] } {
    const names = (seqs: Sequence[]) => [...new Set(seqs.flatMap((s) => s.request.deltas))];
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
      residentSlots: this.residency.residentCount,
      pinnedDeltas: this.residency.pinned.length,
      loadsInFlight: this.residency.loads,
      prefixCacheEntries: this.prefixes.size,
    };
  }

  submit(request: GenerateRequest): void {
    if (request.deltas.length && !this.deltas.load && request.deltas.some((d) => !this.deltas.lookup(d))) throw new EngineError('delta_not_found', `delta '${request.deltas.find((d) => !this.deltas.lookup(d))}' is not registered`);
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

  /**
   * Runs one iteration: retire, admit, one prefill chunk, one decode step. A pass that throws
   * (an ORT error, a bug) ends the sequences running now with an error and leaves the engine
   * serving: without this, one request that trips an error would stop decoding for everyone.
   */
  async step(): Promise<void> {
    this.retireAbandoned();
    this.admit();
    try {
      let budget = this.options.prefillChunk;
      const together = this.wholePromptsWithin(budget);
      if (together.length > 1) budget -= await this.prefillTogether(together);
      while (budget > 0 && this.prefilling.length) budget -= await this.prefillChunk(this.prefilling[0]!, budget);
      if (this.decoding.length) await this.decodeStep();
    } catch (err) {
      const message = `the engine failed a pass (${(err as Error).message.slice(0, 200)}); the request was stopped`;
      for (const seq of [...this.decoding, ...this.prefilling]) this.fail(seq, 'internal_error', message);
    }
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

  /** Ends the waiting requests whose deltas failed to load with that failure. */
  private failWaiting(): void {
    const failures = this.residency.takeFailures();
    if (!failures.size) return;
    for (const seq of [...this.waiting]) {
      const failure = seq.request.deltas.map((d) => failures.get(d)).find((f) => f !== undefined);
      if (!failure) continue;
      this.waiting.splice(this.waiting.indexOf(seq), 1);
      this.emit({ type: 'error', id: seq.id, code: failure.code, message: failure.message, ...(failure.detail ? { detail: failure.detail } : {}) });
    }
  }

  private admit(): void {
    this.failWaiting();
    for (let i = 0; i < this.waiting.length; i++) {
      if (this.decoding.length + this.prefilling.length >= this.runtime.options.maxRows) return;
      const seq = this.waiting[i]!;
      const wereResident = this.residency.allResident(seq.request.deltas);
      let slots: RowSlots | undefined;
      try {
        slots = this.residency.acquire(seq.request.deltas);
      } catch (err) {
        this.waiting.splice(i--, 1);
        this.emit({ type: 'error', id: seq.id, code: (err as EngineError).code ?? 'internal_error', message: (err as Error).message });
        continue;
      }
      if (!slots) continue; // a delta is loading, or every slot of its kind is in use; try the next request
      this.waiting.splice(i--, 1);
      const loaded = this.residency.tierOf(seq.request.deltas, seq.submittedAt, wereResident);
      this.emit({ type: 'admitted', id: seq.id, deltaTier: loaded.tier, deltaLoadMs: loaded.ms });
      seq.slots = slots;
      seq.row = this.decoding.length + this.prefilling.length;
      this.runtime.cache.clearRow(seq.row);
      this.prefilling.push(seq);
      this.startVirtual(seq); // ends the request itself if its virtual tokens cannot be placed
    }
  }

  /**
   * Puts a row's virtual positions in place before its own tokens: a prefix-tuning delta's keys
   * and values written straight into the row's cache; a prompt-tuning delta's virtual tokens from
   * the prefix cache, or queued for prefill (and kept once computed). False when the request
   * cannot run (it has been ended with an error).
   */
  private startVirtual(seq: Sequence): boolean {
    const virtual = seq.request.deltas.map((d) => ({ name: d, shape: this.residency.shape(d)! })).filter((d) => d.shape.virtualTokens > 0);
    if (!virtual.length) return true;
    if (virtual.length > 1) return this.refuse(seq, 'invalid_delta', `a row may have one delta with virtual tokens; ${virtual.map((v) => v.name).join(' and ')} both add some`);
    const [{ name, shape }] = virtual as [(typeof virtual)[number]];
    const n = shape.virtualTokens;
    const limit = this.runtime.options.maxContext;
    if (n + seq.request.promptIds.length + Math.max(seq.request.maxTokens, 1) > limit) {
      return this.refuse(seq, 'context_length_exceeded', `delta '${name}' adds ${n} virtual tokens; with the prompt's ${seq.request.promptIds.length} and max tokens ${seq.request.maxTokens} that exceeds the context of ${limit}`);
    }
    seq.virtual = n;
    const kind = deltaKind(shape.kind);
    try {
      if (kind.prefixKeyValues) {
        const stacks = this.runtime.stacks.get(shape.kind)!;
        const slot = seq.slots![shape.kind]!;
        this.runtime.cache.writePrefix(seq.row, kind.prefixKeyValues((t) => stacks.range(t, slot, slot + 1), n, this.runtime.arch), n);
        seq.cached = n;
        return true;
      }
      const key = PrefixCache.key(seq.request.deltas);
      const cached = this.prefixes.get(key);
      if (cached) {
        this.runtime.cache.writePrefix(seq.row, cached, n);
        seq.cached = n;
      } else {
        seq.pending = [...Array.from({ length: n }, (_, k) => -(k + 1)), ...seq.pending];
        seq.capturePrefix = key;
      }
      return true;
    } catch (err) {
      return this.refuse(seq, (err as EngineError).code ?? 'internal_error', (err as Error).message);
    }
  }

  /** Ends a just-admitted sequence with an error; returns false for startVirtual. */
  private refuse(seq: Sequence, code: string, message: string): false {
    this.fail(seq, code, message);
    return false;
  }

  /** Keeps a prompt-tuning row's freshly computed virtual keys/values for the next row with the same deltas. */
  private capture(seq: Sequence): void {
    if (!seq.capturePrefix || seq.cached < seq.virtual) return;
    const layers = this.runtime.cache.readPrefix(seq.row, seq.virtual);
    if (layers) this.prefixes.set(seq.capturePrefix, layers);
    seq.capturePrefix = null;
  }

  /**
   * Loads a delta into host memory through the residency manager (one load however many callers),
   * resolving with its failure if it fails.
   */
  requestLoad(name: string) {
    return this.residency.requestLoad(name);
  }

  /** Drops a delta from its slot, any admin pin, and every prompt prefix computed with it. */
  forget(name: string): void {
    this.residency.forget(name);
    this.prefixes.forget(name);
  }

  /** Prefills up to `budget` tokens of the first prefilling sequence; returns how many it used. */
  private async prefillChunk(seq: Sequence, budget: number): Promise<number> {
    const chunk = seq.pending.splice(0, budget);
    const wantAll = seq.request.promptLogprobs;
    const logits = await this.runtime.forward({ firstRow: seq.row, tokens: [chunk], pastLengths: [seq.cached], slots: [seq.slots!], logits: wantAll ? 'all' : 'last' });
    const vocab = this.runtime.arch.vocabSize;
    if (wantAll) this.emitPromptLogprobs(seq, chunk, logits, vocab);
    seq.cached += chunk.length;
    this.capture(seq);
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
    const logits = await this.runtime.forward({ firstRow: batch[0]!.row, tokens, pastLengths: batch.map(() => 0), slots: batch.map((seq) => seq.slots!), logits: 'last' });
    const vocab = this.runtime.arch.vocabSize;
    for (const seq of batch) {
      seq.cached = seq.pending.length;
      seq.pending = [];
      this.capture(seq);
    }
    batch.forEach((seq, i) => {
      this.prefilling.shift();
      this.decoding.push(seq);
      if (seq.request.maxTokens <= 0) this.finish(seq, 'length');
      else this.accept(seq, logits.subarray(i * vocab, (i + 1) * vocab));
    });
    return tokens.reduce((sum, t) => sum + t.length, 0);
  }

  /**
   * Prompt logprobs of the request's own tokens: the logits at absolute position p score the token
   * at p + 1; virtual positions are the deltas', not the request's, and its first token has none.
   */
  private emitPromptLogprobs(seq: Sequence, chunk: number[], logits: Float32Array, vocab: number): void {
    const prompt = seq.request.promptIds;
    const out: (TokenLogprob | null)[] = seq.cached <= seq.virtual && seq.virtual < seq.cached + chunk.length ? [null] : [];
    for (let i = 0; i < chunk.length; i++) {
      const nextIndex = seq.cached + i + 1 - seq.virtual;
      if (nextIndex < 1) continue;
      if (nextIndex >= prompt.length) break;
      const lp = logSoftmax(logits.subarray(i * vocab, (i + 1) * vocab));
      const token = prompt[nextIndex]!;
      out.push({ token, logprob: lp[token]!, top: seq.request.topLogprobs ? topK(lp, seq.request.topLogprobs) : undefined });
    }
    if (out.length) this.emit({ type: 'prompt', id: seq.id, logprobs: out });
  }

  private async decodeStep(): Promise<void> {
    const rows = [...this.decoding];
    const logits = await this.runtime.forward({
      firstRow: 0,
      tokens: rows.map((s) => [s.nextToken]),
      pastLengths: rows.map((s) => s.cached),
      slots: rows.map((s) => s.slots!),
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
    if (firstNonFinite(logits) >= 0) return this.fail(seq, seq.request.deltas.length ? 'invalid_delta' : 'internal_error', `${seq.request.deltas.length ? `delta '${seq.request.deltas.join('+')}'` : 'the base model'} produced non-finite logits after ${seq.cached} tokens; the request was stopped`);
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

  /** Frees the sequence's row and slot pins, keeping decoding rows and the prefill block contiguous. */
  private release(seq: Sequence): void {
    if (seq.slots) this.residency.release(seq.slots);
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
    seq.slots = null;
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
