import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { MultipartError, readMultipart, type MultipartOptions } from './multipart.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-multipart-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

let spools = 0;
/** A fresh spool directory per parse, so "nothing left behind" is checked for that parse alone. */
function freshSpool(): string {
  return path.join(dir, `spool-${spools++}`);
}

function spoolEntries(spoolDir: string): string[] {
  return fs.existsSync(spoolDir) ? fs.readdirSync(spoolDir) : [];
}

const FIELDS = ['name', 'purpose', 'note'] as const;
const FILES = ['adapter_config', 'adapter_model', 'training_file'] as const;
const LIMIT = 4096;

function options(spoolDir: string, overrides: Partial<MultipartOptions> = {}): MultipartOptions {
  const files = Object.fromEntries(FILES.map((f) => [f, LIMIT]));
  return { spoolDir, maxBodyBytes: 1 << 20, files, fields: FIELDS, maxFieldBytes: LIMIT, ...overrides };
}

/** A pull-driven stream of `chunks` that counts what was pulled from it and whether it was cancelled. */
function streamOf(chunks: Iterable<Uint8Array>): { stream: ReadableStream<Uint8Array>; pulled: () => number; cancelled: () => boolean } {
  const it = chunks[Symbol.iterator]();
  let pulled = 0;
  let cancelled = false;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      const next = it.next();
      if (next.done) return controller.close();
      pulled += next.value.length;
      controller.enqueue(next.value);
    },
    cancel() {
      cancelled = true;
    },
  });
  return { stream, pulled: () => pulled, cancelled: () => cancelled };
}

/** `body` cut at `cuts` (any positions, repeated ones give empty chunks). */
function rechunk(body: Uint8Array, cuts: number[]): Uint8Array[] {
  const at = cuts.map((c) => c % (body.length + 1)).sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let start = 0;
  for (const cut of at) {
    chunks.push(body.slice(start, cut));
    start = cut;
  }
  chunks.push(body.slice(start));
  return chunks;
}

function bytesOf(body: Uint8Array): Uint8Array[] {
  return Array.from(body, (b) => Uint8Array.of(b));
}

/** What a parse came to, with file contents in place of paths, comparable with deepEqual. */
type Outcome =
  | { ok: true; fields: Record<string, string>; files: Record<string, { filename: string | null; size: number; hex: string }> }
  | { ok: false; status: number; message: string; param: string | null };

/** Parses, reads the files back, cleans up, and checks the spool directory is empty either way. */
async function outcome(chunks: Iterable<Uint8Array>, contentType: string | undefined, overrides: Partial<MultipartOptions> = {}): Promise<Outcome> {
  const spoolDir = freshSpool();
  try {
    const form = await readMultipart(streamOf(chunks).stream, contentType, options(spoolDir, overrides));
    const files: Extract<Outcome, { ok: true }>['files'] = {};
    for (const [field, f] of Object.entries(form.files)) {
      assert.equal(f.field, field);
      assert.equal(path.dirname(f.path), spoolDir);
      files[field] = { filename: f.filename, size: f.size, hex: fs.readFileSync(f.path).toString('hex') };
    }
    await form.cleanup();
    assert.deepEqual(spoolEntries(spoolDir), [], 'cleanup() removes every spooled file');
    return { ok: true, fields: { ...form.fields }, files };
  } catch (err) {
    if (!(err instanceof MultipartError)) throw err;
    assert.deepEqual(spoolEntries(spoolDir), [], `a failed parse leaves nothing behind (${err.message})`);
    return { ok: false, status: err.status, message: err.message, param: err.param };
  }
}

interface PartSpec {
  name: string;
  /** undefined: a text part. */
  filename?: string;
  data: Uint8Array;
  /** Transport padding after this part's delimiter. */
  padding?: string;
  contentType?: string;
}

const enc = (s: string) => Buffer.from(s, 'utf8');
const quote = (s: string) => `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`;

