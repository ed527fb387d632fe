/**
 * The safetensors parser under arbitrary and mutated inputs: every outcome is a parsed file or a
 * SafetensorsError naming the problem — never another exception, a hang, or a read outside the
 * buffer (a parsed tensor's bytes always lie inside the file).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { encodeSafetensors, parseSafetensors, SafetensorsError } from '../../src/model/safetensors.js';

const RUNS = 3000;

/** A valid file of 1-4 small float tensors. */
const validFile = fc
  .array(fc.tuple(fc.constantFrom('F32', 'F16', 'BF16'), fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 1, maxLength: 3 })), { minLength: 1, maxLength: 4 })
  .map((specs) => {
    const tensors: Parameters<typeof encodeSafetensors>[0] = {};
    specs.forEach(([dtype, shape], i) => {
      const n = shape.reduce((a, b) => a * b, 1);
      tensors[`t${i}`] = dtype === 'F32' ? { dtype, shape, data: Float32Array.from({ length: n }, (_, j) => j / 3) } : { dtype, shape, data: new Uint16Array(n).fill(0x3c00) };
    });
    return encodeSafetensors(tensors);
  });

/** Parses, reading every tensor; returns 'ok' or the SafetensorsError. Any other exception fails the property. */
function outcome(bytes: Uint8Array): 'ok' | SafetensorsError {
  try {
    const parsed = parseSafetensors(bytes, 'fuzz.safetensors');
    for (const name of parsed.header.tensors.keys()) {
      const entry = parsed.header.tensors.get(name)!;
      if (['F32', 'F16', 'BF16', 'F64'].includes(entry.dtype)) parsed.tensor(name);
    }
    return 'ok';
  } catch (err) {
    if (err instanceof SafetensorsError) {
      assert.match(err.message, /fuzz\.safetensors/);
      return err;
    }
    throw err;
  }
}

describe('fuzz: safetensors parser', () => {
  it(`arbitrary bytes (${RUNS} cases): a parse or a SafetensorsError`, () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => void outcome(bytes)), { numRuns: RUNS });
  });

  it(`arbitrary JSON headers with a valid length prefix (${RUNS} cases)`, () => {
    const header = fc.oneof(fc.jsonValue(), fc.dictionary(fc.string({ maxLength: 8 }), fc.record({ dtype: fc.oneof(fc.constantFrom('F32', 'F16', 'BF16', 'I8', 'F8_E4M3'), fc.string()), shape: fc.array(fc.oneof(fc.integer({ min: -2, max: 9 }), fc.double()), { maxLength: 4 }), data_offsets: fc.array(fc.oneof(fc.integer({ min: -4, max: 64 }), fc.double()), { maxLength: 3 }) }, { requiredKeys: [] })));
    fc.assert(
      fc.property(header, fc.uint8Array({ maxLength: 64 }), (json, data) => {
        const text = new TextEncoder().encode(JSON.stringify(json) ?? 'null');
        const bytes = new Uint8Array(8 + text.length + data.length);
        new DataView(bytes.buffer).setBigUint64(0, BigInt(text.length), true);
        bytes.set(text, 8);
        bytes.set(data, 8 + text.length);
        outcome(bytes);
      }),
      { numRuns: RUNS },
    );
  });

  it(`valid files mutated (truncated, extended, byte flips, forged length prefixes) (${RUNS} cases)`, () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
      fc.record({ kind: fc.constant('extend' as const), extra: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
      fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('prefix' as const), length: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) }),
    );
    fc.assert(
      fc.property(validFile, fc.array(mutation, { minLength: 1, maxLength: 3 }), (file, mutations) => {
        let bytes = file;
        for (const m of mutations) {
          if (m.kind === 'truncate') bytes = bytes.subarray(0, m.at % (bytes.length + 1));
          else if (m.kind === 'extend') bytes = Uint8Array.from([...bytes, ...m.extra]);
          else if (m.kind === 'flip' && bytes.length) (bytes = Uint8Array.from(bytes))[m.at % bytes.length] = m.value;
          else if (m.kind === 'prefix' && bytes.length >= 8) new DataView((bytes = Uint8Array.from(bytes)).buffer).setBigUint64(0, m.length, true);
        }
        outcome(bytes);
      }),
      { numRuns: RUNS },
    );
  });

  it('unmutated valid files always parse', () => {
    fc.assert(fc.property(validFile, (file) => assert.equal(outcome(file), 'ok')), { numRuns: 500 });
  });
});
