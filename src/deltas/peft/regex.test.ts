import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { compilePattern, PatternError, type PatternOptions } from './regex.js';

type Cases = [pattern: string, texts: [text: string, matches: boolean][]][];

// Expected answers computed with CPython 3.11: `re.fullmatch(pattern, text) is not None`.
const PYTHON_FULLMATCH: Record<string, Cases> = {
  'literals and escaped metacharacters': [
    ['q_proj', [['q_proj', true], ['q_pro', false], ['q_projx', false], ['Q_proj', false]]],
    ['a\\.b\\*c\\(\\)\\[\\]\\{\\}\\?\\+\\|\\^\\$\\\\', [['a.b*c()[]{}?+|^$\\', true], ['axb*c()[]{}?+|^$\\', false]]],
    [String.raw`\-\_\ \#\&\~`, [['-_ #&~', true]]],
    ['\u00e9\\\u00e9', [['\u00e9\u00e9', true], ['ee', false]]],
  ],
  'dot': [
    ['.', [['a', true], ['.', true], [' ', true], ['\t', true], ['\r', true], ['\n', false], ['', false], ['ab', false], ['\u2028', true], ['\u{1F600}', true]]],
    ['a.c', [['abc', true], ['a.c', true], ['a\nc', false], ['ac', false]]],
  ],
  'character escapes': [
    ['\\t\\n\\r\\f\\v\\a\\\\', [['\t\n\r\f\v\u0007\\', true]]],
    [String.raw`\x41\u00e9\U0001F600`, [['A\u00e9\u{1F600}', true], ['Ae\u{1F600}', false]]],
    [String.raw`\0\07\101\1010`, [['\u0000\u0007A', false], ['\u0000\u0007AA', false], ['\u0000\u0007A\u0008', false], ['\u0000\u0007AA0', true]]],
  ],
  'categories': [
    [String.raw`\d+`, [['0123456789', true], ['12a', false], ['', false], ['\u0663\u0664', true], ['\u00b2', false]]],
    [String.raw`\D`, [['a', true], ['5', false], ['\n', true], ['\u0663', false]]],
    [String.raw`\w+`, [['model_layers_3', true], ['a.b', false], ['\u00e9\u4e2d\u00aa', true], ['\u0301', false], ['\u203f', false], ['\u00b2', true]]],
    [String.raw`\W`, [['.', true], ['_', false], [' ', true], ['a', false], ['\u0301', true]]],
    [String.raw`\s+`, [[' \t\n\r\f\v', true], ['\u001c\u001d\u001e\u001f', true], ['\u0085\u00a0\u3000', true], ['\ufeff', false], ['\u200b', false]]],
    [String.raw`\S`, [['a', true], [' ', false], ['\ufeff', true]]],
  ],
  'character classes': [
    ['[abc]', [['a', true], ['c', true], ['d', false], ['', false]]],
    ['[a-c_0-9]+', [['ab_09', true], ['abd', false]]],
    ['[^a-c]', [['d', true], ['a', false], ['\n', true], ['', false]]],
    ['[]a]', [[']', true], ['a', true], ['b', false]]],
    ['[^]a]', [[']', false], ['a', false], ['b', true]]],
    ['[a-]', [['a', true], ['-', true], ['b', false]]],
    ['[-a]', [['a', true], ['-', true], ['b', false]]],
    [String.raw`[\d.]+`, [['3.14', true], ['3,14', false]]],
    [String.raw`[\w-]`, [['a', true], ['-', true], ['.', false]]],
    [String.raw`[\s\S]`, [['\n', true], ['a', true]]],
    ['[.*+?(){}|^$]+', [['.*+?(){}|^$', true], ['a', false]]],
    [String.raw`[\]\\\-]+`, [[']\\-', true], ['a', false]]],
    [String.raw`[\b]`, [['\u0008', true], ['b', false]]],
    [String.raw`[\x41-\x43]`, [['B', true], ['D', false]]],
    [String.raw`[\101-\103\0]`, [['C', true], ['\u0000', true], ['D', false]]],
    ['[[]', [['[', true]]],
    ['[a-a]', [['a', true], ['b', false]]],
  ],
  'groups': [
    ['(ab)+', [['abab', true], ['aba', false], ['', false]]],
    ['(?:ab)+', [['abab', true], ['aba', false]]],
    ['(?P<proj>q|v)_proj', [['q_proj', true], ['k_proj', false]]],
    ['()', [['', true], ['a', false]]],
    ['(?:)', [['', true], ['a', false]]],
    ['((a)(b))', [['ab', true]]],
  ],
  'alternation': [
    ['q_proj|v_proj', [['q_proj', true], ['v_proj', true], ['k_proj', false], ['q_projv_proj', false]]],
    ['a|', [['a', true], ['', true], ['b', false]]],
    ['|a', [['a', true], ['', true], ['b', false]]],
    ['a||b', [['a', true], ['', true], ['b', true], ['ab', false]]],
    ['(a|b|)c', [['ac', true], ['bc', true], ['c', true], ['abc', false]]],
  ],
  'quantifiers': [
    ['a*', [['', true], ['aaa', true], ['ab', false]]],
    ['a+', [['', false], ['a', true], ['aaa', true]]],
    ['a?b', [['b', true], ['ab', true], ['aab', false]]],
    ['a{3}', [['aa', false], ['aaa', true], ['aaaa', false]]],
    ['a{2,}', [['a', false], ['aa', true], ['aaaaa', true]]],
    ['a{,2}', [['', true], ['aa', true], ['aaa', false]]],
    ['a{1,3}', [['', false], ['a', true], ['aaa', true], ['aaaa', false]]],
    ['a{,}', [['', true], ['aaaa', true]]],
    ['a{0}', [['', true], ['a', false]]],
    ['a{0,0}b', [['b', true], ['ab', false]]],
    ['(ab){2}', [['abab', true], ['ab', false]]],
    ['(a|bc){2,3}', [['abc', true], ['bcbcbc', true], ['a', false], ['aaaa', false]]],
    ['a*?b+?c??d{1,2}?e{2}?', [['bde', false], ['abbcddee', true], ['aabcdee', true]]],
    ['(a*)*', [['', true], ['aaa', true], ['b', false]]],
    ['(a*)+b', [['b', true], ['aab', true]]],
    ['(a?){3}b', [['b', true], ['aab', true], ['aaaab', false]]],
    ['(|a)+', [['', true], ['aa', true]]],
    ['(a{0}){5}', [['', true], ['a', false]]],
  ],
  'literal braces': [
    ['a{', [['a{', true], ['a', false]]],
    ['a{x}', [['a{x}', true], ['ax', false]]],
    ['a{}', [['a{}', true], ['a', false]]],
    ['{', [['{', true]]],
    ['{}', [['{}', true]]],
    ['a{1,2', [['a{1,2', true]]],
    ['a{1, 2}', [['a{1, 2}', true], ['aa', false]]],
    ['a{-1}', [['a{-1}', true]]],
    ['x}', [['x}', true]]],
    ['a{1}{', [['a{', true]]],
  ],
  'anchors': [
    ['^a$', [['a', true], ['a\n', false], ['', false]]],
    [String.raw`a$\n`, [['a\n', true], ['a', false]]],
    [String.raw`a\Z`, [['a', true], ['a\n', false]]],
    [String.raw`\Aa`, [['a', true]]],
    ['a^b', [['ab', false]]],
    ['a$b', [['ab', false]]],
    ['(^a|b)+', [['a', true], ['ab', true], ['ba', false], ['abb', true]]],
    ['(a|$)+', [['a', true], ['aa', true], ['', true]]],
    ['(?:^)*a', [['a', true]]],
    ['$', [['', true], ['\n', false]]],
    [String.raw`\n$`, [['\n', true]]],
  ],
  'comments': [
    ['a(?#comment)b', [['ab', true]]],
    ['a(?#x)*', [['', true], ['aaa', true]]],
    [String.raw`a(?#a\)b)c`, [['ac', true]]],
  ],
};

