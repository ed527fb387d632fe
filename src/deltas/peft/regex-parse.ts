/**
 * Parser for the subset of Python `re` syntax that tenant PEFT configs may use in
 * `target_modules`, `rank_pattern` and `alpha_pattern`. It follows CPython's
 * `Lib/re/_parser.py` token for token (what counts as a quantifier, a literal `{`,
 * a range, an escape), so a pattern means here what it means to PEFT. Whatever would
 * need backtracking or is outside the subset is rejected with a `PatternError`.
 *
 * Supported: literals; `.`; `\d \D \w \W \s \S`; `\a \f \n \r \t \v \\`, `\xhh`,
 * `\uhhhh`, `\Uhhhhhhhh`, octal `\0`, `\0oo`, `\ooo`; escaped non-letters (`\.`, `\*`);
 * `\A`, `\Z`, `^`, `$`; classes `[...]`, `[^...]` (ranges, escapes, `]` first is literal,
 * `\b` inside is backspace); groups `(...)`, `(?:...)`, `(?P<name>...)`; comments
 * `(?#...)`; `|` with empty alternatives; `* + ? {n} {n,} {,m} {n,m} {,}` and their lazy
 * forms. A `{` that does not start a valid quantifier is a literal, as in Python.
 *
 * Rejected: backreferences (`\1`, `(?P=name)`), lookarounds, inline flags, conditionals,
 * atomic groups, possessive quantifiers, `\b`/`\B` (word boundaries), `\N{...}`, repeat
 * counts over 1000, groups nested over 200 deep, and patterns over `maxLength` characters;
 * plus everything Python itself rejects (bad escapes, bad ranges, nothing to repeat, ...).
 */

/** Python's character categories: `\d \D \w \W \s \S`. */
export type Category = 'd' | 'D' | 'w' | 'W' | 's' | 'S';
export type ClassItem = { kind: 'range'; lo: number; hi: number } | { kind: 'category'; category: Category };
/** Code points matched by one position: any item matches, then `negated` flips the answer. */
export interface CharSet {
  negated: boolean;
  items: ClassItem[];
}
/** `start`: `^` and `\A`; `end`: `$` (also before a final newline, as in Python); `endOfString`: `\Z`. */
export type AssertKind = 'start' | 'end' | 'endOfString';

/** A parsed pattern; `at` is the position (in code points) where the construct starts. */
export type Node =
  | { type: 'empty'; at: number }
  | { type: 'set'; set: CharSet; at: number }
  | { type: 'assert'; kind: AssertKind; at: number }
  | { type: 'group'; body: Node; at: number }
  | { type: 'concat'; items: Node[]; at: number }
  | { type: 'alt'; items: Node[]; at: number }
  | { type: 'repeat'; body: Node; min: number; max: number; lazy: boolean; at: number };

export const DEFAULT_MAX_LENGTH = 256;
/** Far above any count a module-name pattern needs; also keeps count parsing in safe integers. */
export const REPEAT_LIMIT = 1000;
/** Keeps the recursive parser and compiler far from the JS stack limit even if maxLength is raised. */
export const NESTING_LIMIT = 200;

/**
 * A pattern outside the supported subset or invalid in Python. `position` counts code
 * points from 0, like Python's `re.error.pos`.
 *
 * @example
 * compilePattern('(a)\\1');
 * // PatternError: invalid pattern "(a)\1": backreference \1 is not supported (at 3)
 */
export class PatternError extends Error {
  readonly code = 'invalid_pattern';
  constructor(
    readonly problem: string,
    readonly pattern: string,
    readonly position: number,
  ) {
    const shown = pattern.length > 64 ? `${pattern.slice(0, 64)}...` : pattern;
    super(`invalid pattern ${JSON.stringify(shown)}: ${problem} (at ${position})`);
    this.name = 'PatternError';
  }
}

const ANY: CharSet = { negated: true, items: [{ kind: 'range', lo: 10, hi: 10 }] };
const CATEGORY_LETTERS = new Set(['d', 'D', 'w', 'W', 's', 'S']);
const SIMPLE_ESCAPES: Record<string, number> = { a: 7, b: 8, f: 12, n: 10, r: 13, t: 9, v: 11, '\\': 92 };
const HEX_WIDTH: Record<string, number> = { x: 2, u: 4, U: 8 };
const FLAG_LETTERS = 'iLmsxatu';
const isDigit = (c: string | undefined) => c !== undefined && c >= '0' && c <= '9';
const isOctal = (c: string | undefined) => c !== undefined && c >= '0' && c <= '7';
const isAsciiLetter = (c: string) => /^[A-Za-z]$/.test(c);
const literal = (cp: number): CharSet => ({ negated: false, items: [{ kind: 'range', lo: cp, hi: cp }] });
const category = (c: string): ClassItem => ({ kind: 'category', category: c as Category });

