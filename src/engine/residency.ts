import type { ParsedDelta } from '../deltas/kind.js';
import type { RowSlots } from './model-runtime.js';
import type { SlotStacks } from './slot-stacks.js';
import { SlotTable } from './slot-table.js';
import { EngineError } from './types.js';

/**
 * Where the residency manager finds a delta's weights when it must make it resident. `lookup` is
 * synchronous (host memory); a source with `load` can fetch a cold delta asynchronously, after
 * which `lookup` returns it. Without `load`, a delta `lookup` does not know does not exist.
 */
export interface DeltaSource {
  lookup(name: string): ParsedDelta | undefined;
  /** Whether `lookup` would find it, without counting as a use. */
  has?(name: string): boolean;
  /** Brings a delta into host memory; rejects (EngineError delta_not_found, or any error) when it cannot. */
  load?(name: string): Promise<DeltaLoad | void>;
  /** The delta was written into a slot. */
  resident?(name: string): void;
}

/** Which tier a finished load read from, and how long it took (parse and layout included). */
export interface DeltaLoad {
  tier: 'host' | 'disk' | 'store';
  ms: number;
}

/** Why a delta load failed: code delta_not_found, invalid_delta, store_unavailable or internal_error; `detail` is for logs. */
export interface LoadFailure {
  code: string;
  message: string;
  detail?: string;
}

/** Load failure codes reported as they are; anything else is an internal error. */
const LOAD_CODES = new Set(['delta_not_found', 'invalid_delta', 'store_unavailable']);

/** What the rest of the engine may know about a delta without holding it: its kind and virtual tokens. */
export interface DeltaShape {
  kind: string;
  virtualTokens: number;
}

export interface ResidencyOptions {
  /** Called when a load settles, so an idle engine loop runs a step. */
  wake?: () => void;
  /**
   * Hooks a delta kind into the engine (ModelRuntime.enableKinds); its slots exist once the
   * promise settles and the runtime has committed it. Without it, a delta of a kind that has no
   * slots is refused.
   */
  enableKind?: (kind: string) => Promise<void>;
  /** Hears every finished delta load (telemetry). */
  onLoad?: (name: string, load: DeltaLoad) => void;
}

/**
 * The resident deltas, per kind (as vLLM separates its LoRA manager from its scheduler): one slot
 * table per kind over that kind's slot stacks, loads in flight (one per delta however many
 * requests wait for it), failed loads, admin pins and least-recently-used eviction. The scheduler
 * only asks `acquire(row's deltas) → slots | undefined` and gives them back with `release`.
 */
export class Residency {
  private readonly tables = new Map<string, SlotTable>();
  private readonly loading = new Map<string, Promise<LoadFailure | undefined>>();
  /** Loads that failed since the scheduler last collected them; the requests waiting for them end with this error. */
  private readonly failures = new Map<string, LoadFailure>();
  /** Deltas an operator pinned resident (admin pin); each holds one slot pin of its kind. */
  private readonly held = new Set<string>();
  /** The last completed load of each delta, so requests that waited for it can report its tier. */
  private readonly lastLoads = new Map<string, DeltaLoad & { at: number }>();
  /** Kind and virtual tokens of every delta seen in host memory (a few bytes each, bounded below). */
  private readonly shapes = new Map<string, DeltaShape>();
  /** Kinds being hooked into the engine, and the deltas waiting for them. */
  private readonly enabling = new Map<string, Promise<void>>();
  private readonly waitingForKind = new Map<string, string>();

  constructor(
    private readonly stacks: ReadonlyMap<string, SlotStacks>,
    private readonly source: DeltaSource,
    private readonly options: ResidencyOptions = {},
  ) {}

  /** A kind's slot table, made when its slot stacks first exist (kinds are hooked in on demand). */
  private table(kind: string): SlotTable | undefined {
    let table = this.tables.get(kind);
    const stacks = this.stacks.get(kind);
    if (!table && stacks) this.tables.set(kind, (table = new SlotTable(stacks.slots)));
    return table;
  }

  /** Delta loads in flight. */
  get loads(): number {
    return this.loading.size;
  }

  /** Whether a delta is on its way: loading, or its kind being hooked into the engine. */
  isLoading(name: string): boolean {
    const kind = this.waitingForKind.get(name);
    return this.loading.has(name) || (kind !== undefined && this.enabling.has(kind));
  }

