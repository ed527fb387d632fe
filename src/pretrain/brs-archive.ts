/**
 * Reader for the Bible Retrieval System's "Text Storage Library" data file (Debian's
 * bible-kjv-text installs it as /usr/lib/bible.data): the text cut into fixed-size chunks, each
 * compressed on its own with Unix `compress` so the `bible` program can seek, with one shared .Z
 * header. Layout (big-endian integers):
 *
 *   0x00  "EC02" magic, then a NUL-padded description ("Compressed Data File")
 *   0x54  u32 chunk size before compression (65536)
 *   0x58  u32 chunk count N
 *   0x5c  u32 × (N + 1) file offsets of each chunk's codes, the last one the end of the file
 *   ...   the three .Z header bytes (1f 9d flags) just before the first chunk, then the chunks
 */
import { lzwDecode, lzwHeader } from './lzw.js';

const MAGIC = 'EC02';
const CHUNK_SIZE_AT = 0x54;
const COUNT_AT = 0x58;
const OFFSETS_AT = 0x5c;

/**
 * The whole stored text, every chunk decoded and concatenated. Throws an Error naming the chunk
 * when a chunk does not decode to the declared size (all but the last must be exactly full).
 *
 * @example
 * const text = new TextDecoder().decode(readBrsArchive(fs.readFileSync('/usr/lib/bible.data')));
 * text.split('\n')[1]; // 'Ge1:1 In the beginning God created the heaven and the earth.'
 */
export function readBrsArchive(file: Uint8Array): Uint8Array {
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  if (file.length < OFFSETS_AT || new TextDecoder('latin1').decode(file.subarray(0, 4)) !== MAGIC) {
    throw new Error(`not a BRS data file: it does not start with "${MAGIC}"`);
  }
  const chunkSize = view.getUint32(CHUNK_SIZE_AT);
  const count = view.getUint32(COUNT_AT);
  if (OFFSETS_AT + 4 * (count + 1) > file.length) throw new Error(`BRS data file: ${count} chunks do not fit in ${file.length} bytes`);
  const offsets = Array.from({ length: count + 1 }, (_, i) => view.getUint32(OFFSETS_AT + 4 * i));
  const first = offsets[0]!;
  const flags = lzwHeader(file.subarray(first - 3, first));
  if (offsets.at(-1) !== file.length) throw new Error(`BRS data file: the offsets end at ${offsets.at(-1)}, the file at ${file.length}`);

  const out = new Uint8Array(chunkSize * count);
  let length = 0;
  for (let i = 0; i < count; i++) {
    const start = offsets[i]!;
    const end = offsets[i + 1]!;
    if (end < start) throw new Error(`BRS data file: chunk ${i} ends (${end}) before it starts (${start})`);
    const chunk = lzwDecode(file.subarray(start, end), flags);
    const last = i === count - 1;
    if (last ? chunk.length > chunkSize : chunk.length !== chunkSize) {
      throw new Error(`BRS data file: chunk ${i} decodes to ${chunk.length} bytes, expected ${last ? 'at most ' : ''}${chunkSize}`);
    }
    out.set(chunk, length);
    length += chunk.length;
  }
  return out.slice(0, length);
}
