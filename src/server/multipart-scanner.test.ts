import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MultipartError, PartScanner, findDelimiter, parseParameters, parsePartHeaders, type PartEvent } from './multipart-scanner.js';

const enc = (s: string) => Buffer.from(s, 'utf8');

/** Every event of a whole body, checking it closed. */
function scan(body: Uint8Array | string, boundary = 'b'): PartEvent[] {
  const scanner = new PartScanner(boundary);
  const events = [...scanner.push(typeof body === 'string' ? enc(body) : body)];
  scanner.finish();
  return events;
}

function assertRefused(fn: () => unknown, pattern: RegExp, param: string | null = null): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof MultipartError, String(err));
    assert.equal(err.status, 400);
    assert.equal(err.param, param);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('findDelimiter', () => {
  const delim = enc('\r\n--xyz');

  it('finds a complete delimiter, or the tail that may begin one', () => {
    assert.deepEqual(findDelimiter(enc('ab\r\n--xyz\r\n'), delim, 0), { index: 2, complete: true });
    assert.deepEqual(findDelimiter(enc('ab\r\n--xyz'), delim, 3), { index: -1, complete: false });
    assert.deepEqual(findDelimiter(enc('ab\r\n--x'), delim, 0), { index: 2, complete: false });
    assert.deepEqual(findDelimiter(enc('ab\r'), delim, 0), { index: 2, complete: false });
    assert.deepEqual(findDelimiter(enc('ab\r\n--xy!'), delim, 0), { index: -1, complete: false });
    assert.deepEqual(findDelimiter(enc(''), delim, 0), { index: -1, complete: false });
  });

  it('property: agrees with a naive search on near-miss inputs', () => {
    const naive = (buf: Uint8Array, d: Uint8Array, from: number) => {
      for (let i = from; i < buf.length; i++) {
        const n = Math.min(d.length, buf.length - i);
        if (buf.subarray(i, i + n).every((b, j) => b === d[j])) return { index: i, complete: n === d.length };
      }
      return { index: -1, complete: false };
    };
    const pieces = fc.constantFrom('\r', '\n', '\r\n', '-', '--', '\r\n--', 'xy', 'xyz', 'a');
    const haystack = fc.oneof(fc.uint8Array({ maxLength: 40 }), fc.array(pieces, { maxLength: 12 }).map((ps) => enc(ps.join(''))));
    fc.assert(
      fc.property(haystack, fc.nat(), (buf, from) => {
        const start = from % (buf.length + 1);
        assert.deepEqual(findDelimiter(buf, delim, start), naive(buf, delim, start));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('PartScanner', () => {
  it('turns bytes into part events without any I/O', () => {
    const body = 'preamble\r\n--b\r\nContent-Disposition: form-data; name="n"\r\n\r\nhi\r\n--b--\r\nepilogue';
    assert.deepEqual(scan(body), [{ kind: 'part', head: { name: 'n', filename: undefined } }, { kind: 'data', bytes: enc('hi') }, { kind: 'end' }]);
  });

  it('keeps only a possible delimiter between chunks and hands body bytes on as they come', () => {
    const scanner = new PartScanner('b');
    const kinds = (chunk: string) => [...scanner.push(enc(chunk))].map((e) => (e.kind === 'data' ? Buffer.from(e.bytes).toString() : e.kind));
    assert.deepEqual(kinds('--b\r\nContent-Disposition: form-data; name="n"\r\n\r\nab\r'), ['part', 'ab']);
    assert.deepEqual(kinds('\n-'), []);
    assert.deepEqual(kinds('x'), ['\r\n-x']);
    assert.deepEqual(kinds('\r\n--b--'), ['end']);
    assert.ok(scanner.closed);
  });

  it('reports a problem only after every event before it', () => {
    const scanner = new PartScanner('b');
    const kinds: string[] = [];
    const body = enc('--b\r\nContent-Disposition: form-data; name="n"\r\n\r\nhi\r\n--b\r\nX-Broken\r\n\r\n');
    assertRefused(() => {
      for (const e of scanner.push(body)) kinds.push(e.kind);
    }, /part header line 'X-Broken' has no name/);
    assert.deepEqual(kinds, ['part', 'data', 'end']);
  });

  it('says what is wrong with a malformed part', () => {
    const cases: [string, RegExp][] = [
      ['--b\r\n\r\nno headers\r\n--b--', /no Content-Disposition header/],
      ['--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--', /no Content-Disposition header/],
      ['--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--', /no name/],
      ['--b\r\nContent-Disposition: form-data; name=""\r\n\r\nx\r\n--b--', /no name/],
      ['--b\r\nContent-Disposition: attachment; name="n"\r\n\r\nx\r\n--b--', /'attachment', not form-data/],
      ['--b\r\nContent-Disposition: form-data; name="n"; name="m"\r\n\r\nx\r\n--b--', /parameter 'name' is given twice/],
      ['--b\r\nContent-Disposition: form-data; name="n\r\n\r\nx\r\n--b--', /unclosed quoted string/],
      ['--b\r\nContent-Disposition: form-data; name="n"\r\ncontent-disposition: form-data; name="m"\r\n\r\nx\r\n--b--', /two Content-Disposition/],
      ['--b\r\nContent-Disposition: form-data; name="\xff"\r\n\r\nx\r\n--b--', /headers are not valid UTF-8/],
      ['--bX\r\n', /followed by neither a line break nor '--'/],
      ['--b\r\nContent-Disposition: form-data; name="n"\r\n\r\nx\r\n--b', /ended before its closing boundary/],
      ['--b\r\nContent-Disposition: form-data; name="n"\r\n\r\nx\r\n--b-', /ended before its closing boundary/],
      ['just a preamble', /ended before its closing boundary/],
      ['', /ended before its closing boundary/],
    ];
    for (const [text, pattern] of cases) assertRefused(() => scan(Buffer.from(text, 'latin1')), pattern);
  });

  it('caps a part header block at 16 KiB, however it arrives', () => {
    const head = (n: number) => enc(`--b\r\nContent-Disposition: form-data; name="n"\r\nX-Pad: ${'p'.repeat(n)}\r\n\r\nv\r\n--b--`);
    const fits = PartScanner.MAX_HEADER_BYTES - 'Content-Disposition: form-data; name="n"\r\nX-Pad: '.length;
    assert.equal(scan(head(fits)).length, 3);
    assertRefused(() => scan(head(fits + 1)), /headers exceed 16384 bytes/);
    const scanner = new PartScanner('b');
    assertRefused(() => {
      for (const byte of head(fits + 1)) [...scanner.push(Uint8Array.of(byte))];
    }, /headers exceed 16384 bytes/);
  });
});

describe('part headers', () => {
  const head = (disposition: string) => parsePartHeaders(enc(`Content-Type: text/plain\r\nContent-Disposition: ${disposition}`));

  it('reads quoted strings: \\" and \\\\ are escapes, other backslashes are kept', () => {
    assert.deepEqual(head('form-data; name="a \\"b\\" \\\\ c"; filename="C:\\dir\\x.bin"'), { name: 'a "b" \\ c', filename: 'C:\\dir\\x.bin' });
    assert.deepEqual(head('FORM-DATA;NAME=token ; FileName = "spaced"'), { name: 'token', filename: 'spaced' });
  });

  it('prefers filename* (UTF-8 or ISO-8859-1) to filename', () => {
    assert.deepEqual(head("form-data; name=f; filename=\"plain\"; filename*=UTF-8''%E2%82%AC%20x.bin"), { name: 'f', filename: '\u20ac x.bin' });
    assert.deepEqual(head("form-data; name=f; filename*=iso-8859-1'de'gr%FC%DFe"), { name: 'f', filename: 'gr\u00fc\u00dfe' });
    assertRefused(() => head("form-data; name=f; filename*=UTF-8''%E2%82"), /filename\* of 'f' is not valid percent-encoded UTF-8/, 'f');
    assertRefused(() => head("form-data; name=f; filename*=latin9''x"), /charset 'latin9'; expected UTF-8/, 'f');
    assertRefused(() => head('form-data; name=f; filename*=x'), /is not charset'language'value/, 'f');
  });

  it('parses header parameters, refusing what is not key=value', () => {
    assert.deepEqual(parseParameters('multipart/form-data; boundary="a b"; charset=utf-8;', 'Content-Type'), {
      type: 'multipart/form-data',
      params: new Map([
        ['boundary', 'a b'],
        ['charset', 'utf-8'],
      ]),
    });
    assertRefused(() => parseParameters('x; novalue', 'Content-Type'), /^Content-Type parameter 'novalue' is not key=value$/);
    assertRefused(() => parseParameters('x; =v', 'Content-Type'), /is not key=value/);
    assertRefused(() => parseParameters('x; a="q" junk', 'Content-Type'), /has 'junk' after parameter 'a'/);
  });

  it('keeps client text in messages short and on one line', () => {
    assertRefused(() => parsePartHeaders(enc(`X\r${'y'.repeat(100)}`)), /^malformed multipart body: part header line 'X\\ry{55}\.\.\.' has no name$/);
  });
});