  /** The kind and virtual tokens of a delta in host memory or resident (undefined until it was loaded once). */
  shape(name: string): DeltaShape | undefined {
    return this.shapes.get(name) ?? this.remember(this.source.has?.(name) === false ? undefined : this.source.lookup(name));
  }

  /** Failed loads since the last call, by delta; the caller ends the requests waiting for them. */
  takeFailures(): Map<string, LoadFailure> {
    const out = new Map(this.failures);
    this.failures.clear();
    return out;
  }

  get hasFailures(): boolean {
    return this.failures.size > 0;
  }

  /**
   * Makes every delta of a row resident and pins their slots, all or none; undefined when that is
   * not possible now (a delta is cold — its load is started — or every slot of its kind is in
   * use). Two deltas of one kind on a row is an EngineError: a row has one slot per kind.
   */
  acquire(names: readonly string[]): RowSlots | undefined {
    const slots: Record<string, number> = {};
    const pinned: [SlotTable, number][] = [];
    for (const name of names) {
      const slot = this.slotFor(name);
      if (!slot) {
        for (const [table, s] of pinned) table.unpin(s);
        return undefined;
      }
      if (slots[slot.kind] !== undefined) {
        for (const [table, s] of pinned) table.unpin(s);
        throw new EngineError('invalid_delta', `a row may use one delta of each kind; ${names.join(' and ')} include two ${slot.kind} deltas`);
      }
      slot.table.pin(slot.slot);
      pinned.push([slot.table, slot.slot]);
      slots[slot.kind] = slot.slot;
    }
    return slots;
  }

  /** Gives back the slot pins a row held. */
  release(row: RowSlots): void {
    for (const [kind, slot] of Object.entries(row)) this.table(kind)?.unpin(slot);
  }

  /** Whether every delta of a row is resident right now (an admission would not wait). */
  allResident(names: readonly string[]): boolean {
    return names.every((n) => this.residentSlot(n) !== undefined);
  }

  /** The slot a delta occupies, or undefined. */
  residentSlot(name: string): { kind: string; slot: number } | undefined {
    for (const [kind, table] of this.tables) {
      const slot = table.find(name);
      if (slot >= 0) return { kind, slot };
    }
    return undefined;
  }

  /** Where a request's deltas came from when it was admitted: already resident, host memory, or the tier that loaded them. */
  tierOf(names: readonly string[], submittedAt: number, wereResident: boolean): { tier: 'none' | 'slot' | 'host' | 'disk' | 'store'; ms: number } {
    if (names.length === 0) return { tier: 'none', ms: 0 };
    const loads = names.map((n) => this.lastLoads.get(n)).filter((l): l is DeltaLoad & { at: number } => l !== undefined && l.at >= submittedAt);
    if (loads.length) return loads.reduce((a, b) => (b.ms > a.ms ? { tier: b.tier, ms: b.ms } : a), { tier: loads[0]!.tier, ms: loads[0]!.ms });
    return { tier: wereResident ? 'slot' : 'host', ms: 0 };
  }

  /**
   * Starts loading a cold delta unless a load of it is in flight; resolves when it settles, with
   * the failure if it failed (never rejects: the failure is also recorded for takeFailures).
   */
  requestLoad(name: string): Promise<LoadFailure | undefined> {
    const inFlight = this.loading.get(name);
    if (inFlight) return inFlight;
    if (!this.source.load) {
      const failure = { code: 'delta_not_found', message: `delta '${name}' is not registered` };
      this.failures.set(name, failure);
      return Promise.resolve(failure);
    }
    const settled = this.source.load(name).then(
      (load) => {
        this.remember(this.source.lookup(name));
        if (!load) return undefined;
        this.lastLoads.delete(name);
        this.lastLoads.set(name, { ...load, at: performance.now() });
        if (this.lastLoads.size > 4096) this.lastLoads.delete(this.lastLoads.keys().next().value!);
        this.options.onLoad?.(name, load);
        return undefined;
      },
      (err: Error & { code?: string; detail?: string }) => {
        const code = err.code && LOAD_CODES.has(err.code) ? err.code : 'internal_error';
        const failure = { code, message: `delta '${name}' could not be loaded: ${err.message}`, detail: err.detail };
        this.failures.set(name, failure);
        return failure;
      },
    );
    const tracked = settled.finally(() => {
      this.loading.delete(name);
      this.options.wake?.();
    });
    this.loading.set(name, tracked);
    return tracked;
  }

  /** Makes a delta resident without a request (admin prefetch); false when it is not in host memory or every slot of its kind is pinned. */
  makeResident(name: string): boolean {
    return this.residentSlot(name) !== undefined || this.place(name) !== undefined;
  }

