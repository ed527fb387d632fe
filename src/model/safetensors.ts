/**
 * The safetensors format: u64-LE header length N, N bytes of UTF-8 JSON, then the data buffer.
 * Validation mirrors the reference Rust crate, so what we accept the ecosystem accepts, and
 * every error names the file (and tensor) so a bad upload or shard is found from the message.
 * Typed-array views assume a little-endian host, as are all Node 20 platforms and the format.
 */
import fs from 'node:fs';
import path from 'node:path';

export type SafetensorsDType = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export interface TensorEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** absolute byte offset in the file */
  fileOffset: number;
  byteLength: number;
}

export interface SafetensorsHeader {
  path: string;
  headerLength: number;
  /** 8 + N: where the data buffer starts in the file */
  dataOffset: number;
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
  fileSize: number;
}

/**
 * A file (or upload) that is not valid safetensors. The message is prefixed
 * with the file and, when known, the tensor, so logs need no extra context.
 *
 * @example
 * throw new SafetensorsError('unknown dtype "F8"', 'model.safetensors', 'lm_head.weight');
 * // message: 'model.safetensors: tensor "lm_head.weight": unknown dtype "F8"'
 */
export class SafetensorsError extends Error {
  readonly code = 'invalid_safetensors';
  readonly file: string;
  readonly tensor?: string;
  constructor(message: string, file: string, tensor?: string) {
    super(`${file}: ${tensor === undefined ? '' : `tensor ${JSON.stringify(tensor)}: `}${message}`);
    this.name = 'SafetensorsError';
    this.file = file;
    if (tensor !== undefined) this.tensor = tensor;
  }
}

/** Same limit as the reference crate: guards against allocating a huge header. */
const MAX_HEADER_SIZE = 100_000_000;

const DTYPE_SIZE: Record<SafetensorsDType, number> = {
  F64: 8, I64: 8, F32: 4, I32: 4, F16: 2, BF16: 2, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/**
 * The reference writer orders tensors by dtype, highest `Dtype` enum variant
 * first (which puts wider types first, keeping them aligned), then by name.
 */
const WRITER_DTYPE_RANK: Record<SafetensorsDType, number> = {
  BOOL: 0, U8: 1, I8: 2, I16: 3, F16: 4, BF16: 5, I32: 6, F32: 7, F64: 8, I64: 9,
};

function isDType(x: unknown): x is SafetensorsDType {
  return typeof x === 'string' && Object.hasOwn(DTYPE_SIZE, x);
}

function isUsize(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Element count * dtype size, refusing overflow like the crate's checked_mul. */
function expectedByteLength(dtype: SafetensorsDType, shape: readonly number[]): number | undefined {
  let n = DTYPE_SIZE[dtype];
  for (const d of shape) {
    n *= d;
    if (!Number.isSafeInteger(n)) return undefined;
  }
  return n;
}

/**
 * Validates the 8-byte length prefix against the total size before anything
 * else is read, so a hostile length never causes a large allocation.
 */
function headerLengthOf(prefix: Uint8Array, totalSize: number, file: string): number {
  if (totalSize < 8) throw new SafetensorsError(`truncated: expected at least 8 bytes, got ${totalSize}`, file);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_SIZE)) throw new SafetensorsError(`header length ${n} exceeds the ${MAX_HEADER_SIZE}-byte limit`, file);
  if (8 + Number(n) > totalSize) throw new SafetensorsError(`truncated: expected ${8 + Number(n)} bytes, got ${totalSize}`, file);
  return Number(n);
}

function decodeHeaderJson(json: Uint8Array, file: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(json));
  } catch (e) {
    throw new SafetensorsError(`header is not valid UTF-8 JSON: ${(e as Error).message}`, file);
  }
  if (!isPlainObject(value)) throw new SafetensorsError('header JSON is not an object', file);
  return value;
}

function parseMetadata(raw: unknown, file: string): Record<string, string> {
  // The crate reads `__metadata__` as Option<HashMap<String, String>>, so null means absent.
  if (raw === undefined || raw === null) return {};
  if (!isPlainObject(raw)) throw new SafetensorsError('__metadata__ is not an object', file);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== 'string') throw new SafetensorsError(`__metadata__ value for ${JSON.stringify(k)} is not a string`, file);
    out[k] = v;
  }
  return out;
}

function isOffsetPair(x: unknown): x is [number, number] {
  return Array.isArray(x) && x.length === 2 && isUsize(x[0]) && isUsize(x[1]) && x[0] <= x[1];
}

