/**
 * Membership tests for the character sets of `regex-parse.ts`, with the meaning Python 3
 * gives `\d \w \s` in str patterns (Unicode-aware, no flags):
 *
 * - `\d`: Unicode decimal digits, general category Nd (Python's `str.isdecimal()`).
 * - `\w`: letters (L*), numbers (N*) and `_` (Python's `str.isalnum()` plus `_`).
 *   Combining marks and other connector punctuation are not word characters, as in Python.
 * - `\s`: Python's `str.isspace()` set, spelled out below because JS `\s` differs
 *   (JS adds U+FEFF and omits U+001C-U+001F and U+0085).
 *
 * Checked against CPython 3.11 over every code point: `\d` and `\w` agree except for
 * characters assigned after Unicode 14 (Python 3.11's tables), which JS (Node 20's ICU)
 * already classifies; `\s` agrees exactly. ASCII is answered from a table, so module
 * names never reach the Unicode property tests.
 */
import type { Category, CharSet, ClassItem } from './regex-parse.js';

const UNICODE_DIGIT = /^\p{Nd}$/u;
const UNICODE_WORD = /^[\p{L}\p{N}_]$/u;
const SPACE_RANGES: ReadonlyArray<readonly [number, number]> = [
  [0x09, 0x0d], [0x1c, 0x20], [0x85, 0x85], [0xa0, 0xa0], [0x1680, 0x1680], [0x2000, 0x200a],
  [0x2028, 0x2029], [0x202f, 0x202f], [0x205f, 0x205f], [0x3000, 0x3000],
];

function isDigit(cp: number): boolean {
  return cp < 128 ? cp >= 48 && cp <= 57 : UNICODE_DIGIT.test(String.fromCodePoint(cp));
}

function isWord(cp: number): boolean {
  if (cp < 128) return (cp >= 48 && cp <= 57) || (cp >= 65 && cp <= 90) || (cp >= 97 && cp <= 122) || cp === 95;
  return UNICODE_WORD.test(String.fromCodePoint(cp));
}

function isSpace(cp: number): boolean {
  return SPACE_RANGES.some(([lo, hi]) => cp >= lo && cp <= hi);
}

function inCategory(category: Category, cp: number): boolean {
  switch (category) {
    case 'd': return isDigit(cp);
    case 'D': return !isDigit(cp);
    case 'w': return isWord(cp);
    case 'W': return !isWord(cp);
    case 's': return isSpace(cp);
    case 'S': return !isSpace(cp);
  }
}

function inItem(item: ClassItem, cp: number): boolean {
  return item.kind === 'range' ? cp >= item.lo && cp <= item.hi : inCategory(item.category, cp);
}

/**
 * One set's membership test. The ASCII answers are computed once, so matching a module
 * name costs one table lookup per NFA state and character.
 *
 * @example
 * const word = new CharMatcher({ negated: false, items: [{ kind: 'category', category: 'w' }] });
 * word.test(0x5f); // true: '_'
 */
export class CharMatcher {
  private readonly ascii = new Uint8Array(128);

  constructor(private readonly set: CharSet) {
    for (let cp = 0; cp < 128; cp++) this.ascii[cp] = this.compute(cp) ? 1 : 0;
  }

  test(cp: number): boolean {
    return cp < 128 ? this.ascii[cp] === 1 : this.compute(cp);
  }

  private compute(cp: number): boolean {
    return this.set.items.some((item) => inItem(item, cp)) !== this.set.negated;
  }
}
