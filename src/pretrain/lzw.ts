/**
 * Decoder for Unix `compress` (.Z) LZW streams, as ncompress writes them. Debian's KJV text
 * (bible-kjv-text) stores its chunks this way and Node has no built-in for it.
 *
 * The format's one quirk: codes are packed least-significant bit first in groups of `bits` bytes
 * (eight codes), and when the code width grows or the table is cleared the rest of the current
 * group is skipped. Getting that wrong decodes the first few kilobytes and then garbage.
 */

/** First byte pair of a .Z file. */
const MAGIC = [0x1f, 0x9d] as const;
const INIT_BITS = 9;
const CLEAR = 256;

/** What the third header byte says: the widest code, and whether code 256 clears the table. */
export interface LzwFlags {
  maxBits: number;
  blockMode: boolean;
}

/**
 * Reads the three-byte .Z header. Throws when the magic bytes are wrong or the width is absurd.
 *
 * @example
 * lzwHeader(Uint8Array.of(0x1f, 0x9d, 0x90)); // { maxBits: 16, blockMode: true }
 */
export function lzwHeader(bytes: Uint8Array): LzwFlags {
  if (bytes.length < 3 || bytes[0] !== MAGIC[0] || bytes[1] !== MAGIC[1]) {
    throw new Error('not a compress (.Z) stream: the first bytes are not 1f 9d');
  }
  const flags = bytes[2]!;
  const maxBits = flags & 0x1f;
  if (maxBits < INIT_BITS || maxBits > 16) throw new Error(`compress stream: unsupported maximum code width ${maxBits}`);
  return { maxBits, blockMode: (flags & 0x80) !== 0 };
}

/**
 * Decodes the code stream that follows a .Z header (`data` starts right after the three header
 * bytes), exactly as ncompress's `decompress()` does, including its table-clear behaviour.
 *
 * @example
 * const file = fs.readFileSync('notes.txt.Z');
 * const text = lzwDecode(file.subarray(3), lzwHeader(file));
 */
export function lzwDecode(data: Uint8Array, flags: LzwFlags): Uint8Array {
  const maxMaxCode = 1 << flags.maxBits;
  const prefix = new Uint16Array(maxMaxCode);
  const suffix = new Uint8Array(maxMaxCode);
  for (let c = 0; c < 256; c++) suffix[c] = c;
  const stack = new Uint8Array(maxMaxCode);
  const out = new Output(data.length * 4);
  const totalBits = data.length * 8;

  let bits = INIT_BITS;
  let maxCode = (1 << bits) - 1;
  let freeEnt = flags.blockMode ? 257 : 256;
  let pos = 0; // in bits
  let groupStart = 0; // where groups of the current width are counted from
  let oldCode = -1;
  let finChar = 0;

  // Skips to the end of the current group of `bits`-byte groups, as a width change requires.
  const skipGroup = () => {
    const group = bits * 8;
    pos = groupStart + Math.ceil((pos - groupStart) / group) * group;
    groupStart = pos;
  };

  while (pos + bits <= totalBits) {
    if (freeEnt > maxCode) {
      skipGroup();
      bits++;
      maxCode = bits === flags.maxBits ? maxMaxCode : (1 << bits) - 1;
      continue;
    }
    let code = readCode(data, pos, bits);
    pos += bits;
    if (oldCode === -1) {
      if (code >= 256) throw new Error(`compress stream: first code ${code} is not a literal`);
      oldCode = finChar = code;
      out.push(code);
      continue;
    }
    if (code === CLEAR && flags.blockMode) {
      // ncompress sets free_ent to 256 here: the next code then fills slot 256, which is never
      // read (256 always means CLEAR), and entries proper restart at 257 as the encoder's do.
      freeEnt = 256;
      skipGroup();
      bits = INIT_BITS;
      maxCode = (1 << bits) - 1;
      continue;
    }
    const inCode = code;
    let sp = 0;
    if (code >= freeEnt) {
      // The KwKwK case: the code being defined right now, i.e. old string + its first byte.
      if (code > freeEnt) throw new Error(`compress stream: code ${code} is beyond the table (${freeEnt}) at bit ${pos - bits}`);
      stack[sp++] = finChar;
      code = oldCode;
    }
    while (code >= 256) {
      stack[sp++] = suffix[code]!;
      code = prefix[code]!;
    }
    finChar = suffix[code]!;
    stack[sp++] = finChar;
    while (sp > 0) out.push(stack[--sp]!);
    if (freeEnt < maxMaxCode) {
      prefix[freeEnt] = oldCode;
      suffix[freeEnt] = finChar;
      freeEnt++;
    }
    oldCode = inCode;
  }
  return out.bytes();
}

/** `bits` bits starting at bit `pos`, least significant first (codes span at most three bytes). */
function readCode(data: Uint8Array, pos: number, bits: number): number {
  const byte = pos >> 3;
  const window = (data[byte] ?? 0) | ((data[byte + 1] ?? 0) << 8) | ((data[byte + 2] ?? 0) << 16);
  return (window >>> (pos & 7)) & ((1 << bits) - 1);
}

/** A growable byte buffer. */
class Output {
  private buf: Uint8Array;
  private length = 0;
  constructor(capacity: number) {
    this.buf = new Uint8Array(Math.max(capacity, 1024));
  }
  push(byte: number): void {
    if (this.length === this.buf.length) {
      const bigger = new Uint8Array(this.buf.length * 2);
      bigger.set(this.buf);
      this.buf = bigger;
    }
    this.buf[this.length++] = byte;
  }
  bytes(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}