/** Checks one tensor's own fields; fileOffset is still relative to the data buffer here. */
function parseEntry(name: string, raw: unknown, file: string): TensorEntry {
  const fail = (msg: string) => new SafetensorsError(msg, file, name);
  if (!isPlainObject(raw)) throw fail('entry is not an object');
  const { dtype, shape, data_offsets: offsets } = raw;
  if (!isDType(dtype)) throw fail(`unknown dtype ${JSON.stringify(dtype)}`);
  if (!Array.isArray(shape) || !shape.every(isUsize)) throw fail(`shape ${JSON.stringify(shape)} is not an array of non-negative integers`);
  if (!isOffsetPair(offsets)) throw fail(`data_offsets ${JSON.stringify(offsets)} is not [begin, end] with 0 <= begin <= end`);
  const [begin, end] = offsets;
  const want = expectedByteLength(dtype, shape);
  if (want === undefined) throw fail(`shape ${JSON.stringify(shape)} overflows`);
  if (end - begin !== want) throw fail(`byte size ${end - begin} does not match shape ${JSON.stringify(shape)} x ${dtype} (${want} bytes)`);
  return { name, dtype, shape, fileOffset: begin, byteLength: want };
}

/**
 * Offsets must tile the buffer: sorted by (begin, end), each tensor starts
 * exactly where the previous ended. Returns the buffer length they describe.
 */
function checkTiling(entries: TensorEntry[], file: string): number {
  entries.sort((a, b) => a.fileOffset - b.fileOffset || a.byteLength - b.byteLength);
  let cursor = 0;
  for (const { name, fileOffset: begin, byteLength } of entries) {
    if (begin !== cursor) {
      const what = begin < cursor ? 'overlaps the previous tensor' : 'leaves a gap after the previous tensor';
      throw new SafetensorsError(`data_offsets [${begin}, ${begin + byteLength}] ${what} (expected begin ${cursor})`, file, name);
    }
    cursor = begin + byteLength;
  }
  return cursor;
}

/** Shared validation for files and in-memory buffers, given the JSON bytes. */
function buildHeader(json: Uint8Array, headerLength: number, fileSize: number, file: string): SafetensorsHeader {
  const obj = decodeHeaderJson(json, file);
  const metadata = parseMetadata(obj['__metadata__'], file);
  const entries = Object.entries(obj)
    .filter(([name]) => name !== '__metadata__')
    .map(([name, raw]) => parseEntry(name, raw, file));
  const dataEnd = checkTiling(entries, file);
  const dataOffset = 8 + headerLength;
  const expected = dataOffset + dataEnd;
  if (fileSize < expected) throw new SafetensorsError(`truncated: expected ${expected} bytes, got ${fileSize}`, file);
  if (fileSize > expected) throw new SafetensorsError(`trailing bytes: expected ${expected} bytes, got ${fileSize}`, file);
  const tensors = new Map(entries.map((e) => [e.name, { ...e, fileOffset: dataOffset + e.fileOffset }]));
  return { path: file, headerLength, dataOffset, tensors, metadata, fileSize };
}

/** readSync can return short counts; loop until `length` bytes are in. */
function readExactly(fd: number, length: number, position: number, file: string): Uint8Array {
  const buf = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buf, done, length - done, position + done);
    if (n === 0) throw new SafetensorsError(`truncated: expected ${position + length} bytes, got ${position + done}`, file);
    done += n;
  }
  return buf;
}

