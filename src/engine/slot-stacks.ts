import type { ParsedDelta, SlotTensor } from '../deltas/kind.js';

/**
 * The resident slots of one delta kind: for every slot tensor of the kind, all slots laid out
 * back to back ([slots, ...dims]), so any contiguous slot range is one zero-copy view the graph
 * can read. A slot write copies each of the delta's tensors in one piece (they arrive in slot
 * layout) and resets the tensors it does not set to the kind's neutral value.
 */
export class SlotStacks {
  readonly tensors = new Map<string, Float32Array>();
  private readonly faulted: boolean[];
  /** Bumped by every write, so a device copy of the stacks knows when it is stale. */
  generation = 0;

  constructor(readonly kind: string, readonly specs: readonly SlotTensor[], readonly slots: number) {
    for (const spec of specs) {
      const stack = new Float32Array(slots * spec.length);
      if (spec.neutral !== 0) stack.fill(spec.neutral);
      this.tensors.set(spec.name, stack);
    }
    this.faulted = Array<boolean>(slots).fill(specs.every((s) => s.neutral !== 0));
  }

  /**
   * Touches every page of one slot. A fresh array is mapped lazily, and paying those page faults
   * on a slot's first write adds ~40 ms to a cache hit instead of ~1 ms; doing all slots at
   * construction cost ~2 s of cold start for 32 slots, so the engine faults them in while idle.
   * Returns false when every slot already is.
   */
  prefaultNext(): boolean {
    const slot = this.faulted.indexOf(false);
    if (slot < 0) return false;
    for (const spec of this.specs) this.view(spec, slot).fill(spec.neutral);
    this.faulted[slot] = true;
    return true;
  }

  write(slot: number, delta: ParsedDelta): void {
    if (delta.kind !== this.kind) throw new Error(`a ${delta.kind} delta cannot go into ${this.kind} slots`);
    this.faulted[slot] = true;
    this.generation++;
    for (const spec of this.specs) {
      const values = delta.tensors.get(spec.name);
      const target = this.view(spec, slot);
      if (!values) target.fill(spec.neutral);
      else if (values.length !== spec.length) throw new Error(`${delta.name}: slot tensor ${spec.name} has ${values.length} values, the slot holds ${spec.length}`);
      else target.set(values);
    }
  }

  /** Zero-copy view of slots [lo, hi) of one tensor. */
  range(name: string, lo: number, hi: number): Float32Array {
    const stack = this.tensors.get(name)!;
    const perSlot = stack.length / this.slots;
    return stack.subarray(lo * perSlot, hi * perSlot);
  }

  private view(spec: SlotTensor, slot: number): Float32Array {
    return this.tensors.get(spec.name)!.subarray(slot * spec.length, (slot + 1) * spec.length);
  }
}

/**
 * The smallest contiguous slot range covering every used slot; [0, 0) when none is used.
 *
 * @example slotRange([3, -1, 5]) // { lo: 3, hi: 6 }
 */
export function slotRange(tokenSlots: ArrayLike<number>): { lo: number; hi: number } {
  let lo = Infinity;
  let hi = -Infinity;
  for (let t = 0; t < tokenSlots.length; t++) {
    const s = tokenSlots[t]!;
    if (s < 0) continue;
    lo = Math.min(lo, s);
    hi = Math.max(hi, s + 1);
  }
  return lo === Infinity ? { lo: 0, hi: 0 } : { lo, hi };
}