/** A body by RFC 2046's grammar, written independently of the parser. */
function encode(boundary: string, parts: PartSpec[], preamble = new Uint8Array(0), epilogue = new Uint8Array(0)): Uint8Array {
  const out: Uint8Array[] = preamble.length ? [preamble, enc('\r\n')] : [];
  for (const p of parts) {
    const disposition = `form-data; name=${quote(p.name)}${p.filename === undefined ? '' : `; filename=${quote(p.filename)}`}`;
    const type = p.contentType ? `Content-Type: ${p.contentType}\r\n` : '';
    out.push(enc(`--${boundary}${p.padding ?? ''}\r\nContent-Disposition: ${disposition}\r\n${type}\r\n`), p.data, enc('\r\n'));
  }
  out.push(enc(`--${boundary}--`), epilogue);
  return Buffer.concat(out);
}

/** What `encode(parts)` must parse to. */
function expected(parts: PartSpec[]): Outcome {
  const fields: Record<string, string> = {};
  const files: Extract<Outcome, { ok: true }>['files'] = {};
  for (const p of parts) {
    if (p.filename === undefined) fields[p.name] = Buffer.from(p.data).toString('utf8');
    else files[p.name] = { filename: p.filename || null, size: p.data.length, hex: Buffer.from(p.data).toString('hex') };
  }
  return { ok: true, fields, files };
}

const ctype = (boundary: string) => `multipart/form-data; boundary=${quote(boundary)}`;
const includes = (hay: Uint8Array, needle: string) => Buffer.from(hay).includes(needle, 0, 'latin1');

// Generators. Contents are built from pieces of the delimiter so that near-misses (CR, CRLF, "--",
// the boundary less its last character) are common, then filtered to exclude the delimiter itself.
const BCHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'()+_,-./:=? ";
const boundaryArb = fc.string({ unit: fc.constantFrom(...BCHARS), minLength: 1, maxLength: 70 }).filter((b) => !b.endsWith(' '));

/** Text (valid UTF-8) when `maxBinary` is 0, else also arbitrary bytes up to that length. */
function nearMissBytes(boundary: string, maxBinary: number): fc.Arbitrary<Uint8Array> {
  const pieces = ['\r', '\n', '\r\n', '-', '--', '\r\n--', boundary, boundary.slice(0, -1), `\r\n--${boundary.slice(0, -1)}`, 'x', '\u00e9'];
  const joined = fc.array(fc.constantFrom(...pieces), { maxLength: 12 }).map((ps) => enc(ps.join('')));
  const text = fc.oneof(joined, fc.string({ unit: 'grapheme', maxLength: 40 }).map(enc));
  return maxBinary ? fc.oneof(fc.uint8Array({ maxLength: maxBinary }), text) : text;
}

const filenameArb = fc.string({ unit: fc.constantFrom(...'ab.-_ 0\u00e9\u20ac"\\\u{1F600}'), maxLength: 20 });
const paddingArb = fc.constantFrom('', ' ', '\t', ' \t ');

function formArb(boundary: string): fc.Arbitrary<PartSpec[]> {
  const delimiter = `\r\n--${boundary}`;
  const data = nearMissBytes(boundary, 300).filter((d) => !includes(d, delimiter));
  const text = nearMissBytes(boundary, 0).filter((d) => !includes(d, delimiter));
  return fc.shuffledSubarray([...FIELDS, ...FILES]).chain((names) =>
    fc.tuple(
      ...names.map((name) =>
        (FILES as readonly string[]).includes(name)
          ? fc.record({ name: fc.constant(name), filename: filenameArb, data, padding: paddingArb, contentType: fc.constantFrom(undefined, 'application/octet-stream') })
          : fc.record({ name: fc.constant(name), data: text, padding: paddingArb }),
      ),
    ),
  );
}

