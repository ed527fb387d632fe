/**
 * Linear-time matching of tenant-supplied Python regexes from PEFT adapter configs.
 *
 * PEFT matches `target_modules` with `re.fullmatch(pattern, name)` and each
 * `rank_pattern` / `alpha_pattern` key K with `re.match(rf"(.*\.)?({K})$", name)`, which
 * for module names (no newlines) is a full match of `(.*\.)?(K)`. Those patterns are
 * attacker-chosen, and JavaScript's backtracking RegExp needs exponential time on some
 * (`(\w|.)*Z` took ~50 s on our module names). So patterns are parsed with Python's
 * rules (`regex-parse.ts`, which documents the supported subset), compiled to a
 * Thompson NFA, and run as a Pike-style state-set simulation: every state is visited
 * at most once per input position, so a match costs O(len(text) x states) with no
 * backtracking, and both the pattern length and the state count are capped.
 */
import { CharMatcher } from './regex-charset.js';
import { parsePattern, PatternError, type AssertKind, type CharSet, type Node } from './regex-parse.js';

export { PatternError } from './regex-parse.js';

export interface PatternOptions {
  /** longest accepted pattern, in code points (default 256) */
  maxLength?: number;
  /** most NFA states, the final match state included (default 10,000) */
  maxStates?: number;
}

export interface LinearPattern {
  readonly source: string;
  readonly stateCount: number;
  /** Whether the whole of `text` matches, as Python's `re.fullmatch` decides it. */
  fullMatch(text: string): boolean;
  /** state visits the last fullMatch made (for tests of the linear bound) */
  readonly lastCost: number;
}

export const DEFAULT_MAX_STATES = 10_000;

const CHAR = 0;
const SPLIT = 1;
const ASSERT = 2;
const MATCH = 3;

/**
 * Compiles a Python regex for linear-time full matching, or throws `PatternError`
 * naming the problem and its position.
 *
 * @example
 * const key = compilePattern('(.*\\.)?(self_attn\\..*)');
 * key.fullMatch('model.layers.3.self_attn.q_proj'); // true
 * compilePattern('(?<=x)a'); // PatternError: ...: lookbehind (?<=...) is not supported (at 0)
 */