interface Quantifier {
  min: number;
  max: number;
  at: number;
}

/**
 * Parses `source` into an AST, or throws `PatternError` naming the problem and its position.
 *
 * @example
 * parsePattern('a|b*');
 * // { type: 'alt', items: [{ type: 'set', ... }, { type: 'repeat', min: 0, max: Infinity, ... }], at: 0 }
 */
export function parsePattern(source: string, options: { maxLength?: number } = {}): Node {
  const maxLength = options.maxLength ?? DEFAULT_MAX_LENGTH;
  const tooLong = () => new PatternError(`pattern is longer than the limit of ${maxLength} characters`, source, maxLength);
  // Checked in UTF-16 units first so a huge string is never split into code points.
  if (source.length > 2 * maxLength) throw tooLong();
  const chars = Array.from(source);
  if (chars.length > maxLength) throw tooLong();
  return new Parser(source, chars).parse();
}

class Parser {
  private pos = 0;
  private depth = 0;
  private readonly names = new Set<string>();

  constructor(
    private readonly source: string,
    private readonly chars: readonly string[],
  ) {}

  parse(): Node {
    const node = this.alternation();
    // Only a ')' stops the top-level alternation early.
    if (this.pos < this.chars.length) this.fail('unbalanced parenthesis', this.pos);
    return node;
  }

  private fail(problem: string, at: number): never {
    throw new PatternError(problem, this.source, at);
  }

  private peek(): string | undefined {
    return this.chars[this.pos];
  }

  private take(): string | undefined {
    const c = this.chars[this.pos];
    if (c !== undefined) this.pos++;
    return c;
  }

  private eat(c: string): boolean {
    if (this.chars[this.pos] !== c) return false;
    this.pos++;
    return true;
  }

  private text(from: number): string {
    return this.chars.slice(from, this.pos).join('');
  }

  private alternation(): Node {
    const at = this.pos;
    const items = [this.sequence()];
    while (this.eat('|')) items.push(this.sequence());
    return items.length === 1 ? items[0]! : { type: 'alt', items, at };
  }

  private sequence(): Node {
    const at = this.pos;
    const items: Node[] = [];
    for (let c = this.peek(); c !== undefined && c !== '|' && c !== ')'; c = this.peek()) {
      const quantifier = this.quantifier();
      if (quantifier) this.repeatLast(items, quantifier);
      else {
        const atom = this.atom();
        if (atom) items.push(atom);
      }
    }
    if (items.length === 0) return { type: 'empty', at };
    return items.length === 1 ? items[0]! : { type: 'concat', items, at };
  }

  /** Python's rules: the previous item must exist, not be an anchor, and not be a repeat itself. */
  private repeatLast(items: Node[], { min, max, at }: Quantifier): void {
    const last = items[items.length - 1];
    if (last === undefined || last.type === 'assert') this.fail('nothing to repeat', at);
    if (last.type === 'repeat') this.fail('multiple repeat', at);
    const lazy = this.eat('?');
    if (!lazy && this.peek() === '+') this.fail(`possessive quantifier ${this.text(at)}+ is not supported`, at);
    items[items.length - 1] = { type: 'repeat', body: last, min, max, lazy, at };
  }

  private quantifier(): Quantifier | undefined {
    const at = this.pos;
    const c = this.peek();
    if (c === '{') return this.braces();
    if (c !== '*' && c !== '+' && c !== '?') return undefined;
    this.pos++;
    return { min: c === '+' ? 1 : 0, max: c === '?' ? 1 : Infinity, at };
  }

  /** `{n}`, `{n,}`, `{,m}`, `{n,m}`, `{,}`; anything else (including `{}`) leaves `{` a literal. */
  private braces(): Quantifier | undefined {
    const at = this.pos++;
    const lo = this.digits();
    const comma = this.eat(',');
    const hi = comma ? this.digits() : lo;
    // Without digits or a comma only `{}` could close here, and Python keeps that literal.
    if ((lo === undefined && !comma) || !this.eat('}')) {
      this.pos = at;
      return undefined;
    }
    for (const digits of [lo, hi]) {
      if (digits !== undefined && Number(digits) > REPEAT_LIMIT) this.fail(`repeat count ${digits} exceeds the limit of ${REPEAT_LIMIT}`, at);
    }
    const min = lo === undefined ? 0 : Number(lo);
    const max = hi === undefined ? Infinity : Number(hi);
    if (max < min) this.fail(`min repeat ${min} greater than max repeat ${max}`, at);
    return { min, max, at };
  }