/** A valid body with its boundary and what it parses to. */
const validBodyArb = boundaryArb.chain((boundary) =>
  fc
    .record({
      parts: formArb(boundary),
      preamble: fc.uint8Array({ maxLength: 30 }).filter((p) => !includes(Buffer.concat([enc('\r\n'), p]), `\r\n--${boundary}`)),
      epilogue: fc.oneof(fc.constant(enc('\r\n')), fc.uint8Array({ maxLength: 30 }), fc.constant(enc(`\r\n--${boundary}\r\n`))),
    })
    .map(({ parts, preamble, epilogue }) => ({ boundary, parts, body: encode(boundary, parts, preamble, epilogue), closeEnd: encode(boundary, parts, preamble).length })),
);

const cutsArb = fc.array(fc.nat(), { maxLength: 24 });

describe('readMultipart: content type and options', () => {
  const body = () => streamOf([enc('--b--')]).stream;
  const refused = async (contentType: string | undefined, status: number, pattern: RegExp) => {
    await assert.rejects(readMultipart(body(), contentType, options(freshSpool())), (err: unknown) => {
      assert.ok(err instanceof MultipartError, String(err));
      assert.equal(err.status, status);
      assert.match(err.message, pattern);
      return true;
    });
  };

  it('wants multipart/form-data (415) with a valid boundary (400)', async () => {
    await refused(undefined, 415, /expected Content-Type multipart\/form-data with a boundary, got none/);
    await refused('application/json', 415, /got 'application\/json'/);
    await refused('multipart/mixed; boundary=b', 415, /multipart\/form-data/);
    await refused('multipart/form-data', 400, /boundary parameter is missing/);
    await refused('multipart/form-data; boundary=""', 400, /not 1-70/);
    await refused(`multipart/form-data; boundary=${'a'.repeat(71)}`, 400, /not 1-70/);
    await refused('multipart/form-data; boundary="ends in space "', 400, /not 1-70/);
    await refused('multipart/form-data; boundary="unclosed', 400, /unclosed quoted string/);
    await refused('multipart/form-data; boundary=a; boundary=b', 400, /given twice/);
  });

  it('reads the boundary quoted or not, in any case, up to 70 characters', async () => {
    const parts = [{ name: 'name', data: enc('v') }];
    for (const [boundary, header] of [
      ['simple', 'multipart/form-data; boundary=simple'],
      ["'()+_,-./:=? x", `Multipart/Form-Data; charset=utf-8; BOUNDARY="'()+_,-./:=? x"`],
      ['b'.repeat(70), `multipart/form-data;boundary=${'b'.repeat(70)};`],
    ] as const) {
      assert.deepEqual(await outcome([encode(boundary, parts)], header), expected(parts));
    }
  });

  it('needs a body', async () => {
    await assert.rejects(readMultipart(null, 'multipart/form-data; boundary=b', options(freshSpool())), { name: 'MultipartError', status: 400 });
  });

  it('throws plain Errors for mistakes in the options, before reading', async () => {
    const bad: Partial<MultipartOptions>[] = [{ maxBodyBytes: 0 }, { maxFieldBytes: -1 }, { maxBodyBytes: 1.5 }, { files: { f: 0 } }, { spoolDir: '' }, { fields: ['adapter_model'] }];
    for (const overrides of bad) {
      await assert.rejects(readMultipart(body(), ctype('b'), options(freshSpool(), overrides)), (err: Error) => !(err instanceof MultipartError) && /readMultipart:/.test(err.message));
    }
  });
});

