/**
 * Where deltas live: immutable versions of PEFT adapter files per owner and name. Every upload
 * is a new version; `name` means the latest, `name@N` pins one. Implementations: the filesystem
 * (under the data directory) and S3. A write is atomic: a reader sees a whole version or none.
 */
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

export interface DeltaStore {
  /** Human-readable location for logs, e.g. 'file:///var/lib/deltaserve/deltas' or 's3://bucket/prefix'. */
  readonly location: string;
  /** Stores a new immutable version (latest + 1), atomically; concurrent puts of one name get distinct versions. */
  put(delta: NewDeltaVersion, files: DeltaFiles): Promise<DeltaVersion>;
  /** One version's metadata (the latest when `version` is undefined), or null. */
  get(owner: string, name: string, version?: number): Promise<DeltaVersion | null>;
  /** The latest version of every delta, optionally of one owner. */
  list(owner?: string): Promise<DeltaVersion[]>;
  /** Every version of one delta, oldest first. */
  versions(owner: string, name: string): Promise<DeltaVersion[]>;
  /** The files of a version; throws DeltaIntegrityError when their SHA-256 differs from the recorded one. */
  read(version: DeltaVersion): Promise<DeltaFiles>;
  /** Removes every version of a delta; false when it did not exist. */
  delete(owner: string, name: string): Promise<boolean>;
}

/** Stored bytes that no longer match their recorded digest. */
export class DeltaIntegrityError extends Error {
  readonly code = 'delta_integrity';
  constructor(readonly delta: string, expected: string, actual: string) {
    super(`delta ${delta}: stored files have SHA-256 ${actual}, expected ${expected}`);
    this.name = 'DeltaIntegrityError';
  }
}
