/** What the HTTP side knows about a delta (its weights live in the engine and the store). */
export interface DeltaRecord {
  name: string;
  /** Tenant that owns it. */
  owner: string;
  public: boolean;
  rank: number;
  modules: number;
  createdAt: number;
}

/** The deltas this server can serve, by name. */
export class DeltaCatalog {
  private readonly records = new Map<string, DeltaRecord>();

  add(record: DeltaRecord): void {
    this.records.set(record.name, record);
  }

  get(name: string): DeltaRecord | undefined {
    return this.records.get(name);
  }

  remove(name: string): boolean {
    return this.records.delete(name);
  }

  list(): DeltaRecord[] {
    return [...this.records.values()].sort((a, b) => a.createdAt - b.createdAt || a.name.localeCompare(b.name));
  }
}
