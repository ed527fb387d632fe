import type { Engine } from '../engine/client.js';
import type { DeltaCatalog } from '../deltas/catalog.js';
import type { ChatTemplate } from '../model/chat-template.js';
import type { TextTokenizer } from '../model/tokenizer.js';

/** What routes need from the running server; `engine` is undefined until the model is loaded. */
export interface ServerState {
  modelName: string;
  engine?: Engine;
  tokenizer?: TextTokenizer;
  chatTemplate?: ChatTemplate | null;
  deltas: DeltaCatalog;
  /** Largest accepted request body in bytes. */
  maxBodyBytes: number;
  /** Abandon a generation this long after it arrived (0: never). */
  requestTimeoutMs: number;
  startedAt: number;
}

declare module 'hono' {
  interface ContextVariableMap {
    requestId: string;
  }
}