  /** The digits as written, so a huge count is reported as the tenant wrote it. */
  private digits(): string | undefined {
    const from = this.pos;
    while (isDigit(this.peek())) this.pos++;
    return this.pos === from ? undefined : this.text(from);
  }

  /** One item of a sequence, or undefined for a comment, which Python drops entirely. */
  private atom(): Node | undefined {
    const at = this.pos;
    const c = this.take()!;
    switch (c) {
      case '\\':
        return this.escape(at);
      case '[':
        return { type: 'set', set: this.charClass(at), at };
      case '(':
        return this.group(at);
      case '.':
        return { type: 'set', set: ANY, at };
      case '^':
        return { type: 'assert', kind: 'start', at };
      case '$':
        return { type: 'assert', kind: 'end', at };
      default:
        return { type: 'set', set: literal(c.codePointAt(0)!), at };
    }
  }

  /** An escape outside a class: anchors and categories first, as in Python's `_escape`. */
  private escape(at: number): Node {
    const c = this.take();
    if (c === undefined) this.fail('bad escape (end of pattern)', at);
    if (c === 'A') return { type: 'assert', kind: 'start', at };
    if (c === 'Z') return { type: 'assert', kind: 'endOfString', at };
    if (c === 'b' || c === 'B') this.fail(`word boundary \\${c} is not supported`, at);
    if (CATEGORY_LETTERS.has(c)) return { type: 'set', set: { negated: false, items: [category(c)] }, at };
    if (c === '0') return { type: 'set', set: literal(this.octal(c, 2, at)), at };
    if (isDigit(c)) return { type: 'set', set: literal(this.numberedEscape(c, at)), at };
    return { type: 'set', set: literal(this.commonEscape(c, at)), at };
  }

  /** `\ooo` with three octal digits is a character; any other `\N...` is a backreference. */
  private numberedEscape(first: string, at: number): number {
    const second = this.peek();
    if (isOctal(first) && isOctal(second) && isOctal(this.chars[this.pos + 1])) return this.octal(first, 2, at);
    if (isDigit(second)) this.pos++;
    return this.fail(`backreference ${this.text(at)} is not supported`, at);
  }

  /** Up to `more` further octal digits after `first`; Python caps the value at 0o377. */
  private octal(first: string, more: number, at: number): number {
    let digits = first;
    while (digits.length <= more && isOctal(this.peek())) digits += this.take()!;
    const value = parseInt(digits, 8);
    if (value > 0o377) this.fail(`octal escape value ${this.text(at)} outside of range 0-0o377`, at);
    return value;
  }

  /** Escapes with the same meaning inside and outside a class (`\b` never gets here outside one). */
  private commonEscape(c: string, at: number): number {
    const simple = SIMPLE_ESCAPES[c];
    if (simple !== undefined) return simple;
    const width = HEX_WIDTH[c];
    if (width !== undefined) return this.hexEscape(width, at);
    if (c === 'N') this.fail('named Unicode escape \\N{...} is not supported', at);
    if (isAsciiLetter(c)) this.fail(`bad escape \\${c}`, at);
    return c.codePointAt(0)!;
  }

  private hexEscape(width: number, at: number): number {
    const from = this.pos;
    while (this.pos - from < width && /^[0-9A-Fa-f]$/.test(this.peek() ?? '')) this.pos++;
    if (this.pos - from !== width) this.fail(`incomplete escape ${this.text(at)}`, at);
    const value = parseInt(this.text(from), 16);
    if (value > 0x10ffff) this.fail(`bad escape ${this.text(at)}`, at);
    return value;
  }

  /** `[...]` after the `[`: a `]` ends the class only once it holds an item, as in Python. */
  private charClass(at: number): CharSet {
    const negated = this.eat('^');
    const items: ClassItem[] = [];
    for (;;) {
      const from = this.pos;
      const c = this.take();
      if (c === undefined) this.fail('unterminated character set', at);
      if (c === ']' && items.length > 0) return { negated, items };
      const first = this.classAtom(c, from);
      if (!this.eat('-')) {
        items.push(first);
        continue;
      }
      const end = this.take();
      if (end === undefined) this.fail('unterminated character set', at);
      if (end === ']') {
        items.push(first, { kind: 'range', lo: 45, hi: 45 });
        return { negated, items };
      }
      items.push(this.range(first, this.classAtom(end, this.pos - 1), from));
    }
  }