describe('compilePattern matches as Python re.fullmatch does', () => {
  for (const [construct, rows] of Object.entries(PYTHON_FULLMATCH)) {
    it(construct, () => {
      for (const [pattern, texts] of rows) {
        const compiled = compilePattern(pattern);
        for (const [text, want] of texts) {
          assert.equal(compiled.fullMatch(text), want, `${JSON.stringify(pattern)} on ${JSON.stringify(text)}`);
        }
      }
    });
  }
});

/** Asserts that `pattern` is rejected with a PatternError naming `problem` at `position`. */
function assertRejected(pattern: string, problem: RegExp, position: number, options?: PatternOptions): void {
  let error: unknown;
  try {
    compilePattern(pattern, options);
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof PatternError, `${JSON.stringify(pattern)} was accepted`);
  assert.equal(error.code, 'invalid_pattern');
  assert.equal(error.pattern, pattern);
  assert.match(error.message, problem);
  assert.equal(error.position, position, `${JSON.stringify(pattern)}: ${error.message}`);
  assert.ok(error.message.endsWith(`(at ${position})`), error.message);
}

// Python accepts these, but they need backtracking (or, for \b and \N, more than we implement).
const UNSUPPORTED: [pattern: string, problem: RegExp, position: number][] = [
  [String.raw`(a)\1`, /backreference \\1 is not supported/, 3],
  [String.raw`(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)\10`, /backreference \\10 is not supported/, 30],
  ['(?P<x>a)(?P=x)', /backreference \(\?P=x\) is not supported/, 8],
  ['a(?=b)', /lookahead \(\?=\.\.\.\) is not supported/, 1],
  ['a(?!b)', /lookahead \(\?!\.\.\.\) is not supported/, 1],
  ['(?<=a)b', /lookbehind \(\?<=\.\.\.\) is not supported/, 0],
  ['(?<!a)b', /lookbehind \(\?<!\.\.\.\) is not supported/, 0],
  ['(?i)q_proj', /inline flags \(\?i\.\.\.\) are not supported/, 0],
  ['(?s:.)', /inline flags \(\?s\.\.\.\) are not supported/, 0],
  ['(?-i:a)', /inline flags \(\?-\.\.\.\) are not supported/, 0],
  ['(a)(?(1)b|c)', /conditional group .* is not supported/, 3],
  ['(?>a)', /atomic group \(\?>\.\.\.\) is not supported/, 0],
  ['a*+', /possessive quantifier \*\+ is not supported/, 1],
  ['a{2,3}+', /possessive quantifier \{2,3\}\+ is not supported/, 1],
  [String.raw`\bq_proj`, /word boundary \\b is not supported/, 0],
  [String.raw`a\B`, /word boundary \\B is not supported/, 1],
  [String.raw`\N{EM DASH}`, /named Unicode escape \\N\{\.\.\.\} is not supported/, 0],
];

