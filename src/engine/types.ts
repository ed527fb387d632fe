import type { SamplingParams } from './sampler.js';

/** What the engine generates for one sequence; token ids in, token ids out. */
export interface GenerateRequest {
  id: string;
  promptIds: number[];
  /** Engine keys of the deltas the request stacks on its row (at most one per kind); [] for the base model. */
  deltas: string[];
  maxTokens: number;
  sampling: SamplingParams;
  /** Generation ends (finish_reason 'stop') when one of these is sampled; it is not emitted. */
  stopTokenIds: number[];
  /** Report log-probabilities of the prompt tokens (echo with logprobs). */
  promptLogprobs: boolean;
  /** Report each generated token's log-probability. */
  tokenLogprobs: boolean;
  /** How many most-likely alternatives to report per token (0: none). */
  topLogprobs: number;
  /** Epoch milliseconds after which the request is abandoned. */
  deadline?: number;
}

/**
 * A greedy request with no logprobs and no stop tokens: what benches and engine tests drive.
 *
 * @example scheduler.submit(greedyRequest('r1', [1, 2, 3], ['acme/sql@1'], 16));
 */
export function greedyRequest(id: string, promptIds: number[], deltas: string[], maxTokens: number): GenerateRequest {
  return {
    id,
    promptIds,
    deltas,
    maxTokens,
    sampling: { temperature: 0, topP: 1, topK: 0 },
    stopTokenIds: [],
    promptLogprobs: false,
    tokenLogprobs: false,
    topLogprobs: 0,
  };
}

export interface TokenLogprob {
  token: number;
  logprob: number;
  top?: { token: number; logprob: number }[];
}

/** Why a sequence ended: a stop token, its length (or the context), the client left, or `--request-timeout-ms` passed. */
export type FinishReason = 'stop' | 'length' | 'cancelled' | 'timeout';

/** Where a request's delta came from when it was admitted: already resident, or the tier that loaded it. */
export type DeltaTier = 'none' | 'slot' | 'host' | 'disk' | 'store';

export type GenerateEvent =
  | { type: 'queued'; id: string }
  /** The request got a batch row (queue wait ends); its delta is resident. */
  | { type: 'admitted'; id: string; deltaTier: DeltaTier; deltaLoadMs: number }
  | { type: 'prompt'; id: string; logprobs: (TokenLogprob | null)[] }
  | { type: 'token'; id: string; token: number; logprob: number; top?: { token: number; logprob: number }[] }
  | { type: 'done'; id: string; finishReason: FinishReason; promptTokens: number; completionTokens: number }
  /** `detail`: the raw cause (endpoints, paths) for the server's logs, never for clients. */
  | { type: 'error'; id: string; code: string; message: string; detail?: string };

/** Error codes the engine reports; the server maps them to HTTP statuses in one place. */
export type EngineErrorCode =
  | 'delta_not_found'
  | 'context_length_exceeded'
  | 'queue_full'
  | 'internal_error'
  | 'invalid_delta'
  | 'pin_limit'
  | 'slots_busy'
  | 'training_busy'
  | 'training_not_found'
  | 'training_cancelled'
  /** The delta store could not be read (down, slow, 5xx); a retry may succeed. */
  | 'store_unavailable'
  /** The engine thread died and is being restarted; a retry may succeed. */
  | 'engine_restarting';

const ENGINE_ERROR_CODES: ReadonlySet<string> = new Set<EngineErrorCode>(['delta_not_found', 'context_length_exceeded', 'queue_full', 'internal_error', 'invalid_delta', 'pin_limit', 'slots_busy', 'training_busy', 'training_not_found', 'training_cancelled', 'store_unavailable', 'engine_restarting']);

/** A code from the worker as an EngineErrorCode: anything unknown (an errno) is internal_error. */
export function engineErrorCode(code: string | undefined): EngineErrorCode {
  return code && ENGINE_ERROR_CODES.has(code) ? (code as EngineErrorCode) : 'internal_error';
}

export class EngineError extends Error {
  constructor(
    readonly code: EngineErrorCode,
    message: string,
    /** The raw cause, for logs only (it may name store endpoints or paths). */
    readonly detail?: string,
  ) {
    super(message);
    this.name = 'EngineError';
  }
}