export function compilePattern(source: string, options: PatternOptions = {}): LinearPattern {
  const maxStates = options.maxStates ?? DEFAULT_MAX_STATES;
  for (const [name, value] of Object.entries(options)) {
    if (value !== undefined && (!Number.isSafeInteger(value) || value < 1)) throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
  const root = parsePattern(source, options);
  const sizes = new Map<Node, number>();
  // One state is kept for the final match; counting first means no oversized NFA is ever built.
  const size = countStates(root, sizes, { source, maxStates });
  if (size + 1 > maxStates) throw overLimit(source, size + 1, maxStates, 0);
  return new PikePattern(source, new NfaBuilder(sizes).build(root, size + 1));
}

function overLimit(source: string, states: number, maxStates: number, at: number): PatternError {
  return new PatternError(`pattern needs at least ${states} NFA states, over the limit of ${maxStates}`, source, at);
}

/**
 * States `NfaBuilder` will allocate for `node`, recorded per node. Checked bottom-up,
 * so nested counted repeats like `((a{100}){100}){100}` fail at the innermost repeat that
 * passes the limit, before anything is built.
 */
function countStates(node: Node, sizes: Map<Node, number>, limit: { source: string; maxStates: number }): number {
  const count = (child: Node) => countStates(child, sizes, limit);
  let size: number;
  switch (node.type) {
    case 'empty': size = 0; break;
    case 'set': case 'assert': size = 1; break;
    case 'group': size = count(node.body); break;
    case 'concat': size = node.items.reduce((sum, item) => sum + count(item), 0); break;
    case 'alt': size = node.items.reduce((sum, item) => sum + count(item), node.items.length - 1); break;
    case 'repeat': size = repeatSize(node.min, node.max, count(node.body)); break;
  }
  if (size > limit.maxStates) throw overLimit(limit.source, size, limit.maxStates, node.at);
  sizes.set(node, size);
  return size;
}

/** Mirrors `NfaBuilder.repeat`: a body of size 0 matches only "" and is dropped. */
function repeatSize(min: number, max: number, body: number): number {
  if (body === 0) return 0;
  if (max === Infinity) return min === 0 ? body + 1 : min * body + 1;
  return min * body + (max - min) * (body + 1);
}

interface Nfa {
  kind: Uint8Array;
  out1: Int32Array;
  out2: Int32Array;
  /** per CHAR state its matcher; per ASSERT state its kind */
  matchers: (CharMatcher | undefined)[];
  asserts: (AssertKind | undefined)[];
  start: number;
  match: number;
}

/**
 * Thompson construction by continuation: `compile(node, next)` returns the entry state
 * of a fragment that continues at `next`, so counted repeats are plain copies and
 * nothing needs patching except the loop of `*` and `+`.
 */
class NfaBuilder {
  private readonly kind: number[] = [];
  private readonly out1: number[] = [];
  private readonly out2: number[] = [];
  private readonly matchers: (CharMatcher | undefined)[] = [];
  private readonly asserts: (AssertKind | undefined)[] = [];
  /** copies of one set in `x{100}` share a matcher */
  private readonly shared = new Map<CharSet, CharMatcher>();

  constructor(private readonly sizes: ReadonlyMap<Node, number>) {}

  build(root: Node, expected: number): Nfa {
    const match = this.add(MATCH, -1, -1);
    const start = this.compile(root, match);
    if (this.kind.length !== expected) throw new Error(`NFA has ${this.kind.length} states, counted ${expected}`);
    const { kind, out1, out2, matchers, asserts } = this;
    return { kind: Uint8Array.from(kind), out1: Int32Array.from(out1), out2: Int32Array.from(out2), matchers, asserts, start, match };
  }

  private add(kind: number, out1: number, out2: number): number {
    this.kind.push(kind);
    this.out1.push(out1);
    this.out2.push(out2);
    this.matchers.push(undefined);
    this.asserts.push(undefined);
    return this.kind.length - 1;
  }

  private compile(node: Node, next: number): number {
    switch (node.type) {
      case 'empty': return next;
      case 'set': return this.charState(node.set, next);
      case 'assert': {
        const s = this.add(ASSERT, next, -1);
        this.asserts[s] = node.kind;
        return s;
      }
      case 'group': return this.compile(node.body, next);
      case 'concat': return node.items.reduceRight((after, item) => this.compile(item, after), next);
      case 'alt': return this.alternatives(node.items, next);
      case 'repeat': return this.repeat(node, next);
    }
  }

  private charState(set: CharSet, next: number): number {
    const s = this.add(CHAR, next, -1);
    let matcher = this.shared.get(set);
    if (matcher === undefined) this.shared.set(set, (matcher = new CharMatcher(set)));
    this.matchers[s] = matcher;
    return s;
  }

  /** a|b|c: a chain of two-way splits, k - 1 for k alternatives. */
  private alternatives(items: Node[], next: number): number {
    let start = this.compile(items[items.length - 1]!, next);
    for (let i = items.length - 2; i >= 0; i--) start = this.add(SPLIT, this.compile(items[i]!, next), start);
    return start;
  }

  /**
   * x{n,m} is n copies of x, then m - n nested optional copies (each may exit to `next`);
   * x{n,} is n - 1 copies then x+. Laziness only orders matches, so a full match ignores it.
   */
  private repeat(node: Extract<Node, { type: 'repeat' }>, next: number): number {
    // A body without states matches only "", so any number of copies does too.
    if (this.sizes.get(node.body) === 0) return next;
    let start = next;
    let copies = node.min;
    if (node.max === Infinity) {
      start = this.loop(node.body, next, node.min === 0);
      copies = Math.max(node.min - 1, 0);
    } else {
      for (let i = node.min; i < node.max; i++) start = this.add(SPLIT, this.compile(node.body, start), next);
    }
    for (let i = 0; i < copies; i++) start = this.compile(node.body, start);
    return start;
  }

  /** x* (entered at the split) or x+ (entered at the body); the split loops back or leaves. */
  private loop(body: Node, next: number, star: boolean): number {
    const split = this.add(SPLIT, -1, next);
    const entry = this.compile(body, split);
    this.out1[split] = entry;
    return star ? split : entry;
  }
}

/** The compiled pattern; each `fullMatch` allocates its own state sets, so calls never interfere. */
class PikePattern implements LinearPattern {
  readonly stateCount: number;
  private cost = 0;

  constructor(
    readonly source: string,
    private readonly nfa: Nfa,
  ) {
    this.stateCount = nfa.kind.length;
  }

  get lastCost(): number {
    return this.cost;
  }

  fullMatch(text: string): boolean {
    const run = new Run(this.nfa, text);
    const matched = run.execute();
    this.cost = run.cost;
    return matched;
  }
}

/**
 * One simulation. `current` holds the CHAR and MATCH states live before the character at
 * `pos`; `marks[s] === step` says `s` was already visited at this position, which is
 * what bounds the work to one visit per state per position, and makes `*` over a
 * pattern that can match "" terminate.
 */
class Run {
  cost = 0;
  private step = 1;
  private readonly marks: Int32Array;
  private readonly stack: Int32Array;
  private current: Int32Array;
  private next: Int32Array;
  private currentLength = 0;
  private nextLength = 0;

  constructor(
    private readonly nfa: Nfa,
    private readonly text: string,
  ) {
    const n = nfa.kind.length;
    [this.marks, this.stack, this.current, this.next] = [new Int32Array(n), new Int32Array(n), new Int32Array(n), new Int32Array(n)];
  }

  execute(): boolean {
    const { text } = this;
    this.closure(this.nfa.start, 0);
    this.swap();
    let pos = 0;
    while (pos < text.length && this.currentLength > 0) {
      const cp = text.codePointAt(pos)!;
      const after = pos + (cp > 0xffff ? 2 : 1);
      this.step++;
      this.advance(cp, after);
      this.swap();
      pos = after;
    }
    return pos === text.length && this.marks[this.nfa.match] === this.step;
  }

  /** Every live CHAR state that accepts `cp` moves on to the closure of its successor at `after`. */
  private advance(cp: number, after: number): void {
    const { kind, out1, matchers } = this.nfa;
    for (let i = 0; i < this.currentLength; i++) {
      const s = this.current[i]!;
      if (kind[s] === CHAR && matchers[s]!.test(cp)) this.closure(out1[s]!, after);
    }
  }

  private swap(): void {
    [this.current, this.next] = [this.next, this.current];
    this.currentLength = this.nextLength;
    this.nextLength = 0;
  }

  /** Adds to `next` the CHAR and MATCH states reachable from `from` without consuming input. */
  private closure(from: number, pos: number): void {
    const { kind, out1, out2 } = this.nfa;
    let top = 0;
    const visit = (s: number) => {
      if (this.marks[s] === this.step) return;
      this.marks[s] = this.step;
      this.cost++;
      this.stack[top++] = s;
    };
    visit(from);
    while (top > 0) {
      const s = this.stack[--top]!;
      if (kind[s] === SPLIT) {
        visit(out1[s]!);
        visit(out2[s]!);
      } else if (kind[s] === ASSERT) {
        if (this.holds(this.nfa.asserts[s]!, pos)) visit(out1[s]!);
      } else this.next[this.nextLength++] = s;
    }
  }

  /** Python's anchors without MULTILINE: `$` also holds just before a final newline. */
  private holds(kind: AssertKind, pos: number): boolean {
    const n = this.text.length;
    if (kind === 'start') return pos === 0;
    if (kind === 'endOfString') return pos === n;
    return pos === n || (pos === n - 1 && this.text.charCodeAt(n - 1) === 10);
  }
}