  private range(first: ClassItem, last: ClassItem, from: number): ClassItem {
    if (first.kind !== 'range' || last.kind !== 'range' || last.lo < first.lo) {
      this.fail(`bad character range ${this.text(from)}`, from);
    }
    return { kind: 'range', lo: first.lo, hi: last.hi };
  }

  private classAtom(c: string, from: number): ClassItem {
    if (c !== '\\') {
      const cp = c.codePointAt(0)!;
      return { kind: 'range', lo: cp, hi: cp };
    }
    const e = this.take();
    if (e === undefined) this.fail('bad escape (end of pattern)', from);
    if (CATEGORY_LETTERS.has(e)) return category(e);
    // Inside a class every octal digit starts an octal escape, and \8 \9 are errors.
    const cp = isOctal(e) ? this.octal(e, 2, from) : isDigit(e) ? this.fail(`bad escape \\${e}`, from) : this.commonEscape(e, from);
    return { kind: 'range', lo: cp, hi: cp };
  }

  /** After `(`: a plain group, or one of the `(?...)` forms. */
  private group(at: number): Node | undefined {
    if (!this.eat('?')) return this.groupBody(at);
    const c = this.take();
    if (c === undefined) this.fail('unexpected end of pattern', this.pos);
    if (c === ':') return this.groupBody(at);
    if (c === 'P') return this.pythonGroup(at);
    if (c === '#') return this.comment(at);
    if (c === '=' || c === '!') this.fail(`lookahead (?${c}...) is not supported`, at);
    if (c === '<') this.lookbehind(at);
    if (c === '(') this.fail('conditional group (?(...)...) is not supported', at);
    if (c === '>') this.fail('atomic group (?>...) is not supported', at);
    if (FLAG_LETTERS.includes(c) || c === '-') this.fail(`inline flags (?${c}...) are not supported`, at);
    return this.fail(`unknown extension ?${c}`, at);
  }

  private lookbehind(at: number): never {
    const c = this.take();
    if (c === undefined) this.fail('unexpected end of pattern', this.pos);
    if (c === '=' || c === '!') this.fail(`lookbehind (?<${c}...) is not supported`, at);
    return this.fail(`unknown extension ?<${c}`, at);
  }

  private groupBody(at: number): Node {
    if (++this.depth > NESTING_LIMIT) this.fail(`groups nested deeper than ${NESTING_LIMIT}`, at);
    const body = this.alternation();
    if (!this.eat(')')) this.fail('missing ), unterminated subpattern', at);
    this.depth--;
    return { type: 'group', body, at };
  }

  /** `(?P<name>...)` is a group; `(?P=name)` is a backreference. */
  private pythonGroup(at: number): Node {
    if (this.eat('=')) this.fail(`backreference (?P=${this.groupName(')')}) is not supported`, at);
    if (!this.eat('<')) {
      const c = this.take();
      return this.fail(c === undefined ? 'unexpected end of pattern' : `unknown extension ?P${c}`, at);
    }
    const name = this.groupName('>');
    if (this.names.has(name)) this.fail(`redefinition of group name ${JSON.stringify(name)}`, this.pos - name.length - 1);
    this.names.add(name);
    return this.groupBody(at);
  }

  private groupName(terminator: string): string {
    const from = this.pos;
    for (let c = this.take(); c !== terminator; c = this.take()) {
      if (c === undefined) this.fail(this.pos === from ? 'missing group name' : `missing ${terminator}, unterminated name`, from);
    }
    const name = this.chars.slice(from, this.pos - 1).join('');
    if (name === '') this.fail('missing group name', from);
    // Python's str.isidentifier() uses XID_Start/XID_Continue; JS exposes ID_Start/ID_Continue, equal for names in practice.
    if (!/^[\p{ID_Start}_]\p{ID_Continue}*$/u.test(name)) this.fail(`bad character in group name ${JSON.stringify(name)}`, from);
    return name;
  }

  /**
   * Python drops `(?#...)`, so a quantifier after it applies to the item before it.
   * Its tokenizer reads `\)` as one token, so an escaped `)` does not end the comment.
   */
  private comment(at: number): undefined {
    for (let c = this.take(); c !== ')'; c = this.take()) {
      if (c === undefined) this.fail('missing ), unterminated comment', at);
      if (c === '\\' && this.take() === undefined) this.fail('bad escape (end of pattern)', this.pos - 1);
    }
    return undefined;
  }
}