  /**
   * Keeps a delta resident until `unpin` (admin pin); false when no slot can be freed now. At
   * most slots - 1 deltas of one kind may be pinned, so serving can always proceed.
   */
  pin(name: string): boolean {
    if (this.held.has(name)) return true;
    const shape = this.shape(name);
    if (!shape) return false;
    const stacks = this.stacks.get(shape.kind);
    if (!stacks) return false;
    const slots = stacks.slots;
    const pinnedOfKind = [...this.held].filter((n) => this.shapes.get(n)?.kind === shape.kind);
    if (pinnedOfKind.length >= slots - 1) {
      throw new EngineError('pin_limit', `at most ${slots - 1} of ${slots} ${shape.kind} slots may be pinned, so serving can always proceed; pinned: ${pinnedOfKind.join(', ') || 'none'}`);
    }
    const at = this.residentSlot(name) ?? this.place(name);
    if (!at) return false;
    this.table(at.kind)!.pin(at.slot);
    this.held.add(name);
    return true;
  }

  unpin(name: string): boolean {
    if (!this.held.delete(name)) return false;
    const at = this.residentSlot(name);
    if (at) this.table(at.kind)!.unpin(at.slot);
    return true;
  }

  get pinned(): string[] {
    return [...this.held];
  }

  /** Drops a delta from its slot (unless a running sequence uses it) and any admin pin. */
  forget(name: string): void {
    this.unpin(name);
    const kind = this.shapes.get(name)?.kind;
    if (kind !== undefined) this.table(kind)?.evict(name);
    this.shapes.delete(name);
  }

  /** Slots holding a delta, over every kind. */
  get residentCount(): number {
    let n = 0;
    for (const table of this.tables.values()) n += table.occupants.filter(Boolean).length;
    return n;
  }

  /** Faults in the next untouched slot of any kind; false when all are. */
  prefaultNext(): boolean {
    for (const s of this.stacks.values()) if (s.prefaultNext()) return true;
    return false;
  }

  /** The slot a delta holds or can take now (written and assigned, not yet pinned). */
  private slotFor(name: string): { kind: string; table: SlotTable; slot: number } | undefined {
    const at = this.residentSlot(name) ?? this.place(name);
    return at && { ...at, table: this.table(at.kind)! };
  }

  /** Writes a host-memory delta into a free or evictable slot of its kind; starts its load when it is cold. */
  private place(name: string): { kind: string; slot: number } | undefined {
    const delta = this.source.lookup(name);
    if (!delta) {
      void this.requestLoad(name);
      return undefined;
    }
    this.remember(delta);
    const table = this.table(delta.kind);
    if (!table) {
      if (!this.options.enableKind) throw new EngineError('invalid_delta', `delta '${name}' is a ${delta.kind} delta, which this engine has no place for`);
      this.requestKind(delta.kind, name);
      return undefined;
    }
    const victim = table.chooseVictim();
    if (!victim) return undefined;
    this.stacks.get(delta.kind)!.write(victim.slot, delta);
    table.assign(victim.slot, name);
    this.source.resident?.(name);
    return { kind: delta.kind, slot: victim.slot };
  }

  /** Starts hooking a kind into the engine (once however many deltas wait); a failure ends the deltas waiting for it. */
  private requestKind(kind: string, name: string): void {
    this.waitingForKind.set(name, kind);
    if (this.enabling.has(kind)) return;
    const settled = this.options.enableKind!(kind).then(
      () => undefined,
      (err: Error & { code?: string }) => {
        for (const [waiting, k] of this.waitingForKind) if (k === kind) this.failures.set(waiting, { code: err.code ?? 'internal_error', message: `delta '${waiting}' cannot be served: ${err.message}` });
      },
    );
    this.enabling.set(kind, settled.finally(() => {
      this.enabling.delete(kind);
      for (const [waiting, k] of [...this.waitingForKind]) if (k === kind) this.waitingForKind.delete(waiting);
      this.options.wake?.();
    }));
  }

  private remember(delta: ParsedDelta | undefined): DeltaShape | undefined {
    if (!delta) return undefined;
    const shape = { kind: delta.kind, virtualTokens: delta.virtualTokens };
    this.shapes.delete(delta.name);
    this.shapes.set(delta.name, shape);
    if (this.shapes.size > 65_536) this.shapes.delete(this.shapes.keys().next().value!);
    return shape;
  }
}
