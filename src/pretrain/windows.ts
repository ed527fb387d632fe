/**
 * The pretraining text as training rows. The corpus is one verse per line with a blank line
 * between chapters; each row is `<|endoftext|>` followed by whole lines, as many as fit, so a row
 * reads exactly as a scoring request does (`<|endoftext|>` + a piece cut at line ends,
 * src/pretrain/bits-per-byte.ts) and every line is predicted in one row only.
 */
import type { TrainingExample } from '../training/dataset.js';

/**
 * The text's lines, each with its `\n`; a blank line (a chapter break) stays with the line before,
 * so no unit is only whitespace.
 *
 * @example lineUnits('a\nb\n\nc\n') // ['a\n', 'b\n\n', 'c\n']
 */
export function lineUnits(text: string): string[] {
  const units: string[] = [];
  for (const line of text.split(/(?<=\n)/)) {
    if (line.trim() === '' && units.length) units[units.length - 1] += line;
    else units.push(line);
  }
  return units;
}

/**
 * Rows of at most `seqLen` tokens: `bos`, then consecutive units while they fit. A unit longer
 * than a row by itself is cut into row-sized pieces (none is, in the KJV at 128 tokens or more).
 * Labels are the inputs (the step graph shifts them); the `bos` position is never a target.
 *
 * @example packUnits([[5, 6], [7], [8, 9]], 4, 256) // rows [256,5,6,7] and [256,8,9]
 */
export function packUnits(units: readonly (readonly number[])[], seqLen: number, bos: number): TrainingExample[] {
  if (!Number.isInteger(seqLen) || seqLen < 2) throw new RangeError(`seqLen must be an integer of at least 2, got ${seqLen}`);
  const rows: TrainingExample[] = [];
  let row: number[] = [bos];
  const flush = () => {
    if (row.length > 1) rows.push({ inputIds: row, labels: row });
    row = [bos];
  };
  for (const unit of units) {
    if (row.length + unit.length > seqLen) flush();
    for (let at = 0; at < unit.length; ) {
      const take = Math.min(unit.length - at, seqLen - row.length);
      row.push(...unit.slice(at, at + take));
      at += take;
      if (at < unit.length) flush();
    }
  }
  flush();
  return rows;
}

/** Tokens that are targets in these rows (every token but each row's `bos`). */
export function targetTokens(rows: readonly TrainingExample[]): number {
  return rows.reduce((n, r) => n + r.inputIds.length - 1, 0);
}