/**
 * Reads and validates only the header (the first 8 + N bytes), never the data.
 *
 * @example
 * const h = readSafetensorsHeader('/models/tiny/model.safetensors');
 * h.tensors.get('lm_head.weight'); // { dtype: 'F32', shape: [32000, 768], fileOffset, byteLength }
 */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = fs.openSync(file, 'r');
  try {
    const fileSize = fs.fstatSync(fd).size;
    const n = headerLengthOf(readExactly(fd, Math.min(8, fileSize), 0, file), fileSize, file);
    return buildHeader(readExactly(fd, n, 8, file), n, fileSize, file);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Same checks as readSafetensorsHeader on an in-memory buffer (uploads);
 * `label` names it in errors. `tensor(name)` returns a fresh Float32Array; `view(name)` returns
 * F32 data in place when it is 4-byte aligned (no copy of a 20 MB adapter just to read it once),
 * else converted like `tensor`, so it is for reading only.
 *
 * @example
 * const { header, tensor } = parseSafetensors(body, 'upload adapter.safetensors');
 * const w = tensor('lora_A.weight');
 */
/** An in-memory safetensors file: its header, and float tensors as copies or in-place views. */
export interface ParsedSafetensors {
  header: SafetensorsHeader;
  tensor(name: string): Float32Array;
  view(name: string): Float32Array;
}

export function parseSafetensors(bytes: Uint8Array, label: string): ParsedSafetensors {
  const n = headerLengthOf(bytes.subarray(0, 8), bytes.length, label);
  const header = buildHeader(bytes.subarray(8, 8 + n), n, bytes.length, label);
  const raw = (e: TensorEntry) => bytes.subarray(e.fileOffset, e.fileOffset + e.byteLength);
  const tensor = (name: string): Float32Array => {
    const e = floatEntry(header, name);
    return toFloat32(e.dtype, raw(e));
  };
  const view = (name: string): Float32Array => {
    const e = floatEntry(header, name);
    const start = bytes.byteOffset + e.fileOffset;
    if (e.dtype === 'F32' && start % 4 === 0) return new Float32Array(bytes.buffer, start, e.byteLength / 4);
    return toFloat32(e.dtype, raw(e));
  };
  return { header, tensor, view };
}

/** Looks a tensor up, refusing integer dtypes up front so the error can name the tensor. */
function floatEntry(header: SafetensorsHeader, name: string): TensorEntry {
  const e = header.tensors.get(name);
  if (!e) throw new SafetensorsError('no such tensor', header.path, name);
  if (!FLOAT_DTYPES.has(e.dtype)) throw new SafetensorsError(`dtype ${e.dtype} is not a float type`, header.path, name);
  return e;
}

/**
 * Reads one tensor's bytes from disk and converts F32/F16/BF16/F64 to a
 * Float32Array (a fresh copy of that tensor only).
 *
 * @example
 * const h = readSafetensorsHeader(file);
 * const emb = readTensorF32(h, 'model.embed_tokens.weight');
 */
export function readTensorF32(header: SafetensorsHeader, name: string): Float32Array {
  const e = floatEntry(header, name);
  const fd = fs.openSync(header.path, 'r');
  try {
    return toFloat32(e.dtype, readExactly(fd, e.byteLength, e.fileOffset, header.path));
  } finally {
    fs.closeSync(fd);
  }
}

const FLOAT_DTYPES = new Set<SafetensorsDType>(['F32', 'F16', 'BF16', 'F64']);

function f16ToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24; // subnormal: mant steps of 2^-24
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

let f16Values: Float32Array | undefined;
/** All 65536 F16 values, built once: a lookup is much cheaper than bit math per element. */
function f16Table(): Float32Array {
  return (f16Values ??= Float32Array.from({ length: 65536 }, (_, h) => f16ToNumber(h)));
}

/**
 * Copies into a fresh, aligned buffer so typed views work at any byteOffset. Node's
 * Buffer#slice returns a view of the same memory, so the copy goes through Uint8Array's.
 */
function alignedCopy(bytes: Uint8Array): ArrayBuffer {
  return Uint8Array.prototype.slice.call(bytes).buffer as ArrayBuffer;
}

/**
 * Converts raw little-endian float bytes to a fresh Float32Array. F16 and BF16
 * convert exactly (every value is representable in F32); F64 rounds to F32.
 * Accepts byte views at any offset, so slices of a file buffer need no care.
 *
 * @example
 * toFloat32('BF16', new Uint8Array([0x80, 0x3f])); // Float32Array [1]
 */
export function toFloat32(dtype: SafetensorsDType, bytes: Uint8Array): Float32Array {
  const size = DTYPE_SIZE[dtype];
  if (bytes.byteLength % size !== 0) throw new RangeError(`${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  switch (dtype) {
    case 'F32': return new Float32Array(alignedCopy(bytes));
    case 'F64': return Float32Array.from(new Float64Array(alignedCopy(bytes)));
    case 'F16': {
      const table = f16Table();
      const src = new Uint16Array(alignedCopy(bytes));
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
      return out;
    }
    case 'BF16': {
      // BF16 is the top half of an F32, so shifting the bits back is exact.
      const src = new Uint16Array(alignedCopy(bytes));
      const out = new Uint32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = src[i]! << 16;
      return new Float32Array(out.buffer);
    }
    default: throw new TypeError(`toFloat32: ${dtype} is not a float dtype`);
  }
}

/**
 * Float32 → BF16 bits with round-to-nearest-even; NaN stays a quiet NaN
 * (plain rounding could carry a NaN's payload into the infinity pattern).
 *
 * @example
 * float32ToBf16(new Float32Array([1])); // Uint16Array [0x3f80]
 */
export function float32ToBf16(x: Float32Array): Uint16Array {
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i]!;
    if ((b & 0x7fffffff) > 0x7f800000) { out[i] = (b >>> 16) | 0x40; continue; }
    out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** One F32 bit pattern → F16 bits, round-to-nearest-even, overflow to ±inf. */
function f32BitsToF16(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf, or NaN kept quiet
  const e = exp - 112; // rebias 127 → 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e < -10) return sign; // below half the smallest subnormal: rounds to ±0
  // Normals keep the top 10 mantissa bits; subnormals shift the implicit 1 in as well.
  const m = e > 0 ? mant : mant | 0x800000;
  const shift = e > 0 ? 13 : 14 - e;
  const rest = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  let h = (e > 0 ? e << 10 : 0) | (m >>> shift);
  // A carry out of the mantissa bumps the exponent, which is still right (even up to inf).
  if (rest > half || (rest === half && h & 1)) h++;
  return sign | h;
}

/**
 * Float32 → F16 bits with round-to-nearest-even (overflow becomes ±inf).
 *
 * @example
 * float32ToF16(new Float32Array([1, 65520])); // Uint16Array [0x3c00, 0x7c00]
 */
export function float32ToF16(x: Float32Array): Uint16Array {
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  return Uint16Array.from(bits, f32BitsToF16);
}

type EncodableDType = 'F32' | 'F16' | 'BF16' | 'I64' | 'I32';

/**
 * Serializes tensors like the reference writer: ordered by dtype (widest
 * first) then name, contiguous offsets, header padded with spaces to a
 * multiple of 8 so the data buffer starts aligned.
 *
 * @example
 * const bytes = encodeSafetensors({ w: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) } }, { format: 'pt' });
 */
export function encodeSafetensors(
  tensors: Record<string, { dtype: EncodableDType; shape: number[]; data: ArrayBufferView }>,
  metadata?: Record<string, string>,
): Uint8Array {
  const names = Object.keys(tensors).sort((a, b) =>
    WRITER_DTYPE_RANK[tensors[b]!.dtype] - WRITER_DTYPE_RANK[tensors[a]!.dtype] || (a < b ? -1 : a > b ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata) header['__metadata__'] = metadata;
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const name of names) {
    if (name === '__metadata__') throw new RangeError('encodeSafetensors: "__metadata__" is reserved');
    const { dtype, shape, data } = tensors[name]!;
    const want = expectedByteLength(dtype, shape);
    if (want !== data.byteLength) throw new RangeError(`encodeSafetensors: tensor "${name}" has ${data.byteLength} bytes, shape needs ${want}`);
    header[name] = { dtype, shape, data_offsets: [offset, offset + want] };
    chunks.push(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    offset += want;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const n = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + n + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(n), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + n);
  let at = 8 + n;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

/**
 * Lists a model directory's safetensors files: `model.safetensors` if present,
 * else the distinct shards in `model.safetensors.index.json`'s weight_map
 * (sorted by name), each joined onto `dir`.
 *
 * @example
 * readShardedIndex('/models/llama'); // ['/models/llama/model-00001-of-00002.safetensors', ...]
 */
export function readShardedIndex(dir: string): string[] {
  const single = path.join(dir, 'model.safetensors');
  if (fs.existsSync(single)) return [single];
  const indexFile = path.join(dir, 'model.safetensors.index.json');
  if (fs.existsSync(indexFile)) return shardsOf(indexFile, dir);
  throw new SafetensorsError('no model.safetensors or model.safetensors.index.json found in this directory', dir);
}

function shardsOf(indexFile: string, dir: string): string[] {
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
  } catch (e) {
    throw new SafetensorsError(`index is not valid JSON: ${(e as Error).message}`, indexFile);
  }
  const map = isPlainObject(index) ? index['weight_map'] : undefined;
  if (!isPlainObject(map) || Object.keys(map).length === 0) {
    throw new SafetensorsError('index has no weight_map object (or it is empty)', indexFile);
  }
  const files = new Set<string>();
  for (const [tensor, shard] of Object.entries(map)) {
    // Shard names come from a downloaded file: keep them inside the model directory.
    if (typeof shard !== 'string' || shard === '' || path.isAbsolute(shard) || shard.split(/[\\/]/).includes('..')) {
      throw new SafetensorsError(`weight_map entry ${JSON.stringify(shard)} is not a relative file name`, indexFile, tensor);
    }
    files.add(shard);
  }
  return [...files].sort().map((shard) => {
    const p = path.join(dir, shard);
    if (!fs.existsSync(p)) throw new SafetensorsError(`listed shard ${JSON.stringify(shard)} is missing (${p})`, indexFile);
    return p;
  });
}
