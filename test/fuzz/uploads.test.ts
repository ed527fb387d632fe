/**
 * The two upload routes, POST /v1/deltas and POST /admin/v1/files, through HTTP with multipart
 * bodies built byte by byte: valid forms with fuzzed field values and files, forms with parts
 * dropped, repeated, renamed or turned from text to file, broken framing, raw bytes. Each request
 * finishes below 500 with OpenAI's error shape when refused, and a refused upload changes
 * nothing: the deltas and versions every tenant sees (and the training files) are as before, and
 * neither the spool directory nor the store's staging area holds a file.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { adapterConfigText, FIXTURE_CONFIG_TEXT, FIXTURE_WEIGHTS, weightBytes } from './generators.js';
import { assertNoLeftovers, bearer, deltaVersions, KEYS, reached, send, startFuzzServer, statusesDuring, type FuzzServer, type Reply } from './server.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

// CI-sized: 3,000 uploads, each under 200 kB; about half a minute on two cores.
const RUNS = { deltaForms: 1200, deltaFraming: 600, trainingFiles: 700, fileFraming: 500 };

/** One multipart part as it goes on the wire; `name`/`filename` land in Content-Disposition unescaped. */
interface Part {
  name: string;
  filename?: string;
  type?: string;
  data: string | Uint8Array;
}

const BOUNDARY = 'fuzz-boundary-7MA4YWxkTrZu0gW';
const bytes = (d: string | Uint8Array) => (typeof d === 'string' ? Buffer.from(d, 'utf8') : d);