// Python rejects these too; the problem is worded as CPython words it.
const INVALID: [pattern: string, problem: RegExp, position: number][] = [
  ['(a', /missing \), unterminated subpattern/, 0],
  ['a)', /unbalanced parenthesis/, 1],
  ['[z-a]', /bad character range z-a/, 1],
  [String.raw`[a-\d]`, /bad character range a-\\d/, 1],
  ['*a', /nothing to repeat/, 0],
  ['a|+b', /nothing to repeat/, 2],
  ['^*', /nothing to repeat/, 1],
  [String.raw`\Z{2}`, /nothing to repeat/, 2],
  ['a**', /multiple repeat/, 2],
  ['a{2}{3}', /multiple repeat/, 4],
  ['a???', /multiple repeat/, 3],
  ['a{5,3}', /min repeat 5 greater than max repeat 3/, 1],
  ['[abc', /unterminated character set/, 0],
  ['[]', /unterminated character set/, 0],
  [String.raw`\q`, /bad escape \\q/, 0],
  ['a\\', /bad escape \(end of pattern\)/, 1],
  [String.raw`[\A]`, /bad escape \\A/, 1],
  [String.raw`\x4g`, /incomplete escape \\x4/, 0],
  [String.raw`\U00110000`, /bad escape \\U00110000/, 0],
  [String.raw`\777`, /octal escape value \\777 outside of range 0-0o377/, 0],
  ['(?', /unexpected end of pattern/, 2],
  ['(?P<>a)', /missing group name/, 4],
  ['(?P<1a>a)', /bad character in group name "1a"/, 4],
  ['(?P<x>a)(?P<x>b)', /redefinition of group name "x"/, 12],
  ['(?<x>a)', /unknown extension \?<x/, 0],
  ['(?#abc', /missing \), unterminated comment/, 0],
];

