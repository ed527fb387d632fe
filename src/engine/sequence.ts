import { Sampler } from './sampler.js';
import type { GenerateRequest } from './types.js';

/** One generation in flight: where it lives in the cache and what it still has to do. */
export class Sequence {
  /** Tokens already written to this sequence's KV-cache row. */
  cached = 0;
  /** Prompt tokens not yet prefilled. */
  pending: number[];
  generated: number[] = [];
  /** The last sampled token, fed at the next decode step. */
  nextToken = -1;
  row = -1;
  slot = -1;
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
