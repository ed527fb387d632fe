import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { readBrsArchive } from './brs-archive.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/pretrain/', import.meta.url));
const sample = fs.readFileSync(`${FIXTURES}kjv-sample.txt`);
const CHUNK = 16384;

/**
 * A BRS data file laid out as bible-kjv-text's is: the sample cut into 16 KiB chunks, each
 * compressed alone (fixtures chunk0..2, 16-bit), their .Z headers dropped but one kept before the
 * first chunk, and the offset table in front.
 */
function archive(options: { magic?: string; chunkSize?: number } = {}): Uint8Array {
  const chunks = [0, 1, 2].map((i) => fs.readFileSync(`${FIXTURES}kjv-sample.chunk${i}.Z`));
  const headerSize = 0x5c + 4 * (chunks.length + 1);
  const first = headerSize + 3;
  const total = first + chunks.reduce((n, c) => n + c.length - 3, 0);
  const file = new Uint8Array(total);
  const view = new DataView(file.buffer);
  file.set(new TextEncoder().encode(`${options.magic ?? 'EC02'}Compressed Data File`));
  view.setUint32(0x54, options.chunkSize ?? CHUNK);
  view.setUint32(0x58, chunks.length);
  file.set(chunks[0]!.subarray(0, 3), headerSize);
  let offset = first;
  chunks.forEach((chunk, i) => {
    view.setUint32(0x5c + 4 * i, offset);
    file.set(chunk.subarray(3), offset);
    offset += chunk.length - 3;
  });
  view.setUint32(0x5c + 4 * chunks.length, offset);
  return file;
}

test('decodes every chunk in order into the original text', () => {
  assert.deepEqual(Buffer.from(readBrsArchive(archive())), sample);
});

test('rejects a file without the magic, and a chunk of the wrong size', () => {
  assert.throws(() => readBrsArchive(archive({ magic: 'XX01' })), /not a BRS data file/);
  assert.throws(() => readBrsArchive(archive({ chunkSize: 8192 })), /chunk 0 decodes to 16384 bytes, expected 8192/);
});

test('rejects offsets that do not end at the end of the file', () => {
  const file = archive();
  assert.throws(() => readBrsArchive(file.subarray(0, file.length - 1)), /the offsets end at \d+, the file at \d+/);
});