describe('compilePattern rejects', () => {
  it('syntax that needs backtracking or is not implemented, naming it', () => {
    for (const [pattern, problem, position] of UNSUPPORTED) assertRejected(pattern, problem, position);
  });

  it('what Python rejects, with the problem and its position', () => {
    for (const [pattern, problem, position] of INVALID) assertRejected(pattern, problem, position);
  });

  it('patterns longer than maxLength code points', () => {
    assert.equal(compilePattern('a'.repeat(256)).fullMatch('a'.repeat(256)), true);
    assertRejected('a'.repeat(257), /pattern is longer than the limit of 256 characters/, 256);
    assertRejected('x'.repeat(1_000_000), /longer than the limit of 256/, 256);
    assertRejected('abcd', /longer than the limit of 3 characters/, 3, { maxLength: 3 });
    // 256 code points in 512 UTF-16 units: Python counts code points, and so do we.
    assert.equal(compilePattern('\u{1F600}'.repeat(256)).fullMatch('\u{1F600}'.repeat(256)), true);
  });

  it('repeat counts over 1000', () => {
    assertRejected('a{1001}', /repeat count 1001 exceeds the limit of 1000/, 1);
    assertRejected('a{2,99999999999999999999}', /repeat count 99999999999999999999 exceeds the limit of 1000/, 1);
    assert.equal(compilePattern('a{1000}').stateCount, 1001);
  });

  it('NFAs over maxStates, before building them', () => {
    // The innermost repeat that passes the limit is named: 100 * 101 states at `{101}`.
    assertRejected('(a{100}){101}', /needs at least 10100 NFA states, over the limit of 10000/, 8);
    assertRejected('((a{100}){100}){100}', /needs at least 1000000 NFA states/, 15);
    // 10,000 states plus the match state.
    assertRejected('(a{100}){100}', /needs at least 10001 NFA states, over the limit of 10000/, 0);
    assertRejected('abc', /needs at least 4 NFA states, over the limit of 3/, 0, { maxStates: 3 });
    assert.equal(compilePattern('[a-z_]{999}\\.').stateCount, 1001);
  });

  it('options that are not positive integers', () => {
    assert.throws(() => compilePattern('a', { maxStates: 0 }), /maxStates must be a positive integer, got 0/);
    assert.throws(() => compilePattern('a', { maxLength: Number.NaN }), /maxLength must be a positive integer, got NaN/);
  });

  it('groups nested deeper than 200', () => {
    const deep = '('.repeat(201) + ')'.repeat(201);
    assertRejected(deep, /groups nested deeper than 200/, 200, { maxLength: 1000 });
  });
});

describe('NFA size', () => {
  it('is one state per character, per alternative split and per loop, plus the match state', () => {
    assert.equal(compilePattern('abc').stateCount, 4);
    assert.equal(compilePattern('a|b|c').stateCount, 6);
    assert.equal(compilePattern('a*').stateCount, 3);
    assert.equal(compilePattern('a{2,4}').stateCount, 2 + 2 * 2 + 1);
  });

  it('drops repeats of bodies that only match the empty string', () => {
    const nested = compilePattern('(((){1000}){1000}){1000}');
    assert.equal(nested.stateCount, 1);
    assert.equal(nested.fullMatch(''), true);
    assert.equal(nested.fullMatch('a'), false);
  });
});

