/**
 * Small seeded PRNGs for reproducible synthetic checkpoints. Math.random cannot be seeded, and
 * the embedded model must be byte-identical on every machine; V8's Math.log/sin/cos are
 * software implementations (fdlibm ports), so the normal samples are reproducible too.
 */

/**
 * Uniform floats in [0, 1) from the 32-bit mulberry32 generator.
 *
 * @example
 * const next = mulberry32(42);
 * next(); // the same value on every run
 */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Standard normal samples (mean 0, std 1) via Box–Muller over mulberry32; each pair of uniforms
 * yields two samples, so nothing is wasted.
 *
 * @example
 * const normal = seededNormal(1);
 * const w = Float32Array.from({ length: 16 }, () => 0.02 * normal());
 */
export function seededNormal(seed: number): () => number {
  const uniform = mulberry32(seed);
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const value = spare;
      spare = undefined;
      return value;
    }
    // 1 - u lies in (0, 1], so the logarithm is finite.
    const radius = Math.sqrt(-2 * Math.log(1 - uniform()));
    const angle = 2 * Math.PI * uniform();
    spare = radius * Math.sin(angle);
    return radius * Math.cos(angle);
  };
}

/**
 * A 32-bit seed from a string (FNV-1a), so each tensor can get its own stream: adding or
 * reordering tensors then leaves the others' values unchanged.
 *
 * @example
 * seededNormal(hashSeed('model.norm.weight') ^ 1234);
 */
export function hashSeed(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}
