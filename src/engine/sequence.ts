import { Sampler } from './sampler.js';
import type { RowSlots } from './model-runtime.js';
import type { GenerateRequest } from './types.js';

/** One generation in flight: where it lives in the cache and what it still has to do. */
export class Sequence {
  /** Tokens already written to this sequence's KV-cache row. */
  cached = 0;
  /** Prompt tokens not yet prefilled; virtual tokens (prompt tuning) come first, as -(k + 1). */
  pending: number[];
  /** Positions the row's deltas occupy before the request's own tokens (prompt and prefix tuning). */
  virtual = 0;
  /** The prompt-tuning prefix these virtual tokens compute, to keep once they are prefilled (see PrefixCache). */
  capturePrefix: string | null = null;
  generated: number[] = [];
  /** The last sampled token, fed at the next decode step. */
  nextToken = -1;
  row = -1;
  /** The row's resident deltas (kind → slot) once admitted. */
  slots: RowSlots | null = null;
  cancelled = false;
  readonly sampler: Sampler;
  readonly submittedAt = performance.now();

  constructor(readonly request: GenerateRequest) {
    this.pending = [...request.promptIds];
    this.sampler = new Sampler(request.sampling);
  }

  get id(): string {
    return this.request.id;
  }

  get expired(): boolean {
    return this.request.deadline !== undefined && Date.now() > this.request.deadline;
  }
}