// Inputs on which backtracking engines take exponential time.
const REDOS: [pattern: string, text: string, matches: boolean][] = [
  [String.raw`(\w|.)*Z`, 'a'.repeat(60), false],
  [String.raw`(\w|.)*Z`, `${'a'.repeat(59)}Z`, true],
  ['(a+)+b', 'a'.repeat(60), false],
  ['(a+)+b', `${'a'.repeat(59)}b`, true],
  ['(a|a)*c', 'a'.repeat(60), false],
  ['(a|a)*c', `${'a'.repeat(59)}c`, true],
  ['(.*a){12}', 'a'.repeat(60), true],
  ['(.*a){12}', `${'a'.repeat(11)}${'b'.repeat(49)}`, false],
  ['(.*a){12}', `${'b'.repeat(48)}${'a'.repeat(12)}`, true],
  ['((a*)*)*b', 'a'.repeat(60), false],
  ['((a*)*)*b', `${'a'.repeat(59)}b`, true],
];

describe('linear-time matching', () => {
  it('decides ReDoS patterns on 60 characters within (len + 1) * states state visits', () => {
    for (const [pattern, text, want] of REDOS) {
      const compiled = compilePattern(pattern);
      assert.equal(compiled.fullMatch(text), want, `${pattern} on ${text}`);
      assert.ok(compiled.lastCost > 0);
      assert.ok(compiled.lastCost <= (text.length + 1) * compiled.stateCount, `${pattern}: cost ${compiled.lastCost} for ${compiled.stateCount} states`);
    }
  });

  it('stops as soon as no state is live', () => {
    const compiled = compilePattern('q_proj');
    assert.equal(compiled.fullMatch(`x${'a'.repeat(10_000)}`), false);
    assert.ok(compiled.lastCost <= 2 * compiled.stateCount, `cost ${compiled.lastCost}`);
  });
});

describe('PEFT compositions', () => {
  const NAME = 'model.layers.3.self_attn.q_proj';
  // rank_pattern / alpha_pattern key K: re.match(rf"(.*\.)?({K})$", name); answers from CPython.
  const KEYS: [key: string, matches: boolean][] = [
    ['q_proj', true],
    ['layers.3.self_attn.q_proj', true],
    [String.raw`self_attn\..*`, true],
    [NAME, true],
    [String.raw`layers\.\d+\.self_attn\.q_proj`, true],
    ['.*_proj', true],
    ['q_proj|v_proj', true],
    ['k_proj', false],
    ['proj', false],
    ['attn.q_proj', false],
    ['layers.3', false],
    ['self_attn', false],
  ];
  // target_modules as a string: re.fullmatch(pattern, name).
  const TARGETS: [pattern: string, matches: boolean][] = [
    [String.raw`.*\.(q|v)_proj`, true],
    [String.raw`.*\.(k|o)_proj`, false],
    [String.raw`model\.layers\.\d+\.self_attn\.(q_proj|v_proj)`, true],
    ['q_proj', false],
    [String.raw`.*\.layers\.[0-2]\..*`, false],
  ];

  it('rank_pattern and alpha_pattern keys match module-name suffixes at a dot', () => {
    for (const [key, want] of KEYS) assert.equal(compilePattern(`(.*\\.)?(${key})`).fullMatch(NAME), want, key);
  });

  it('target_modules match whole module names', () => {
    for (const [pattern, want] of TARGETS) assert.equal(compilePattern(pattern).fullMatch(NAME), want, pattern);
  });
});

