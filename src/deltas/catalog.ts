/** What the HTTP side knows about a delta (its weights live in the engine and the store). */
export interface DeltaRecord {
  /** The plain name, unique within its owner's namespace (two tenants may both have `support`). */
  name: string;
  /** Tenant that owns it. */
  owner: string;
  /** Usable by every tenant, not only its owner. */
  public: boolean;
  /** The latest version's kind, summary and virtual tokens (see DeltaVersion). */
  kind: string;
  summary: Record<string, number | string | boolean>;
  virtualTokens: number;
  createdAt: number;
  /** The latest version; `name` alone means this one. */
  version: number;
  /** Every stored version, oldest first (`name@N` pins one). */
  versions: number[];
  /** Stored bytes of every version together (what the tenant's storage quota counts). */
  bytes: number;
}

const recordKey = (owner: string, name: string) => `${owner}/${name}`;

/** The deltas this server can serve, keyed by owner and name. */
export class DeltaCatalog {
  private readonly records = new Map<string, DeltaRecord>();

  /** Adds a delta, replacing one with the same owner and name. */
  add(record: DeltaRecord): void {
    this.records.set(recordKey(record.owner, record.name), record);
  }

  /** The delta `name` in `owner`'s namespace. */
  get(owner: string, name: string): DeltaRecord | undefined {
    return this.records.get(recordKey(owner, name));
  }

  /** Every delta called `name`, whoever owns it (visible to the caller or not), oldest first. */
  find(name: string): DeltaRecord[] {
    return this.list().filter((r) => r.name === name);
  }

  /** The deltas `tenant` may use: its own and every public one, oldest first. */
  visibleTo(tenant: string): DeltaRecord[] {
    return this.list().filter((r) => isVisible(r, tenant));
  }

  remove(owner: string, name: string): boolean {
    return this.records.delete(recordKey(owner, name));
  }

  /** Deltas and stored bytes of one owner (for quotas). */
  usage(owner: string): { deltas: number; bytes: number } {
    let deltas = 0;
    let bytes = 0;
    for (const r of this.records.values()) {
      if (r.owner !== owner) continue;
      deltas++;
      bytes += r.bytes;
    }
    return { deltas, bytes };
  }

  /** Every delta, oldest first. */
  list(): DeltaRecord[] {
    return [...this.records.values()].sort((a, b) => a.createdAt - b.createdAt || a.owner.localeCompare(b.owner) || a.name.localeCompare(b.name));
  }
}

/** A tenant may use its own deltas and public ones, nothing else. */
export function isVisible(record: DeltaRecord, tenant: string): boolean {
  return record.owner === tenant || record.public;
}