/** RFC 7578 form-data; `closed: false` leaves off the closing delimiter. */
function multipart(parts: Part[], boundary = BOUNDARY, closed = true): Uint8Array {
  const chunks: Uint8Array[] = [];
  for (const p of parts) {
    const disposition = `form-data; name="${p.name}"${p.filename !== undefined ? `; filename="${p.filename}"` : ''}`;
    chunks.push(bytes(`--${boundary}\r\nContent-Disposition: ${disposition}\r\n${p.type ? `Content-Type: ${p.type}\r\n` : ''}\r\n`), bytes(p.data), bytes('\r\n'));
  }
  if (closed) chunks.push(bytes(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

// Names a tenant may try: valid ones (few, so the listings stay short), traversal, references, unicode, 1000 characters.
const deltaName = fc.oneof(
  { arbitrary: fc.constantFrom('a', 'b.c', 'd_e-1'), weight: 8 },
  { arbitrary: fc.constantFrom('..', '.a', 'a..b', '../a', 'a/b', 'acme/a', 'a@1', '@', '', ' ', 'a b', 'ä', '名前', 'tiny-llama', '%2e%2e', 'x'.repeat(64), 'x'.repeat(65), 'x'.repeat(1000), 'con', '\u0000'), weight: 3 },
  { arbitrary: fc.string({ maxLength: 12 }), weight: 1 },
);
const publicValue = fc.oneof({ arbitrary: fc.constant('false'), weight: 6 }, { arbitrary: fc.constant('true'), weight: 2 }, { arbitrary: fc.constantFrom('TRUE', '1', 'yes', '', 'false '), weight: 1 }, { arbitrary: fc.string({ maxLength: 8 }), weight: 1 });
const filename = fc.oneof(fc.constantFrom('adapter_config.json', 'adapter_model.safetensors', '', '../../etc/passwd', 'a/b', 'ü.json'), fc.string({ maxLength: 12 }).filter((s) => !/["\r\n]/.test(s)));
const partType = fc.option(fc.constantFrom('application/json', 'application/octet-stream', 'text/plain; charset=utf-8', 'multipart/mixed; boundary=x'), { nil: undefined });

/** A well-formed delta upload with fuzzed values: the name, public, the config text and the weights. */
const deltaParts = fc.record({
  name: deltaName,
  public: fc.option(publicValue, { nil: undefined, freq: 2 }),
  config: fc.oneof({ arbitrary: fc.constant(FIXTURE_CONFIG_TEXT), weight: 1 }, { arbitrary: adapterConfigText, weight: 3 }),
  weights: weightBytes,
  configName: filename,
  weightsName: filename,
  type: partType,
}).map((f): Part[] => [
  { name: 'name', data: f.name },
  ...(f.public !== undefined ? [{ name: 'public', data: f.public }] : []),
  { name: 'adapter_config', filename: f.configName, type: f.type, data: f.config },
  { name: 'adapter_model', filename: f.weightsName, data: f.weights },
]);

type Edit = { op: 'drop' | 'repeat' | 'toFile' | 'toText'; at: number } | { op: 'rename'; at: number; name: string } | { op: 'add'; name: string; file: boolean };
const partName = fc.oneof(fc.constantFrom('name', 'public', 'adapter_config', 'adapter_model', 'purpose', 'file', 'Name', 'adapter_config ', '__proto__', 'constructor', '', 'a"b', 'x'.repeat(300)), fc.string({ maxLength: 10 }).filter((s) => !/[\r\n]/.test(s)));
const edit: fc.Arbitrary<Edit> = fc.oneof(
  fc.record({ op: fc.constantFrom('drop' as const, 'repeat' as const, 'toFile' as const, 'toText' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('rename' as const), at: fc.nat(), name: partName }),
  fc.record({ op: fc.constant('add' as const), name: partName, file: fc.boolean() }),
);

/** Drops, repeats, renames or retypes parts, or adds one: the form's structure, not its values. */
function applyEdits(parts: Part[], edits: Edit[]): Part[] {
  const out = [...parts];
  for (const e of edits) {
    if (e.op === 'add') {
      out.push({ name: e.name, ...(e.file ? { filename: 'x.bin' } : {}), data: 'extra' });
      continue;
    }
    if (!out.length) continue;
    const i = e.at % out.length;
    const p = out[i]!;
    if (e.op === 'drop') out.splice(i, 1);
    else if (e.op === 'repeat') out.splice(i, 0, { ...p });
    else if (e.op === 'rename') out[i] = { ...p, name: e.name };
    else if (e.op === 'toFile') out[i] = { ...p, filename: 'x.txt' };
    else out[i] = { name: p.name, data: p.data };
  }
  return out;
}

/** A body and its Content-Type whose framing is broken, or that is no multipart body at all. */
function brokenFraming(valid: fc.Arbitrary<Part[]>): fc.Arbitrary<{ body: Uint8Array; type: string }> {
  const multipartType = `multipart/form-data; boundary=${BOUNDARY}`;
  return fc.oneof(
    // No boundary parameter, another boundary, an invalid one, another media type, none at all.
    fc.tuple(valid, fc.constantFrom('multipart/form-data', 'multipart/form-data; boundary=', 'multipart/form-data; boundary=other', 'multipart/form-data; boundary="unclosed', `multipart/form-data; boundary=${'b'.repeat(71)}`, 'multipart/form-data; boundary=a b ', 'multipart/mixed; boundary=x', 'application/json', 'text/plain', '', `multipart/form-data; boundary=${BOUNDARY}; boundary=${BOUNDARY}`)).map(([parts, type]) => ({ body: multipart(parts), type })),
    // Cut anywhere, or never closed.
    fc.tuple(valid, fc.nat()).map(([parts, n]) => {
      const body = multipart(parts);
      return { body: body.subarray(0, n % (body.length + 1)), type: multipartType };
    }),
    valid.map((parts) => ({ body: multipart(parts, BOUNDARY, false), type: multipartType })),
    // Bytes flipped in the framing (headers and delimiters sit in the first few hundred bytes).
    fc.tuple(valid, fc.array(fc.tuple(fc.nat({ max: 400 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 })).map(([parts, flips]) => {
      const body = Uint8Array.from(multipart(parts));
      for (const [at, v] of flips) body[at % body.length] = v;
      return { body, type: multipartType };
    }),
    // Header lines no browser sends: no Content-Disposition, another disposition, unquoted and bare parameters, a huge header.
    fc.constantFrom(
      `--${BOUNDARY}\r\n\r\nvalue\r\n--${BOUNDARY}--\r\n`,
      `--${BOUNDARY}\r\nContent-Disposition: attachment; name="name"\r\n\r\nv\r\n--${BOUNDARY}--\r\n`,
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name=name\r\n\r\nv\r\n--${BOUNDARY}--\r\n`,
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name\r\n\r\nv\r\n--${BOUNDARY}--\r\n`,
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="a"; name="b"\r\n\r\nv\r\n--${BOUNDARY}--\r\n`,
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="name"\r\nX: ${'h'.repeat(20_000)}\r\n\r\nv\r\n--${BOUNDARY}--\r\n`,
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="name"\n\nv\n--${BOUNDARY}--\n`,
      `--${BOUNDARY}--\r\n`,
      `--${BOUNDARY}\r\n`,
      `preamble\r\n--${BOUNDARY}\r\nContent-Disposition: form-data; name="name"\r\n\r\nv\r\n--${BOUNDARY}--\r\nepilogue`,
    ).map((text) => ({ body: Buffer.from(text, 'latin1'), type: multipartType })),
    fc.tuple(fc.uint8Array({ maxLength: 2000 }), fc.constantFrom(multipartType, 'application/octet-stream')).map(([body, type]) => ({ body, type })),
  );
}

/** Training JSONL: valid lines, lines with wrong fields, ids past the vocabulary, blank lines, bytes that are not UTF-8. */
const jsonlLine = fc.oneof(
  { arbitrary: fc.constantFrom('{"prompt":"hello","completion":" world"}', '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}', '{"input_ids":[1,2,3],"labels":[-100,2,3]}', ''), weight: 12 },
  fc.record({ prompt: fc.jsonValue(), completion: fc.jsonValue() }, { requiredKeys: [] }).map((o) => JSON.stringify(o)),
  fc.record({ input_ids: fc.array(fc.integer({ min: -2, max: 100_000 }), { maxLength: 6 }), labels: fc.jsonValue() }, { requiredKeys: ['input_ids'] }).map((o) => JSON.stringify(o)),
  fc.record({ messages: fc.array(fc.record({ role: fc.constantFrom('user', 'assistant', 'system', 'tool', 'robot'), content: fc.jsonValue(), weight: fc.jsonValue() }, { requiredKeys: ['role'] }), { maxLength: 3 }) }).map((o) => JSON.stringify(o)),
  fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)),
  fc.string({ maxLength: 30 }),
);
const jsonl = fc.oneof(
  { arbitrary: fc.array(jsonlLine, { maxLength: 5 }).map((lines) => Buffer.from(lines.join('\n'))), weight: 5 },
  { arbitrary: fc.uint8Array({ maxLength: 200 }), weight: 1 },
  { arbitrary: fc.constant(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])), weight: 1 },
);
const fileParts = fc.record({ purpose: fc.option(fc.oneof({ arbitrary: fc.constant('fine-tune'), weight: 4 }, { arbitrary: fc.constantFrom('fine-tune ', 'assistants', '', 'FINE-TUNE'), weight: 1 }, { arbitrary: fc.string({ maxLength: 8 }), weight: 1 }), { nil: undefined }), file: jsonl, filename }).map((f): Part[] => [
  ...(f.purpose !== undefined ? [{ name: 'purpose', data: f.purpose }] : []),
  { name: 'file', filename: f.filename, type: 'application/jsonl', data: f.file },
]);

describe('fuzz: multipart uploads through HTTP', () => {
  let s: FuzzServer;
  /** What acme and the admin see of deltas (id → versions) as the suite left it. */
  let deltas: Json;
  let files: string[];
  let accepted = 0;
  let rssBefore: number;

  const views = async () => ({ acme: await deltaVersions(s.url, KEYS.acme), admin: await deltaVersions(s.url, KEYS.admin) });
  const fileIds = async () => {
    const list = await send(s.url, { method: 'GET', path: '/admin/v1/files', headers: bearer(KEYS.admin) });
    return (list.json.data as { id: string }[]).map((f) => f.id).sort();
  };

  before(async () => {
    s = await startFuzzServer();
    deltas = await views();
    files = await fileIds();
    rssBefore = process.memoryUsage().rss;
  });
  after(() => s.server.close());

  const upload = (route: string, key: string, body: Uint8Array, type: string) => send(s.url, { method: 'POST', path: route, body, headers: { ...bearer(key), 'content-type': type } });

  /** A refused delta upload left every listing as it was; an accepted one added exactly its version. */
  async function checkDeltas(res: Reply, key: string): Promise<void> {
    assertNoLeftovers(s.dataDir);
    const now = await views();
    if (res.status === 201) {
      accepted++;
      const view = key === KEYS.admin ? 'admin' : 'acme';
      const expected = structuredClone(deltas[view]);
      (expected[res.json.id] ??= []).push(res.json.version);
      assert.deepEqual(now[view], expected, 'an accepted upload adds one version and nothing else');
      // Deleted again, so listings (each version's metadata is read per check) stay short.
      const removed = await send(s.url, { method: 'DELETE', path: `/v1/deltas/${res.json.id}`, headers: bearer(key) });
      assert.equal(removed.status, 200, removed.text);
      deltas = await views();
    } else {
      assert.deepEqual(now, deltas, `refused with ${res.status}, yet the deltas changed`);
    }
  }

  async function checkFiles(res: Reply): Promise<void> {
    assertNoLeftovers(s.dataDir);
    const now = await fileIds();
    if (res.status === 201) assert.deepEqual(now, [...files, res.json.id].sort());
    else assert.deepEqual(now, files, `refused with ${res.status}, yet the training files changed`);
    files = now;
  }

  const key = fc.oneof({ arbitrary: fc.constant(KEYS.acme), weight: 3 }, { arbitrary: fc.constant(KEYS.admin), weight: 1 });

  it(`delta forms with fuzzed names, flags, configs, weights and part structure (${RUNS.deltaForms} cases)`, async () => {
    const form = fc.tuple(deltaParts, fc.oneof({ arbitrary: fc.constant<Edit[]>([]), weight: 2 }, { arbitrary: fc.array(edit, { minLength: 1, maxLength: 3 }), weight: 1 })).map(([parts, edits]) => applyEdits(parts, edits));
    const property = fc.asyncProperty(form, key, async (parts, k) => {
      const res = await upload('/v1/deltas', k, multipart(parts), `multipart/form-data; boundary=${BOUNDARY}`);
      await checkDeltas(res, k);
    });
    reached(await statusesDuring(() => fc.assert(property, { numRuns: RUNS.deltaForms })), [201, 400, 403, 422]);
    assert.ok(accepted > 0);
  });

  it(`delta uploads with broken framing, wrong content types and raw bytes (${RUNS.deltaFraming} cases)`, async () => {
    const property = fc.asyncProperty(brokenFraming(deltaParts), key, async ({ body, type }, k) => {
      const res = await upload('/v1/deltas', k, body, type);
      await checkDeltas(res, k);
    });
    reached(await statusesDuring(() => fc.assert(property, { numRuns: RUNS.deltaFraming })), [400, 415]);
  });

  it(`training files with fuzzed purpose, JSONL and part structure (${RUNS.trainingFiles} cases)`, async () => {
    const form = fc.tuple(fileParts, fc.oneof({ arbitrary: fc.constant<Edit[]>([]), weight: 2 }, { arbitrary: fc.array(edit, { minLength: 1, maxLength: 2 }), weight: 1 })).map(([parts, edits]) => applyEdits(parts, edits));
    const tenant = fc.option(fc.constantFrom('acme', 'globex', 'nobody', '..'), { nil: undefined, freq: 3 });
    const property = fc.asyncProperty(form, fc.constantFrom(KEYS.admin, KEYS.admin, KEYS.admin, KEYS.acme), tenant, async (parts, k, t) => {
      const res = await send(s.url, { method: 'POST', path: '/admin/v1/files', body: multipart(parts), headers: { ...bearer(k), 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, ...(t ? { 'x-deltaserve-tenant': t } : {}) } });
      await checkFiles(res);
    });
    reached(await statusesDuring(() => fc.assert(property, { numRuns: RUNS.trainingFiles })), [201, 400, 403]);
  });

  it(`training file uploads with broken framing and raw bytes (${RUNS.fileFraming} cases)`, async () => {
    const property = fc.asyncProperty(brokenFraming(fileParts), async ({ body, type }) => {
      const res = await upload('/admin/v1/files', KEYS.admin, body, type);
      await checkFiles(res);
    });
    reached(await statusesDuring(() => fc.assert(property, { numRuns: RUNS.fileFraming })), [400, 415]);
  });

  it('afterwards: the fixture adapter still uploads and serves, and memory stayed bounded', async () => {
    const res = await upload('/v1/deltas', KEYS.acme, multipart([{ name: 'name', data: 'final' }, { name: 'adapter_config', filename: 'c.json', data: FIXTURE_CONFIG_TEXT }, { name: 'adapter_model', filename: 'w', data: FIXTURE_WEIGHTS }]), `multipart/form-data; boundary=${BOUNDARY}`);
    assert.equal(res.status, 201, res.text);
    const completion = await send(s.url, { method: 'POST', path: '/v1/completions', body: JSON.stringify({ model: 'final', prompt: 'hi', max_tokens: 2 }), headers: { ...bearer(KEYS.acme), 'content-type': 'application/json' } });
    assert.equal(completion.status, 200, completion.text);
    assertNoLeftovers(s.dataDir);
    const grown = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
    assert.ok(grown < 300, `rss grew by ${grown.toFixed(0)} MiB`);
  });
});