// Property test: random patterns from the part of the subset where JS RegExp (no flags)
// has Python's semantics, on texts over an alphabet where the two agree (ASCII, no
// newline: JS `\w \d \s` and `.` differ from Python only outside it).
const ALPHABET = ['a', 'b', '.', '_', '0', '7', '9', ' '];
const CATEGORIES = ['d', 'D', 'w', 'W', 's', 'S'] as const;
const MAX_TEXT = 8;

type ClassPart = { k: 'char'; c: string } | { k: 'range'; lo: string; hi: string } | { k: 'category'; c: string };
type Gen =
  | { k: 'char'; c: string }
  | { k: 'any' }
  | { k: 'category'; c: string }
  | { k: 'class'; negated: boolean; parts: ClassPart[] }
  | { k: 'anchor'; a: '^' | '$' }
  | { k: 'group'; kind: 'capture' | 'plain' | 'named'; body: Gen }
  | { k: 'concat'; items: Gen[] }
  | { k: 'alt'; items: Gen[] }
  | { k: 'repeat'; body: Gen; q: string; min: number; max: number; lazy: boolean };

// JS reads `{,m}` and `{,}` as literals, so only forms both engines share are generated.
const QUANTIFIERS: [q: string, min: number, max: number][] = [
  ['*', 0, Infinity], ['+', 1, Infinity], ['?', 0, 1], ['{0}', 0, 0], ['{2}', 2, 2],
  ['{0,}', 0, Infinity], ['{2,}', 2, Infinity], ['{0,1}', 0, 1], ['{1,3}', 1, 3], ['{0,2}', 0, 2],
];

const charArb = fc.constantFrom(...ALPHABET);
const classPartArb: fc.Arbitrary<ClassPart> = fc.oneof(
  charArb.map((c) => ({ k: 'char' as const, c })),
  fc.tuple(charArb, charArb).map(([x, y]) => ({ k: 'range' as const, lo: x < y ? x : y, hi: x < y ? y : x })),
  fc.constantFrom(...CATEGORIES).map((c) => ({ k: 'category' as const, c })),
);
const leafArb: fc.Arbitrary<Gen> = fc.oneof(
  { arbitrary: charArb.map((c): Gen => ({ k: 'char', c })), weight: 6 },
  { arbitrary: fc.constant<Gen>({ k: 'any' }), weight: 1 },
  { arbitrary: fc.constantFrom(...CATEGORIES).map((c): Gen => ({ k: 'category', c })), weight: 1 },
  { arbitrary: fc.record({ negated: fc.boolean(), parts: fc.array(classPartArb, { minLength: 1, maxLength: 3 }) }).map((r): Gen => ({ k: 'class', ...r })), weight: 2 },
  { arbitrary: fc.constantFrom<Gen>({ k: 'anchor', a: '^' }, { k: 'anchor', a: '$' }), weight: 1 },
);
// Depth 3 and texts of 8 characters keep JS's own backtracking fast on what is generated.
const { node: patternArb } = fc.letrec<{ node: Gen }>((tie) => ({
  node: fc.oneof(
    { maxDepth: 3, depthSize: 'small' },
    leafArb,
    fc.array(tie('node'), { maxLength: 4 }).map((items): Gen => ({ k: 'concat', items })),
    fc.array(tie('node'), { minLength: 2, maxLength: 3 }).map((items): Gen => ({ k: 'alt', items })),
    fc.record({ kind: fc.constantFrom('capture' as const, 'plain' as const, 'named' as const), body: tie('node') }).map((r): Gen => ({ k: 'group', ...r })),
    {
      // Weighted up so loops inside loops, the hard case for the NFA, are common.
      weight: 3,
      arbitrary: fc.record({ body: tie('node'), quantifier: fc.constantFrom(...QUANTIFIERS), lazy: fc.boolean() })
        .map(({ body, quantifier: [q, min, max], lazy }): Gen => ({ k: 'repeat', body, q, min, max, lazy })),
    },
  ),
}));

function renderPart(part: ClassPart): string {
  if (part.k === 'category') return `\\${part.c}`;
  return part.k === 'char' ? part.c : `${part.lo}-${part.hi}`;
}

