/**
 * Where deltas live: immutable versions of PEFT adapter files per owner and name. Every upload
 * is a new version; `name` means the latest, `name@N` pins one. Implementations: the filesystem
 * (under the data directory) and S3. A write is atomic: a reader sees a whole version or none.
 * The store is the one truth every replica shares (a replica's catalog is a cache of it): version
 * numbers are allocated by the store's atomic create, so they are distinct across replicas and
 * never reused, a delete leaves a tombstone, and a put with an idempotency key happens once.
 */
import type { ObjectStore } from './objects.js';
export interface DeltaFiles {
  /** adapter_config.json, byte for byte as uploaded. */
  config: Uint8Array;
  /** adapter_model.safetensors, byte for byte as uploaded. */
  weights: Uint8Array;
}

export interface DeltaVersion {
  owner: string;
  name: string;
  version: number;
  /** SHA-256 (hex) of the config bytes followed by the weight bytes; verified on every read. */
  sha256: string;
  /** Total bytes of both files. */
  size: number;
  createdAt: string;
  public: boolean;
  /** The delta kind (see deltas/kind.ts) and what validation found out about it, e.g. { rank, modules } for LoRA. */
  kind: string;
  summary: Record<string, number | string | boolean>;
  /** Positions it adds before every sequence (prompt and prefix tuning), so the server can check contexts without loading it. */
  virtualTokens: number;
}

export type NewDeltaVersion = Pick<DeltaVersion, 'owner' | 'name' | 'public' | 'kind' | 'summary' | 'virtualTokens'>;

export interface PutOptions {
  /**
   * A client's key for this upload: a put with a key already used for this owner and name returns
   * the version the first put created (IdempotencyError when the bytes differ).
   */
  idempotencyKey?: string;
}

export interface DeltaStore {
  /** Human-readable location for logs, e.g. 'file:///var/lib/deltaserve/deltas' or 's3://bucket/prefix'. */
  readonly location: string;
  /**
   * Stores a new immutable version, atomically: one above every version that ever existed
   * (deleted ones included), so a number is never reused; concurrent puts of one name, from any
   * replica, get distinct versions.
   */
  put(delta: NewDeltaVersion, files: DeltaFiles, options?: PutOptions): Promise<DeltaVersion>;
  /** One version's metadata (the latest when `version` is undefined), or null. */
  get(owner: string, name: string, version?: number): Promise<DeltaVersion | null>;
  /** The latest version of every delta, optionally of one owner. */
  list(owner?: string): Promise<DeltaVersion[]>;
  /** Every version of one delta, oldest first. */
  versions(owner: string, name: string): Promise<DeltaVersion[]>;
  /** The files of a version; throws DeltaIntegrityError when their SHA-256 differs from the recorded one. */
  read(version: DeltaVersion): Promise<DeltaFiles>;
  /**
   * Deletes every version of a delta (false when it had none): a tombstone records the highest
   * deleted number first, so every reader stops seeing them at once and the numbers stay taken;
   * the files are removed after.
   */
  delete(owner: string, name: string): Promise<boolean>;
  /** Records of another kind in the same store (training files, jobs), under their own namespace. */
  records(namespace: 'training'): ObjectStore;
}

/** Stored bytes that no longer match their recorded digest. */
export class DeltaIntegrityError extends Error {
  readonly code = 'delta_integrity';
  constructor(readonly delta: string, expected: string, actual: string) {
    super(`delta ${delta}: stored files have SHA-256 ${actual}, expected ${expected}`);
    this.name = 'DeltaIntegrityError';
  }
}