describe('readMultipart: bodies from the platform', () => {
  it('parses FormData as encoded by Response to the same fields and file bytes', async () => {
    const model = new Uint8Array(3000).map((_, i) => (i * 31) % 256);
    const form = new FormData();
    form.append('name', 'my-delta \u20ac');
    form.append('adapter_config', new Blob(['{"r": 8}']), 'adapter_config.json');
    form.append('adapter_model', new Blob([model]), 'adapter model \u00e9.safetensors');
    form.append('training_file', new Blob([]), 'empty.jsonl');
    const res = new Response(form);
    const spoolDir = freshSpool();
    const parsed = await readMultipart(res.body, res.headers.get('content-type') ?? undefined, options(spoolDir));
    assert.deepEqual(parsed.fields, { name: 'my-delta \u20ac' });
    assert.deepEqual(Object.keys(parsed.files), ['adapter_config', 'adapter_model', 'training_file']);
    assert.equal(fs.readFileSync(parsed.files.adapter_config!.path, 'utf8'), '{"r": 8}');
    assert.deepEqual(new Uint8Array(fs.readFileSync(parsed.files.adapter_model!.path)), model);
    assert.deepEqual({ ...parsed.files.adapter_model!, path: '' }, { field: 'adapter_model', filename: 'adapter model \u00e9.safetensors', path: '', size: 3000 });
    assert.equal(parsed.files.training_file!.size, 0);
    await parsed.cleanup();
    await parsed.cleanup(); // idempotent
    assert.deepEqual(spoolEntries(spoolDir), []);
  });

  it('property: any FormData, re-chunked anywhere, parses to what was appended', async () => {
    const platformFilename = fc.string({ unit: fc.constantFrom(...'ab.-_ 0\u00e9\u20ac'), minLength: 1, maxLength: 20 });
    const entry = fc.oneof(
      fc.record({ name: fc.constantFrom(...FIELDS), text: fc.string({ unit: 'grapheme', maxLength: 40 }) }),
      fc.record({ name: fc.constantFrom(...FILES), data: fc.uint8Array({ maxLength: 400 }), filename: platformFilename }),
    );
    const entries = fc.uniqueArray(entry, { selector: (e) => e.name, maxLength: 6 });
    await fc.assert(
      fc.asyncProperty(entries, cutsArb, async (list, cuts) => {
        const form = new FormData();
        for (const e of list) {
          if ('text' in e) form.append(e.name, e.text);
          else form.append(e.name, new Blob([e.data]), e.filename);
        }
        const res = new Response(form);
        const body = new Uint8Array(await res.arrayBuffer());
        // The platform sends text fields with CRLF line breaks (HTML's form encoding); bytes of files as they are.
        const parts = list.map((e): PartSpec => ('text' in e ? { name: e.name, data: enc(e.text.replace(/\r\n|\r|\n/g, '\r\n')) } : { name: e.name, filename: e.filename, data: e.data }));
        assert.deepEqual(await outcome(rechunk(body, cuts), res.headers.get('content-type') ?? undefined), expected(parts));
      }),
      { numRuns: 300 },
    );
  });
});

describe('readMultipart: chunking', () => {
  it('property: a body parses the same whole, cut anywhere, and one byte at a time', async () => {
    await fc.assert(
      fc.asyncProperty(validBodyArb, cutsArb, async ({ boundary, parts, body }, cuts) => {
        const want = expected(parts);
        assert.deepEqual(await outcome([body], ctype(boundary)), want);
        assert.deepEqual(await outcome(rechunk(body, cuts), ctype(boundary)), want);
        assert.deepEqual(await outcome(bytesOf(body), ctype(boundary)), want);
      }),
      { numRuns: 1000 },
    );
  });

  it('splits inside the delimiter and its CRLFs at every position', async () => {
    const parts: PartSpec[] = [
      { name: 'name', data: enc('a\r\n--bound') },
      { name: 'adapter_model', filename: 'm.bin', data: enc('\r\n-\r\n--boun\r\r\n') },
    ];
    const body = encode('boundary', parts);
    for (let cut = 0; cut <= body.length; cut++) {
      assert.deepEqual(await outcome(rechunk(body, [cut]), ctype('boundary')), expected(parts), `cut at ${cut}`);
    }
  });
});

/** Byte strings made mostly of multipart syntax, so the fuzz reaches past the first delimiter. */
const syntaxPieceArb = fc.oneof(
  fc.constantFrom('--b', '\r\n', '--b--', '\r\n--b\r\n', '--', ' ', '\r\n\r\n', 'Content-Disposition: form-data', '; name="name"', '; name="adapter_model"'),
  fc.constantFrom('; filename="f"', "; filename*=UTF-8''%E2%82", '; name=', 'name="note"', '"', '\\', ':', 'Content-Type: x', 'x\u00e9', '\u00ff'),
  fc.uint8Array({ maxLength: 8 }).map((b) => Buffer.from(b).toString('latin1')),
);

