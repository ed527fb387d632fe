/**
 * Resident LoRA slot stacks: for every projection, A and B of every slot laid out so that any
 * contiguous slot range is one zero-copy view the graph can read:
 *   A[slot*R + r, :]  = lora_A[r, :]                    [slots*R, in]
 *   B[slot*R + r, :]  = scale * lora_B[:, r]            [slots*R, out]
 * Ranks below R are zero-padded, which is exact. Batched semantics (the oracle in lora-slots.test):
 *   y[t] += ((x[t] @ A[range]^T) * mask[t]) @ B[range],  mask[t, (s-lo)*R + r] = 1 iff token t uses slot s.
 */
export interface LoraModuleWeights {
  /** lora_A [r, in], row-major. */
  a: Float32Array;
  /** lora_B [out, r], row-major. */
  b: Float32Array;
  rank: number;
  scale: number;
}

export interface ModuleShape {
  modulePath: string;
  inFeatures: number;
  outFeatures: number;
}

export class LoraSlotStacks {
  readonly a = new Map<string, Float32Array>();
  readonly b = new Map<string, Float32Array>();

  constructor(readonly modules: readonly ModuleShape[], readonly slots: number, readonly maxRank: number) {
    for (const m of modules) {
      this.a.set(m.modulePath, new Float32Array(slots * maxRank * m.inFeatures));
      this.b.set(m.modulePath, new Float32Array(slots * maxRank * m.outFeatures));
    }
  }

  /** Bytes of one slot across all modules. */
  get bytesPerSlot(): number {
    return this.modules.reduce((sum, m) => sum + this.maxRank * (m.inFeatures + m.outFeatures) * 4, 0);
  }

  /** Writes a delta into a slot; modules it does not target are zeroed. */
  write(slot: number, weights: ReadonlyMap<string, LoraModuleWeights>): void {
    const R = this.maxRank;
    for (const m of this.modules) {
      const a = this.a.get(m.modulePath)!;
      const b = this.b.get(m.modulePath)!;
      const aSlot = a.subarray(slot * R * m.inFeatures, (slot + 1) * R * m.inFeatures);
      const bSlot = b.subarray(slot * R * m.outFeatures, (slot + 1) * R * m.outFeatures);
      aSlot.fill(0);
      bSlot.fill(0);
      const w = weights.get(m.modulePath);
      if (!w) continue;
      aSlot.set(w.a.subarray(0, w.rank * m.inFeatures));
      for (let r = 0; r < w.rank; r++) {
        const row = bSlot.subarray(r * m.outFeatures, (r + 1) * m.outFeatures);
        for (let o = 0; o < m.outFeatures; o++) row[o] = w.scale * w.b[o * w.rank + r]!;
      }
    }
  }

  clear(slot: number): void {
    this.write(slot, new Map());
  }

  /** Zero-copy views of slots [lo, hi) for one module. */
  range(modulePath: string, lo: number, hi: number): { a: Float32Array; b: Float32Array } {
    const m = this.modules.find((x) => x.modulePath === modulePath)!;
    const R = this.maxRank;
    return {
      a: this.a.get(modulePath)!.subarray(lo * R * m.inFeatures, hi * R * m.inFeatures),
      b: this.b.get(modulePath)!.subarray(lo * R * m.outFeatures, hi * R * m.outFeatures),
    };
  }
}

/**
 * The per-token mask for slot range [lo, hi): tokenSlots[t] is the slot of token t, or -1 for none.
 * Returned row-major [tokens, (hi - lo) * R].
 */
export function loraMask(tokenSlots: ArrayLike<number>, lo: number, hi: number, maxRank: number): Float32Array {
  const width = (hi - lo) * maxRank;
  const mask = new Float32Array(tokenSlots.length * width);
  for (let t = 0; t < tokenSlots.length; t++) {
    const s = tokenSlots[t]!;
    if (s < 0) continue;
    mask.fill(1, t * width + (s - lo) * maxRank, t * width + (s - lo + 1) * maxRank);
  }
  return mask;
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