/** One pattern string; only named groups are spelled differently (`(?P<n>` vs `(?<n>`). */
function render(node: Gen, flavor: 'python' | 'js', names = { next: 0 }): string {
  const r = (child: Gen) => render(child, flavor, names);
  switch (node.k) {
    case 'char': return node.c === '.' ? '\\.' : node.c;
    case 'any': return '.';
    case 'category': return `\\${node.c}`;
    case 'class': return `[${node.negated ? '^' : ''}${node.parts.map(renderPart).join('')}]`;
    case 'anchor': return node.a;
    case 'group': {
      const name = `g${names.next++}`;
      const open = { capture: '(', plain: '(?:', named: flavor === 'python' ? `(?P<${name}>` : `(?<${name}>` }[node.kind];
      return `${open}${r(node.body)})`;
    }
    case 'concat': return node.items.map((item) => (item.k === 'alt' ? `(?:${r(item)})` : r(item))).join('');
    case 'alt': return node.items.map(r).join('|');
    case 'repeat': {
      const atomic = ['char', 'any', 'category', 'class', 'group'].includes(node.body.k);
      return `${atomic ? r(node.body) : `(?:${r(node.body)})`}${node.q}${node.lazy ? '?' : ''}`;
    }
  }
}

/** A text the pattern likely matches (anchors aside), steered by `choose`, so matches are common. */
function witness(node: Gen, choose: (n: number) => number): string {
  const w = (child: Gen) => witness(child, choose);
  switch (node.k) {
    case 'char': return node.c;
    case 'anchor': return '';
    case 'any': case 'category': case 'class': {
      const single = new RegExp(`^${render(node, 'js')}$`);
      const fits = ALPHABET.filter((c) => single.test(c));
      return fits.length === 0 ? '' : fits[choose(fits.length)]!;
    }
    case 'group': return w(node.body);
    case 'concat': return node.items.map(w).join('');
    case 'alt': return w(node.items[choose(node.items.length)]!);
    case 'repeat': {
      const count = Math.min(node.min + choose(3), node.max);
      return Array.from({ length: count }, () => w(node.body)).join('');
    }
  }
}

/** Texts for one pattern: a witness, a one-character edit of it, and a random string. */
const caseArb = patternArb.chain((pattern) =>
  fc.record({
    pattern: fc.constant(pattern),
    tape: fc.array(fc.nat(), { minLength: 1, maxLength: 40 }),
    edit: fc.tuple(fc.nat(), charArb, fc.constantFrom('insert', 'delete', 'replace')),
    random: fc.array(charArb, { maxLength: MAX_TEXT }).map((cs) => cs.join('')),
  }),
);

type CaseValue = typeof caseArb extends fc.Arbitrary<infer T> ? T : never;

function texts({ pattern, tape, edit: [at, c, op], random }: CaseValue): string[] {
  let i = 0;
  const base = witness(pattern, (n) => tape[i++ % tape.length]! % n).slice(0, MAX_TEXT);
  const k = base.length === 0 ? 0 : at % base.length;
  const edited = op === 'insert' ? base.slice(0, k) + c + base.slice(k) : base.slice(0, k) + (op === 'replace' ? c : '') + base.slice(k + 1);
  return [base, edited.slice(0, MAX_TEXT), random];
}

describe('property: agrees with JS RegExp where the two share semantics', () => {
  it('fullMatch(s) === /^(?:p)$/.test(s), within the linear cost bound', () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const python = render(c.pattern, 'python');
        const js = new RegExp(`^(?:${render(c.pattern, 'js')})$`);
        const compiled = compilePattern(python);
        for (const text of texts(c)) {
          assert.equal(compiled.fullMatch(text), js.test(text), `${python} on ${JSON.stringify(text)}`);
          assert.ok(compiled.lastCost <= (text.length + 1) * compiled.stateCount);
        }
      }),
      { numRuns: 3000 },
    );
  });
});