/** `good` nine times in ten, else one of `bad`. */
const mostly = (good: string, ...bad: string[]) => fc.oneof({ arbitrary: fc.constant(good), weight: 9 }, { arbitrary: fc.constantFrom(...bad), weight: 1 });

/** Something like a part: each of delimiter, header lines, blank line and content may be slightly wrong. */
const sloppyPartArb = (() => {
  const value = fc.constantFrom('"name"', '"note"', '"adapter_model"', 'adapter_config', '"f"', '""', "UTF-8''%E2%82%AC", "UTF-8''%E2%8", "latin9''x", '"unclosed', '"a\\"b"');
  const param = fc.tuple(fc.constantFrom('name', 'name', 'filename', 'filename*', 'NAME', ''), mostly('=', ''), value).map((p) => `; ${p.join('')}`);
  const disposition = fc.tuple(mostly('form-data', 'attachment', ''), fc.array(param, { maxLength: 3 })).map(([t, ps]) => t + ps.join(''));
  const line = fc.tuple(mostly('Content-Disposition', 'content-disposition', 'Content-Type', 'X'), mostly(': ', ':', ''), disposition).map((l) => l.join(''));
  const lines = fc.tuple(line, fc.array(fc.constantFrom('Content-Type: text/plain', 'X-Y: z', 'bad line', ''), { maxLength: 1 })).map(([l, more]) => [l, ...more].join('\r\n'));
  const content = fc.oneof({ arbitrary: fc.constantFrom('', 'v', 'x\u00e9'), weight: 3 }, { arbitrary: fc.array(syntaxPieceArb, { maxLength: 4 }).map((ps) => ps.join('')), weight: 1 });
  return fc
    .tuple(mostly('\r\n--b', '--b', '\r\n--b \t', '\r\n-b', ''), mostly('\r\n', '', '\n'), lines, mostly('\r\n\r\n', '\r\n', ''), content)
    .map(([d, eol, head, blank, body]) => `${d}${eol}${head}${blank}${body}`);
})();

const syntaxSoupArb = fc
  .tuple(fc.oneof({ arbitrary: fc.array(syntaxPieceArb, { maxLength: 40 }), weight: 1 }, { arbitrary: fc.array(sloppyPartArb, { maxLength: 5 }), weight: 3 }), mostly('\r\n--b--', '', '\r\n--b--\r\n'))
  .map(([pieces, close]) => Buffer.from(pieces.join('') + close, 'latin1') as Uint8Array);

/** A valid body changed: truncated, a byte flipped, a delimiter inserted, a range deleted or repeated. */
const mutatedArb = validBodyArb.chain(({ boundary, body, closeEnd }) => {
  const at = fc.nat({ max: body.length });
  const delimiters = [`--${boundary}`, `\r\n--${boundary}`, `\r\n--${boundary}--`, `\r\n--${boundary}\r\n\r\n`];
  return fc
    .oneof(
      at.map((i) => ({ kind: 'truncate', bytes: body.slice(0, i) })),
      fc.tuple(at, fc.integer({ min: 1, max: 255 })).map(([i, x]) => ({ kind: 'flip', bytes: body.map((b, j) => (j === i ? b ^ x : b)) })),
      fc.tuple(at, fc.constantFrom(...delimiters)).map(([i, d]) => ({ kind: 'insert', bytes: Buffer.concat([body.slice(0, i), enc(d), body.slice(i)]) })),
      fc.tuple(at, at).map(([i, j]) => ({ kind: 'delete', bytes: Buffer.concat([body.slice(0, Math.min(i, j)), body.slice(Math.max(i, j))]) })),
      fc.tuple(at, at).map(([i, j]) => ({ kind: 'repeat', bytes: Buffer.concat([body.slice(0, Math.max(i, j)), body.slice(Math.min(i, j))]) })),
    )
    .map((m) => ({ boundary, closeEnd, ...m }));
});

