/**
 * Resident LoRA slot stacks: for every projection, A and B of every slot laid out so that any
 * contiguous slot range is one zero-copy view the graph can read:
 *   A[slot, i, r] = lora_A[r, i]                 [slots, in, R]
 *   B[slot, r, o] = scale * lora_B[o, r]         [slots, R, out]
 * Ranks below R are zero-padded, which is exact. Batched semantics (the oracle in lora-slots.test):
 *   y[t] += x[t] @ A[slot(t)] @ B[slot(t)]  for every token t that uses a slot.
 */
export type { LoraModule as LoraModuleWeights } from '../deltas/peft-lora.js';
import type { LoraModule } from '../deltas/peft-lora.js';

export interface ModuleShape {
  modulePath: string;
  inFeatures: number;
  outFeatures: number;
}

export class LoraSlotStacks {
  readonly a = new Map<string, Float32Array>();
  readonly b = new Map<string, Float32Array>();
  private readonly faulted: boolean[];
  /** Bumped by every write, so a device copy of the stacks knows when it is stale. */
  generation = 0;

  constructor(readonly modules: readonly ModuleShape[], readonly slots: number, readonly maxRank: number) {
    for (const m of modules) {
      this.a.set(m.modulePath, new Float32Array(slots * maxRank * m.inFeatures));
      this.b.set(m.modulePath, new Float32Array(slots * maxRank * m.outFeatures));
    }
    this.faulted = Array<boolean>(slots).fill(false);
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
    const R = this.maxRank;
    for (const m of this.modules) {
      this.a.get(m.modulePath)!.subarray(slot * R * m.inFeatures, (slot + 1) * R * m.inFeatures).fill(0);
      this.b.get(m.modulePath)!.subarray(slot * R * m.outFeatures, (slot + 1) * R * m.outFeatures).fill(0);
    }
    this.faulted[slot] = true;
    return true;
  }

  /** Bytes of one slot across all modules. */
  get bytesPerSlot(): number {
    return this.modules.reduce((sum, m) => sum + this.maxRank * (m.inFeatures + m.outFeatures) * 4, 0);
  }

  /**
   * Writes a delta into a slot; modules it does not target are zeroed. Modules already in slot
   * layout (see `toSlotLayout`) are one copy each, which is what keeps a host-cache hit cheap.
   */
  write(slot: number, weights: ReadonlyMap<string, LoraModule>): void {
    const R = this.maxRank;
    this.faulted[slot] = true;
    this.generation++;
    for (const m of this.modules) {
      const aSlot = this.a.get(m.modulePath)!.subarray(slot * R * m.inFeatures, (slot + 1) * R * m.inFeatures);
      const bSlot = this.b.get(m.modulePath)!.subarray(slot * R * m.outFeatures, (slot + 1) * R * m.outFeatures);
      const w = weights.get(m.modulePath);
      if (w?.layout === 'slot') {
        aSlot.set(w.a);
        bSlot.set(w.b);
      } else if (w) {
        aSlot.fill(0);
        bSlot.fill(0);
        layOut(m, w, R, aSlot, bSlot);
      } else {
        aSlot.fill(0);
        bSlot.fill(0);
      }
    }
  }

  /** The same delta with every module in slot layout, ready for cheap slot writes. */
  toSlotLayout(weights: ReadonlyMap<string, LoraModule>): Map<string, LoraModule> {
    return toSlotLayout(this.modules, weights, this.maxRank);
  }

  clear(slot: number): void {
    this.write(slot, new Map());
  }

  /** Zero-copy views of slots [lo, hi) for one module. */
  range(modulePath: string, lo: number, hi: number): { a: Float32Array; b: Float32Array } {
    const a = this.a.get(modulePath)!;
    const b = this.b.get(modulePath)!;
    const perSlotA = a.length / this.slots;
    const perSlotB = b.length / this.slots;
    return { a: a.subarray(lo * perSlotA, hi * perSlotA), b: b.subarray(lo * perSlotB, hi * perSlotB) };
  }
}

/**
 * Every module of a delta in slot layout for rank R (see LoraSlotStacks.write); pure, so any thread
 * can run it. The modules share one buffer (one allocation, one transfer between threads).
 */
export function toSlotLayout(modules: readonly ModuleShape[], weights: ReadonlyMap<string, LoraModule>, R: number): Map<string, LoraModule> {
  const out = new Map<string, LoraModule>();
  const pending = modules.filter((m) => weights.get(m.modulePath)?.layout !== 'slot' && weights.has(m.modulePath));
  const buffer = new Float32Array(pending.reduce((n, m) => n + R * (m.inFeatures + m.outFeatures), 0));
  let offset = 0;
  const take = (length: number) => buffer.subarray(offset, (offset += length));
  for (const m of modules) {
    const w = weights.get(m.modulePath);
    if (!w) continue;
    if (w.layout === 'slot') {
      out.set(m.modulePath, w);
      continue;
    }
    const a = take(m.inFeatures * R);
    const b = take(R * m.outFeatures);
    layOut(m, w, R, a, b);
    out.set(m.modulePath, { a, b, rank: R, scale: 1, layout: 'slot' });
  }
  return out;
}

/** PEFT layout → slot layout into zeroed arrays: A [r, in] → [in, R] and B [out, r] → scale · [R, out], zero-padded. */
function layOut(m: ModuleShape, w: LoraModule, R: number, a: Float32Array, b: Float32Array): void {
  const { inFeatures, outFeatures } = m;
  const { rank, scale } = w;
  const wa = w.a;
  const wb = w.b;
  for (let r = 0; r < rank; r++) {
    for (let i = 0; i < inFeatures; i++) a[i * R + r] = wa[r * inFeatures + i]!;
  }
  for (let o = 0; o < outFeatures; o++) {
    for (let r = 0; r < rank; r++) b[r * outFeatures + o] = scale * wb[o * rank + r]!;
  }
}

/**
 * Groups a pass's tokens by slot for the graph's gathered LoRA: for slot range [lo, hi), `gather`
 * [hi - lo, cells] lists each slot's tokens (spare cells repeat token 0, computed and discarded),
 * and `scatter` [tokens] points each token at its cell, or at the zero row after the last cell
 * when it has no delta.
 *
 * @example loraGrouping([2, -1, 2, 3], 2, 4) // gather [[0, 2], [3, 0]], cells 2, scatter [0, 4, 1, 2]
 */
export function loraGrouping(tokenSlots: ArrayLike<number>, lo: number, hi: number): { gather: number[]; cells: number; scatter: number[] } {
  const groups: number[][] = Array.from({ length: hi - lo }, () => []);
  for (let t = 0; t < tokenSlots.length; t++) if (tokenSlots[t]! >= 0) groups[tokenSlots[t]! - lo]!.push(t);
  const cells = Math.max(0, ...groups.map((g) => g.length));
  const zeroRow = (hi - lo) * cells;
  const scatter = Array<number>(tokenSlots.length).fill(zeroRow);
  const gather: number[] = [];
  groups.forEach((tokens, s) => {
    for (let j = 0; j < cells; j++) {
      const t = tokens[j];
      gather.push(t ?? 0);
      if (t !== undefined) scatter[t] = s * cells + j;
    }
  });
  return { gather, cells, scatter };
}

/** The smallest contiguous slot range covering every used slot; [0, 0) when none is used. */
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
