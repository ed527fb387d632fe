import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  SafetensorsError, encodeSafetensors, float32ToBf16, float32ToF16, parseSafetensors,
  readSafetensorsHeader, readShardedIndex, readTensorF32, toFloat32,
} from './safetensors.js';

let tmp: string;
before(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-st-')); });
after(() => { fs.rmSync(tmp, { recursive: true, force: true }); });

/** Builds a file from an arbitrary header object / raw header text, bypassing the encoder's checks. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function writeTmp(name: string, bytes: Uint8Array): string {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, bytes);
  return p;
}

const bytesOf = (v: ArrayBufferView) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
const f32 = (n: number) => ({ dtype: 'F32', shape: [n], data_offsets: [0, 4 * n] });

describe('round trip', () => {
  test('F32, F16, BF16 encode → parse → file, values and layout preserved', () => {
    const values = new Float32Array([0, -0, 1, -2.5, 0.5, 1024, -49152, 2 ** -24, Infinity, -Infinity]);
    const bytes = encodeSafetensors({
      w32: { dtype: 'F32', shape: [2, 5], data: values },
      w16: { dtype: 'F16', shape: [10], data: float32ToF16(values) },
      wbf: { dtype: 'BF16', shape: [5, 2], data: float32ToBf16(values) },
      ids: { dtype: 'I64', shape: [3], data: new BigInt64Array([1n, 2n, 3n]) },
      pos: { dtype: 'I32', shape: [1, 2], data: new Int32Array([4, 5]) },
    }, { format: 'pt' });
    const view = new DataView(bytes.buffer);
    const n = Number(view.getBigUint64(0, true));
    assert.equal(n % 8, 0, 'header padded to a multiple of 8');
    const { header, tensor } = parseSafetensors(bytes, 'mem');
    assert.deepEqual(header.metadata, { format: 'pt' });
    assert.equal(header.dataOffset, 8 + n);
    for (const name of ['w32', 'w16', 'wbf']) assert.deepEqual(tensor(name), values, name);
    assert.deepEqual(header.tensors.get('wbf')!.shape, [5, 2]);
    const ids = header.tensors.get('ids')!;
    assert.deepEqual(new BigInt64Array(bytes.slice(ids.fileOffset, ids.fileOffset + ids.byteLength).buffer), new BigInt64Array([1n, 2n, 3n]));

    const file = writeTmp('rt.safetensors', bytes);
    const h = readSafetensorsHeader(file);
    assert.deepEqual([...h.tensors.values()], [...header.tensors.values()]);
    assert.equal(h.fileSize, bytes.length);
    for (const name of ['w32', 'w16', 'wbf']) assert.deepEqual(readTensorF32(h, name), values, name);
  });

  test('view(): aligned F32 data in place (no copy), anything else converted like tensor()', () => {
    const values = new Float32Array([1, -2.5, 3, 4]);
    const bytes = encodeSafetensors({ w32: { dtype: 'F32', shape: [4], data: values }, w16: { dtype: 'F16', shape: [4], data: float32ToF16(values) } });
    const { view, header } = parseSafetensors(bytes, 'mem');
    const inPlace = view('w32');
    assert.deepEqual(inPlace, values);
    assert.equal(inPlace.buffer, bytes.buffer, 'shares the input buffer');
    assert.equal(inPlace.byteOffset, header.tensors.get('w32')!.fileOffset);
    assert.deepEqual(view('w16'), values);
    // The same file one byte into a larger buffer: F32 data is misaligned there, so it is copied.
    const shifted = new Uint8Array(bytes.length + 1);
    shifted.set(bytes, 1);
    const misaligned = parseSafetensors(shifted.subarray(1), 'shifted').view('w32');
    assert.deepEqual(misaligned, values);
    assert.notEqual(misaligned.buffer, shifted.buffer);
  });

  test('F64 (hand-built file) converts to F32', () => {
    const data = new Float64Array([1.5, -3, 1 / 3]);
    const file = writeTmp('f64.safetensors', rawFile({ x: { dtype: 'F64', shape: [3], data_offsets: [0, 24] } }, bytesOf(data)));
    assert.deepEqual(readTensorF32(readSafetensorsHeader(file), 'x'), Float32Array.from(data));
  });

  test('byte-identical to the reference writer (order by dtype then name, space padding)', () => {
    // Produced by python safetensors 0.8.0: save({b: f32[1.5,-2], a: i64[7], c: f16[1,-0.5,3], d: i32[5]}, {format: pt}).
    const reference = '00010000000000007b225f5f6d657461646174615f5f223a7b22666f726d6174223a227074227d2c2261223a7b226474797065223a22493634222c227368617065223a5b315d2c22646174615f6f666673657473223a5b302c385d7d2c2262223a7b226474797065223a22463332222c227368617065223a5b325d2c22646174615f6f666673657473223a5b382c31365d7d2c2264223a7b226474797065223a22493332222c227368617065223a5b315d2c22646174615f6f666673657473223a5b31362c32305d7d2c2263223a7b226474797065223a22463136222c227368617065223a5b335d2c22646174615f6f666673657473223a5b32302c32365d7d7d2020202020202007000000000000000000c03f000000c005000000003c00b80042';
    const ours = encodeSafetensors({
      b: { dtype: 'F32', shape: [2], data: new Float32Array([1.5, -2]) },
      a: { dtype: 'I64', shape: [1], data: new BigInt64Array([7n]) },
      c: { dtype: 'F16', shape: [3], data: float32ToF16(new Float32Array([1, -0.5, 3])) },
      d: { dtype: 'I32', shape: [1], data: new Int32Array([5]) },
    }, { format: 'pt' });
    assert.equal(Buffer.from(ours).toString('hex'), reference);
  });

  test('BF16 sorts between I32 and F16, like the reference Dtype order', () => {
    const bytes = encodeSafetensors({
      a: { dtype: 'F16', shape: [1], data: new Uint16Array(1) },
      b: { dtype: 'BF16', shape: [1], data: new Uint16Array(1) },
      c: { dtype: 'I32', shape: [1], data: new Int32Array(1) },
    });
    const order = [...parseSafetensors(bytes, 'm').header.tensors.values()].sort((x, y) => x.fileOffset - y.fileOffset);
    assert.deepEqual(order.map((t) => t.name), ['c', 'b', 'a']);
  });

  test('empty tensor list and zero-size tensors are allowed', () => {
    const empty = encodeSafetensors({});
    assert.equal(Buffer.from(empty).toString('latin1'), '\x08\0\0\0\0\0\0\0{}      ');
    assert.equal(parseSafetensors(empty, 'e').header.tensors.size, 0);
    const zeros = rawFile({ x: { dtype: 'F32', shape: [0], data_offsets: [0, 0] }, y: { dtype: 'F16', shape: [3, 0], data_offsets: [0, 0] }, z: f32(1) }, new Uint8Array(4));
    const { header, tensor } = parseSafetensors(zeros, 'z');
    assert.equal(header.tensors.size, 3);
    assert.equal(tensor('x').length, 0);
  });

  test('rank-0 tensor holds one element', () => {
    const bytes = rawFile({ s: { dtype: 'F32', shape: [], data_offsets: [0, 4] } }, bytesOf(new Float32Array([7])));
    assert.deepEqual(parseSafetensors(bytes, 's').tensor('s'), new Float32Array([7]));
  });
});

describe('float conversions', () => {
  const u16 = (...xs: number[]) => new Uint16Array(xs);
  const fromF16 = (bits: Uint16Array) => toFloat32('F16', bytesOf(bits));

  test('F16 representable values are exact both ways', () => {
    const vals = new Float32Array([0, -0, 1, -2, 0.5, 65504, -65504, 2 ** -14, 2 ** -24, 1023 * 2 ** -24, 1 + 2 ** -10, Infinity, -Infinity]);
    const bits = float32ToF16(vals);
    assert.deepEqual(bits, u16(0, 0x8000, 0x3c00, 0xc000, 0x3800, 0x7bff, 0xfbff, 0x0400, 0x0001, 0x03ff, 0x3c01, 0x7c00, 0xfc00));
    assert.deepEqual(fromF16(bits), vals);
  });

  test('every F16 bit pattern survives F16 → F32 → F16', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = float32ToF16(fromF16(all));
    for (let i = 0; i < 65536; i++) {
      const isNaN16 = (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0;
      if (isNaN16) assert.ok(Number.isNaN(fromF16(u16(back[i]!))[0]!), `NaN ${i}`);
      else assert.equal(back[i], i, `bits 0x${i.toString(16)}`);
    }
  });

  test('F16 rounds to nearest even, overflows to inf, underflows to zero', () => {
    // Expected bits produced by numpy float32 → float16.
    const cases: [number, number][] = [
      [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [65519, 0x7bff], [65520, 0x7c00], [1e6, 0x7c00],
      [2 ** -25, 0x0000], [1.5 * 2 ** -25, 0x0001], [3 * 2 ** -25, 0x0002], [2.5 * 2 ** -24, 0x0002], [1e-8, 0],
      [0.1, 0x2e66], [1 / 3, 0x3555], [-(1 + 3 * 2 ** -11), 0xbc02],
    ];
    assert.deepEqual(float32ToF16(new Float32Array(cases.map((c) => c[0]))), u16(...cases.map((c) => c[1])));
    assert.ok(Number.isNaN(fromF16(float32ToF16(new Float32Array([NaN])))[0]!));
  });

  test('BF16 exact for representable values, every bit pattern round trips', () => {
    const vals = new Float32Array([0, -0, 1, -2, 0.5, 3.3895313892515355e38, 2 ** -133, Infinity, -Infinity]);
    const bits = float32ToBf16(vals);
    assert.deepEqual(bits, u16(0, 0x8000, 0x3f80, 0xc000, 0x3f00, 0x7f7f, 0x0001, 0x7f80, 0xff80));
    const all = new Uint16Array(65536).map((_, i) => i);
    const asF32 = toFloat32('BF16', bytesOf(all));
    const back = float32ToBf16(asF32);
    for (let i = 0; i < 65536; i++) {
      if ((i & 0x7f80) === 0x7f80 && (i & 0x7f) !== 0) assert.ok(Number.isNaN(asF32[i]!));
      else assert.equal(back[i], i, `bits 0x${i.toString(16)}`);
    }
  });

  test('BF16 rounds to nearest even; NaN stays NaN', () => {
    const cases: [number, number][] = [
      [1 + 2 ** -8, 0x3f80], [1 + 3 * 2 ** -8, 0x3f82], [1 + 2 ** -8 + 2 ** -20, 0x3f81], [3.4028234663852886e38, 0x7f80], [-(1 + 3 * 2 ** -8), 0xbf82],
    ];
    assert.deepEqual(float32ToBf16(new Float32Array(cases.map((c) => c[0]))), u16(...cases.map((c) => c[1])));
    // A NaN whose payload sits only in the low bits must not round into the infinity pattern.
    const nan = new Float32Array(new Uint32Array([0x7f800001]).buffer);
    assert.ok(Number.isNaN(toFloat32('BF16', bytesOf(float32ToBf16(nan)))[0]!));
  });

  test('F32 from an unaligned byte view', () => {
    const backing = new Uint8Array(9);
    backing.set(bytesOf(new Float32Array([1.25, -7])), 1);
    const out = toFloat32('F32', backing.subarray(1));
    assert.deepEqual(out, new Float32Array([1.25, -7]));
    out[0] = 99; // a fresh copy, not a view onto the source
    assert.equal(toFloat32('F32', backing.subarray(1))[0], 1.25);
    // Small Buffers share an 8 KiB pool; the copy must cover only these bytes.
    const pooled = Buffer.from(bytesOf(new Float32Array([5, 6, 7])));
    assert.deepEqual(toFloat32('F32', pooled), new Float32Array([5, 6, 7]));
    assert.deepEqual(parseSafetensors(Buffer.from(encodeSafetensors({ w: { dtype: 'BF16', shape: [1], data: float32ToBf16(new Float32Array([2])) } })), 'buf').tensor('w'), new Float32Array([2]));
  });
});

describe('validation errors name the file and the tensor', () => {
  const bad: { name: string; bytes: () => Uint8Array; tensor?: string; match: RegExp }[] = [
    { name: 'oversized header length', bytes: () => rawFile('{}', undefined, 100_000_001n), match: /exceeds/ },
    { name: 'header length past end of file', bytes: () => rawFile('{}', undefined, 64n), match: /truncated: expected 72 bytes, got 10/ },
    { name: 'invalid JSON', bytes: () => rawFile('{"x": '), match: /not valid UTF-8 JSON/ },
    { name: 'JSON not an object', bytes: () => rawFile('[]'), match: /not an object/ },
    { name: 'unknown dtype', bytes: () => rawFile({ w: { dtype: 'F8', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)), tensor: 'w', match: /unknown dtype "F8"/ },
    { name: 'negative shape', bytes: () => rawFile({ w: { dtype: 'U8', shape: [-1], data_offsets: [0, 0] } }), tensor: 'w', match: /shape/ },
    { name: 'non-integer shape', bytes: () => rawFile({ w: { dtype: 'U8', shape: [1.5], data_offsets: [0, 1] } }, new Uint8Array(1)), tensor: 'w', match: /shape/ },
    { name: 'begin > end', bytes: () => rawFile({ w: { dtype: 'U8', shape: [0], data_offsets: [4, 0] } }), tensor: 'w', match: /data_offsets/ },
    { name: 'offsets not a pair', bytes: () => rawFile({ w: { dtype: 'U8', shape: [1], data_offsets: [0] } }), tensor: 'w', match: /data_offsets/ },
    { name: 'wrong byte size', bytes: () => rawFile({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, new Uint8Array(4)), tensor: 'w', match: /byte size 4 .* \(8 bytes\)/ },
    { name: 'overlapping offsets', bytes: () => rawFile({ a: f32(2), b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, new Uint8Array(12)), tensor: 'b', match: /overlaps/ },
    { name: 'gap between tensors', bytes: () => rawFile({ a: f32(1), b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, new Uint8Array(12)), tensor: 'b', match: /gap/ },
    { name: 'first tensor not at 0', bytes: () => rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8)), tensor: 'a', match: /gap/ },
    { name: 'truncated data', bytes: () => rawFile({ a: f32(4) }, new Uint8Array(10)), match: /truncated: expected \d+ bytes, got \d+/ },
    { name: 'trailing bytes', bytes: () => rawFile({ a: f32(1) }, new Uint8Array(5)), match: /trailing bytes/ },
    { name: 'metadata value not a string', bytes: () => rawFile({ __metadata__: { a: 1 } }), match: /__metadata__/ },
    { name: 'file shorter than 8 bytes', bytes: () => new Uint8Array(3), match: /truncated/ },
  ];

  for (const c of bad) {
    test(c.name, () => {
      const bytes = c.bytes();
      const file = writeTmp(`bad-${c.name.replace(/\W+/g, '_')}.safetensors`, bytes);
      for (const [label, run] of [[file, () => readSafetensorsHeader(file)], ['upload#7', () => parseSafetensors(bytes, 'upload#7')]] as const) {
        assert.throws(run, (e: unknown) => {
          assert.ok(e instanceof SafetensorsError, String(e));
          assert.equal(e.code, 'invalid_safetensors');
          assert.equal(e.file, label);
          assert.ok(e.message.includes(label), e.message);
          assert.match(e.message, c.match);
          if (c.tensor) {
            assert.equal(e.tensor, c.tensor);
            assert.ok(e.message.includes(`"${c.tensor}"`), e.message);
          }
          return true;
        });
      }
    });
  }

  test('asking for a missing or non-float tensor names it', () => {
    const { tensor } = parseSafetensors(encodeSafetensors({ ids: { dtype: 'I32', shape: [1], data: new Int32Array(1) } }), 'm.st');
    assert.throws(() => tensor('nope'), /m\.st: tensor "nope": no such tensor/);
    assert.throws(() => tensor('ids'), /m\.st: tensor "ids": dtype I32 is not a float type/);
  });

  test('encoder rejects data that does not match its shape', () => {
    assert.throws(() => encodeSafetensors({ w: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }), /"w"/);
  });
});

describe('header-only reads', () => {
  test('readSafetensorsHeader reads only 8 + N bytes of a file with a 4 GiB data region', (t) => {
    const big = 2 ** 30; // elements of F32 → 4 GiB, stored sparse
    const bytes = rawFile({ small: f32(2), huge: { dtype: 'F32', shape: [big], data_offsets: [8, 8 + 4 * big] } }, bytesOf(new Float32Array([3, 4])));
    const n = bytes.length - 8 - 8;
    const file = writeTmp('sparse.safetensors', bytes);
    fs.truncateSync(file, 8 + n + 8 + 4 * big); // extends with a hole: no disk used, never read

    const readSync = t.mock.method(fs, 'readSync');
    const h = readSafetensorsHeader(file);
    const read = readSync.mock.calls.reduce((s, c) => s + (c.result as number), 0);
    assert.equal(read, 8 + n);
    assert.equal(h.fileSize, 8 + n + 8 + 4 * big);
    assert.equal(h.dataOffset, 8 + n);
    assert.deepEqual(h.tensors.get('small'), { name: 'small', dtype: 'F32', shape: [2], fileOffset: 8 + n, byteLength: 8 });
    assert.deepEqual(h.tensors.get('huge'), { name: 'huge', dtype: 'F32', shape: [big], fileOffset: 8 + n + 8, byteLength: 4 * big });

    readSync.mock.resetCalls();
    assert.deepEqual(readTensorF32(h, 'small'), new Float32Array([3, 4]));
    assert.equal(readSync.mock.calls.reduce((s, c) => s + (c.result as number), 0), 8, 'reads just that tensor');
  });
});

describe('readShardedIndex', () => {
  const mkdir = (name: string) => { const d = path.join(tmp, name); fs.mkdirSync(d); return d; };
  const tiny = () => encodeSafetensors({ w: { dtype: 'F32', shape: [1], data: new Float32Array(1) } });

  test('prefers model.safetensors', () => {
    const d = mkdir('single');
    fs.writeFileSync(path.join(d, 'model.safetensors'), tiny());
    fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), '{"weight_map":{"w":"other.safetensors"}}');
    assert.deepEqual(readShardedIndex(d), [path.join(d, 'model.safetensors')]);
  });

  test('lists distinct shards from the index', () => {
    const d = mkdir('sharded');
    for (const s of ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']) fs.writeFileSync(path.join(d, s), tiny());
    fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({
      metadata: { total_size: 8 },
      weight_map: { b: 'model-00002-of-00002.safetensors', a: 'model-00001-of-00002.safetensors', c: 'model-00002-of-00002.safetensors' },
    }));
    assert.deepEqual(readShardedIndex(d), [path.join(d, 'model-00001-of-00002.safetensors'), path.join(d, 'model-00002-of-00002.safetensors')]);
  });

  test('a missing shard names the index and the shard', () => {
    const d = mkdir('missing');
    fs.writeFileSync(path.join(d, 'a.safetensors'), tiny());
    fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), '{"weight_map":{"x":"a.safetensors","y":"gone.safetensors"}}');
    assert.throws(() => readShardedIndex(d), (e: unknown) =>
      e instanceof SafetensorsError && e.message.includes('model.safetensors.index.json') && e.message.includes('gone.safetensors'));
  });

  test('a malformed index names the index file', () => {
    for (const [i, text] of ['{not json', '{"weight_map": []}', '{}', '{"weight_map":{"x":"../escape.safetensors"}}'].entries()) {
      const d = mkdir(`malformed${i}`);
      const idx = path.join(d, 'model.safetensors.index.json');
      fs.writeFileSync(idx, text);
      assert.throws(() => readShardedIndex(d), (e: unknown) => e instanceof SafetensorsError && e.file === idx && e.message.includes(idx), text);
    }
  });

  test('a directory with neither file names the directory', () => {
    const d = mkdir('empty');
    assert.throws(() => readShardedIndex(d), (e: unknown) =>
      e instanceof Error && e.message.includes(d) && /no model\.safetensors or model\.safetensors\.index\.json/.test(e.message));
  });
});