describe('readMultipart: malformed input', () => {
  it('fuzz: arbitrary bytes give a form or a MultipartError, the same however chunked, and leave nothing behind', async () => {
    const input = fc.oneof(syntaxSoupArb, fc.uint8Array({ maxLength: 200 }));
    await fc.assert(
      fc.asyncProperty(input, cutsArb, async (bytes, cuts) => {
        const whole = await outcome([bytes], ctype('b'));
        assert.deepEqual(await outcome(rechunk(bytes, cuts), ctype('b')), whole);
      }),
      { numRuns: 2000 },
    );
  });

  it('fuzz: mutated valid bodies give a form or a MultipartError, the same however chunked; truncated ones are 400', async () => {
    await fc.assert(
      fc.asyncProperty(mutatedArb, cutsArb, async ({ boundary, closeEnd, kind, bytes }, cuts) => {
        const whole = await outcome([bytes], ctype(boundary));
        assert.deepEqual(await outcome(rechunk(bytes, cuts), ctype(boundary)), whole);
        if (kind === 'truncate' && bytes.length < closeEnd) {
          assert.deepEqual(whole, { ok: false, status: 400, message: 'multipart body ended before its closing boundary', param: null });
        }
      }),
      { numRuns: 1500 },
    );
  });

  it('refuses invalid UTF-8 in a text field, naming it', async () => {
    const field = Buffer.concat([enc('--b\r\nContent-Disposition: form-data; name="note"\r\n\r\n'), Uint8Array.of(0xc3, 0x28), enc('\r\n--b--')]);
    assert.deepEqual(await outcome([field], ctype('b')), { ok: false, status: 400, message: "form field 'note' is not valid UTF-8", param: 'note' });
  });

  it('refuses a malformed part without leaving its spooled predecessors behind', async () => {
    const body = encode('b', [{ name: 'adapter_model', filename: 'm', data: enc('bytes') }]).slice(0, -'--b--'.length);
    const result = await outcome([Buffer.concat([body, enc('--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--')])], ctype('b'));
    assert.deepEqual(result, { ok: false, status: 400, message: 'malformed multipart body: a part has no Content-Disposition header', param: null });
  });

  it('turns a stream that fails mid-body into a 400 and removes what was spooled', async () => {
    const spoolDir = freshSpool();
    let sent = false;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent) return controller.error(new Error('connection reset'));
        sent = true;
        controller.enqueue(enc('--b\r\nContent-Disposition: form-data; name="adapter_model"; filename="m"\r\n\r\npartial'));
      },
    });
    await assert.rejects(readMultipart(stream, ctype('b'), options(spoolDir)), { name: 'MultipartError', status: 400, message: /could not be read: connection reset/ });
    assert.equal(fs.existsSync(spoolDir), true, 'the file part was spooled before the failure');
    assert.deepEqual(spoolEntries(spoolDir), []);
  });
});

