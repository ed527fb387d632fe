/**
 * Reader for a SWORD "zText" module testament (the .bzs/.bzv/.bzz files CrossWire's modules and
 * Debian's sword-text-* packages install): the text in zlib-compressed blocks, and one index
 * entry per versification slot (module heading, testament heading, book and chapter headings,
 * verses). All integers are little-endian.
 *
 *   .bzs  per block:  u32 offset in .bzz, u32 compressed size, u32 uncompressed size
 *   .bzv  per entry:  u32 block, u32 offset in the uncompressed block, u16 size
 *   .bzz  the blocks, each a zlib stream
 */
import zlib from 'node:zlib';

export interface ZTextFiles {
  bzs: Uint8Array;
  bzv: Uint8Array;
  bzz: Uint8Array;
}

/**
 * Every index entry's text (UTF-8), in index order; empty slots are ''. Throws when an index
 * points outside its block or file.
 *
 * @example
 * const entries = readZText({ bzs, bzv, bzz });
 * entries[4]; // Genesis 1:1 in the module's markup
 */
export function readZText(files: ZTextFiles): string[] {
  const blocks = view(files.bzs);
  const index = view(files.bzv);
  if (files.bzs.length % 12 !== 0 || files.bzv.length % 10 !== 0) {
    throw new Error(`zText index sizes ${files.bzs.length} (.bzs) and ${files.bzv.length} (.bzv) are not multiples of 12 and 10`);
  }
  const cache = new Map<number, Buffer>();
  const block = (b: number): Buffer => {
    let data = cache.get(b);
    if (data) return data;
    if (b * 12 + 12 > files.bzs.length) throw new Error(`zText entry names block ${b}, but there are ${files.bzs.length / 12}`);
    const offset = blocks.getUint32(b * 12, true);
    const size = blocks.getUint32(b * 12 + 4, true);
    const expected = blocks.getUint32(b * 12 + 8, true);
    data = zlib.inflateSync(files.bzz.subarray(offset, offset + size));
    if (data.length !== expected) throw new Error(`zText block ${b} inflates to ${data.length} bytes, the index says ${expected}`);
    cache.set(b, data);
    return data;
  };
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const entries: string[] = [];
  for (let e = 0; e < files.bzv.length / 10; e++) {
    const size = index.getUint16(e * 10 + 8, true);
    if (size === 0) {
      entries.push('');
      continue;
    }
    const data = block(index.getUint32(e * 10, true));
    const start = index.getUint32(e * 10 + 4, true);
    if (start + size > data.length) throw new Error(`zText entry ${e} (${start}+${size}) runs past its block (${data.length} bytes)`);
    entries.push(decoder.decode(data.subarray(start, start + size)));
  }
  return entries;
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
