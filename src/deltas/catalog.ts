/** What the HTTP side knows about a delta (its weights live in the engine and the store). */
export interface DeltaRecord {
  /** The plain name, unique within its owner's namespace (two tenants may both have `support`). */
  name: string;
  /** Tenant that owns it. */
  owner: string;
  /** Usable by every tenant, not only its owner. */
  public: boolean;
  rank: number;
  modules: number;
  createdAt: number;
}

/**
 * The key a delta is registered under in the engine: `owner/name`. Tenant and delta names never
 * contain `/`, so the key is unique even when several tenants use the same name.
 */
export function deltaKey(owner: string, name: string): string {
  return `${owner}/${name}`;
}

/** The deltas this server can serve, keyed by owner and name. */
export class DeltaCatalog {
  private readonly records = new Map<string, DeltaRecord>();

  /** Adds a delta, replacing one with the same owner and name. */
  add(record: DeltaRecord): void {
    this.records.set(deltaKey(record.owner, record.name), record);
  }

  /** The delta `name` in `owner`'s namespace. */
  get(owner: string, name: string): DeltaRecord | undefined {
    return this.records.get(deltaKey(owner, name));
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
    return this.records.delete(deltaKey(owner, name));
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