describe('readMultipart: fields and files', () => {
  it('reads quoted-string escapes, filename* (preferred), padding, preamble and epilogue', async () => {
    const body = [
      'This is the preamble.\r\n--b \t\r\n',
      'content-disposition: FORM-DATA; name=note\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nline 1\r\nline 2\r\n--b\r\n',
      'Content-Disposition: form-data; name="adapter_model"; filename="C:\\dir\\a \\"q\\" \\\\.bin"\r\n\r\n\x00\x01\r\n--b\r\n',
      "Content-Disposition: form-data; name=\"adapter_config\"; filename=\"plain.json\"; filename*=UTF-8''%E2%82%AC%20rates.json\r\n\r\n{}\r\n--b\r\n",
      "Content-Disposition: form-data; name=\"training_file\"; filename*=iso-8859-1'en'caf%E9.jsonl\r\n\r\n\r\n--b--\r\nThe epilogue, --b\r\n ignored.",
    ].join('');
    assert.deepEqual(await outcome([Buffer.from(body, 'latin1')], 'multipart/form-data; boundary=b'), {
      ok: true,
      fields: { note: 'line 1\r\nline 2' },
      files: {
        adapter_model: { filename: 'C:\\dir\\a "q" \\.bin', size: 2, hex: '0001' },
        adapter_config: { filename: '\u20ac rates.json', size: 2, hex: '7b7d' },
        training_file: { filename: 'caf\u00e9.jsonl', size: 0, hex: '' },
      },
    });
  });

  it('gives filename="" as a file with a null filename', async () => {
    const parts = [{ name: 'adapter_model', filename: '', data: enc('x') }];
    assert.deepEqual(await outcome([encode('b', parts)], ctype('b')), { ok: true, fields: {}, files: { adapter_model: { filename: null, size: 1, hex: '78' } } });
  });

  it('refuses unknown, repeated and wrongly typed fields, naming them', async () => {
    const cases: [PartSpec[], string, RegExp][] = [
      [[{ name: 'model', data: enc('x') }], 'model', /unexpected form field 'model' \(expected 'adapter_config', 'adapter_model', 'training_file', 'name', 'purpose', 'note'\)/],
      [[{ name: 'weights', filename: 'w.bin', data: enc('x') }], 'weights', /unexpected file 'weights'/],
      [[{ name: 'constructor', data: enc('x') }], 'constructor', /unexpected form field 'constructor'/],
      [[{ name: '__proto__', filename: 'p', data: enc('x') }], '__proto__', /unexpected file '__proto__'/],
      [[{ name: 'name', filename: 'n.txt', data: enc('x') }], 'name', /'name' must be text, not a file/],
      [[{ name: 'adapter_model', data: enc('x') }], 'adapter_model', /'adapter_model' must be a file/],
      [[{ name: 'name', data: enc('a') }, { name: 'name', data: enc('b') }], 'name', /'name' is given more than once/],
      [[{ name: 'adapter_model', filename: 'a', data: enc('a') }, { name: 'adapter_model', filename: 'b', data: enc('b') }], 'adapter_model', /'adapter_model' is given more than once/],
    ];
    for (const [parts, param, pattern] of cases) {
      const result = await outcome([encode('b', parts)], ctype('b'));
      assert.ok(!result.ok && result.status === 400 && result.param === param && pattern.test(result.message), JSON.stringify(result));
    }
  });

  it('holds each file to its own limit and each text field to maxFieldBytes, naming the field', async () => {
    const files = { adapter_config: 10, adapter_model: 20 };
    const run = (parts: PartSpec[]) => outcome(bytesOf(encode('b', parts)), ctype('b'), { files, maxFieldBytes: 5 });
    const atLimit = [
      { name: 'adapter_config', filename: 'c', data: new Uint8Array(10) },
      { name: 'adapter_model', filename: 'm', data: new Uint8Array(20) },
      { name: 'note', data: enc('12345') },
    ];
    assert.ok((await run(atLimit)).ok, 'exactly at each limit is accepted');
    const over = async (parts: PartSpec[], param: string, pattern: RegExp) => {
      const result = await run(parts);
      assert.ok(!result.ok && result.status === 413 && result.param === param && pattern.test(result.message), JSON.stringify(result));
    };
    await over([atLimit[0]!, { name: 'adapter_model', filename: 'm', data: new Uint8Array(21) }], 'adapter_model', /file 'adapter_model' exceeds the limit of 20 bytes/);
    await over([{ name: 'adapter_config', filename: 'c', data: new Uint8Array(11) }], 'adapter_config', /limit of 10 bytes/);
    await over([{ name: 'note', data: enc('123456') }], 'note', /form field 'note' exceeds the limit of 5 bytes/);
  });

  it('holds the whole body to maxBodyBytes, headers included', async () => {
    const body = encode('b', [{ name: 'note', data: enc('x') }]);
    assert.ok((await outcome([body], ctype('b'), { maxBodyBytes: body.length })).ok);
    assert.deepEqual(await outcome(bytesOf(body), ctype('b'), { maxBodyBytes: body.length - 1 }), {
      ok: false,
      status: 413,
      message: `request body exceeds the limit of ${body.length - 1} bytes`,
      param: null,
    });
  });

  it('cleanup() removes every spooled file and may be called again', async () => {
    const spoolDir = freshSpool();
    const parts = [
      { name: 'adapter_config', filename: 'c', data: enc('{}') },
      { name: 'adapter_model', filename: 'm', data: new Uint8Array(200_000).fill(7) },
    ];
    const form = await readMultipart(streamOf([encode('b', parts)]).stream, ctype('b'), options(spoolDir, { files: { adapter_config: 10, adapter_model: 1 << 20 } }));
    assert.equal(spoolEntries(spoolDir).length, 2);
    assert.equal(fs.statSync(form.files.adapter_model!.path).size, 200_000);
    assert.equal(fs.statSync(form.files.adapter_model!.path).mode & 0o777, 0o600);
    await form.cleanup();
    assert.deepEqual(spoolEntries(spoolDir), []);
    await form.cleanup();
  });
});

