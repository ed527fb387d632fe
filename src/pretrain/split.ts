/**
 * The held-out split: whole chapters, in a few contiguous runs spread evenly through the canon.
 *
 * Why chapters and not every hundredth verse: a held-out verse between two training verses of
 * the same passage is half-predicted by memorised context, and neighbouring verses repeat each
 * other's wording (parallelism in the Psalms, the twelve identical offerings of Numbers 7), so
 * the held-out loss would flatter the model. Why several runs and not the last 1%: Revelation
 * alone is not representative of law, poetry, history and letters. The Bible still quotes itself
 * across books (Kings and Chronicles, the synoptic gospels), so `verbatimOverlap` measures how
 * many held-out verses also occur word for word in the training text.
 */
import { layoutChapters, type Chapter } from './verses.js';

export interface SplitOptions {
  /** Share of the text's bytes to hold out (default 0.01). */
  fraction?: number;
  /** Contiguous runs of chapters (default 8: with the KJV every genre section of the canon gets at least one, and the share comes out near 1%). */
  runs?: number;
}

export interface CorpusSplit {
  train: Chapter[];
  heldout: Chapter[];
}

/**
 * Splits chapters (in canonical order) deterministically. Run j starts at the chapter holding
 * byte (j + 0.5) / runs of the whole layout and takes following chapters while that brings it
 * closer to fraction / runs of the bytes (at least one chapter), so the held-out share is the
 * fraction give or take half a chapter per run. The layout's byte count decides, so the split depends only on the text.
 *
 * @example
 * const { train, heldout } = splitChapters(chaptersOf(loadKjv())); // heldout: ~1% of the bytes
 */
export function splitChapters(chapters: readonly Chapter[], options: SplitOptions = {}): CorpusSplit {
  const fraction = options.fraction ?? 0.01;
  const runs = options.runs ?? 8;
  if (!(fraction > 0 && fraction < 0.5)) throw new Error(`split fraction must be in (0, 0.5), got ${fraction}`);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`split runs must be a positive integer, got ${runs}`);
  const sizes = chapters.map((c) => Buffer.byteLength(layoutChapters([c])));
  const starts: number[] = [];
  let total = 0;
  for (const size of sizes) {
    starts.push(total);
    total += size;
  }
  const held = new Set<number>();
  for (let j = 0; j < runs; j++) {
    const anchor = ((j + 0.5) / runs) * total;
    let i = 0;
    while (i + 1 < starts.length && starts[i + 1]! <= anchor) i++;
    const target = (fraction / runs) * total;
    let taken = 0;
    // Whole chapters until the run is as close to its share as whole chapters can bring it.
    while (i < chapters.length && (taken === 0 || Math.abs(taken + sizes[i]! - target) < target - taken)) {
      if (!held.has(i)) taken += sizes[i]!;
      held.add(i++);
    }
  }
  return {
    train: chapters.filter((_, i) => !held.has(i)),
    heldout: chapters.filter((_, i) => held.has(i)),
  };
}

/**
 * Held-out verses whose exact text is also a training verse (count and share of held-out verses).
 *
 * @example
 * verbatimOverlap(split); // { verses: 3, share: 0.0098 }
 */
export function verbatimOverlap(split: CorpusSplit): { verses: number; share: number } {
  const seen = new Set(split.train.flatMap((c) => c.verses.map((v) => v.text)));
  const held = split.heldout.flatMap((c) => c.verses);
  const verses = held.filter((v) => seen.has(v.text)).length;
  return { verses, share: held.length === 0 ? 0 : verses / held.length };
}