describe('readMultipart: unbounded bodies', () => {
  const CHUNK = 64 * 1024;
  const MiB = 1024 * 1024;

  /** `head`, then chunks of `fill` (never a delimiter) that would total 100 MiB: nothing declares a length. */
  function* endless(head: string, fill: number): Generator<Uint8Array> {
    yield enc(head);
    for (let sent = 0; sent < 100 * MiB; sent += CHUNK) yield new Uint8Array(CHUNK).fill(fill);
  }

  /** Parses `head` + endless filler and checks it stops early: the error, what was pulled, cancel, nothing left. */
  async function stopsEarly(head: string, overrides: Partial<MultipartOptions>, maxPulled: number) {
    const spoolDir = freshSpool();
    const source = streamOf(endless(head, 0x61));
    const err = await readMultipart(source.stream, ctype('b'), options(spoolDir, overrides)).then(
      () => assert.fail('an endless body cannot parse'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof MultipartError, String(err));
    // Bytes, not time: memory stayed bounded if reading stopped within two chunks of the limit.
    assert.ok(source.pulled() <= maxPulled, `pulled ${source.pulled()} bytes, at most ${maxPulled} expected`);
    assert.ok(source.cancelled(), 'the stream is cancelled, not read to its end');
    assert.deepEqual(spoolEntries(spoolDir), []);
    return err;
  }

  const fileHead = '--b\r\nContent-Disposition: form-data; name="adapter_model"; filename="m.bin"\r\n\r\n';

  it('a file part with no end is a 413 for the body once 1 MiB is read', async () => {
    const err = await stopsEarly(fileHead, { maxBodyBytes: MiB, files: { adapter_model: 50 * MiB } }, MiB + 2 * CHUNK);
    assert.deepEqual([err.status, err.param, err.message], [413, null, `request body exceeds the limit of ${MiB} bytes`]);
  });

  it('a preamble with no end is a 413 too', async () => {
    const err = await stopsEarly('', { maxBodyBytes: MiB }, MiB + 2 * CHUNK);
    assert.deepEqual([err.status, err.param], [413, null]);
  });

  it("a file past its field's limit is a 413 naming it, long before the body's limit", async () => {
    const err = await stopsEarly(fileHead, { maxBodyBytes: 1024 * MiB, files: { adapter_model: MiB } }, fileHead.length + MiB + 2 * CHUNK);
    assert.deepEqual([err.status, err.param], [413, 'adapter_model']);
  });

  it('a text field past maxFieldBytes is a 413 naming it', async () => {
    const head = '--b\r\nContent-Disposition: form-data; name="note"\r\n\r\n';
    const err = await stopsEarly(head, { maxBodyBytes: 1024 * MiB, maxFieldBytes: 64 * 1024 }, head.length + 64 * 1024 + 2 * CHUNK);
    assert.deepEqual([err.status, err.param, err.message], [413, 'note', "form field 'note' exceeds the limit of 65536 bytes"]);
  });
});
