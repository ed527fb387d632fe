// The multipart grammar without I/O: a scanner that turns chunks of a body into part events and
// the header parsing it needs. multipart.ts drives it from a stream and writes the parts.

/** A refused upload: 415 wrong content type, 400 malformed or unexpected, 413 over a limit. `param` names the field. */
export class MultipartError extends Error {
  override readonly name = 'MultipartError';

  constructor(
    readonly status: 400 | 413 | 415,
    message: string,
    readonly param: string | null,
  ) {
    super(message);
  }
}

/** A part's Content-Disposition: its field name, and its filename when it is a file (possibly ''). */
export interface PartHead {
  name: string;
  filename: string | undefined;
}

const CR = 0x0d;
const LF = 0x0a;
const DASH = 0x2d;
const SP = 0x20;
const HT = 0x09;
const CRLF = Buffer.from('\r\n');
const HEADER_END = Buffer.from('\r\n\r\n');

function malformed(message: string, param: string | null = null): MultipartError {
  return new MultipartError(400, `malformed multipart body: ${message}`, param);
}

/** What the scanner finds: a part's headers, a run of its body bytes, its end. */
export type PartEvent = { kind: 'part'; head: PartHead } | { kind: 'data'; bytes: Uint8Array } | { kind: 'end' };

/** Where `delimiter` starts in `buf` at or after `from`: a complete match, or a tail of `buf` that may be its start. */
export interface DelimiterMatch {
  /** -1: no match, every byte from `from` on is content. */
  index: number;
  /** false: `buf` ends with the first bytes of a delimiter; they must wait for the next chunk. */
  complete: boolean;
}

/** Pure and stream-free: finds a delimiter that may be split across chunks at any byte. */
export function findDelimiter(buf: Uint8Array, delimiter: Uint8Array, from: number): DelimiterMatch {
  const full = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).indexOf(delimiter, from);
  if (full >= 0) return { index: full, complete: true };
  for (let i = Math.max(from, buf.length - delimiter.length + 1); i < buf.length; i++) {
    let j = 0;
    while (i + j < buf.length && buf[i + j] === delimiter[j]) j++;
    if (i + j === buf.length) return { index: i, complete: false };
  }
  return { index: -1, complete: false };
}

type ScanState = 'preamble' | 'delimiter' | 'headers' | 'body' | 'epilogue';

/**
 * The RFC 2046 grammar as a state machine over chunks; no I/O, so it is tested with plain byte
 * arrays. Only bytes that may still begin a delimiter (or an unfinished header block) are kept
 * between chunks; body bytes are handed on as views of the chunk they came in.
 */
export class PartScanner {
  /** Max bytes of one part's header block; more is a 400, not an unbounded buffer. */
  static readonly MAX_HEADER_BYTES = 16 * 1024;
  private state: ScanState = 'preamble';
  // A virtual CRLF before the first byte: the delimiter is CRLF--boundary, and the first one may
  // open the body with no preamble (and so no line break) before it.
  private pending: Uint8Array = CRLF;
  private padded = false;
  private starved = false;
  private readonly delimiter: Buffer;

  constructor(boundary: string) {
    this.delimiter = Buffer.from(`\r\n--${boundary}`, 'latin1');
  }

  /** Whether the closing delimiter has been seen (what follows is epilogue, ignored). */
  get closed(): boolean {
    return this.state === 'epilogue';
  }

  /** The events in `chunk`, lazily: a malformation throws when reached, after every event before it. */
  *push(chunk: Uint8Array): Generator<PartEvent> {
    if (this.closed) return;
    const buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    let pos = 0;
    this.starved = false;
    while (pos < buf.length && !this.starved && !this.closed) {
      const events: PartEvent[] = [];
      pos = this.step(buf, pos, events);
      yield* events;
    }
    // Copied: what is kept is small (a delimiter's prefix or headers), the chunk may be large.
    this.pending = this.closed ? new Uint8Array(0) : new Uint8Array(buf.subarray(pos));
  }

  /** The stream has ended; anything but a closed body is truncated. */
  finish(): void {
    if (!this.closed) throw new MultipartError(400, 'multipart body ended before its closing boundary', null);
  }

  private step(buf: Uint8Array, pos: number, events: PartEvent[]): number {
    switch (this.state) {
      case 'preamble': return this.scanTo(buf, pos, null);
      case 'body': return this.scanTo(buf, pos, events);
      case 'delimiter': return this.afterDelimiter(buf, pos);
      case 'headers': return this.headers(buf, pos, events);
      case 'epilogue': return buf.length;
    }
  }

  /** Up to the next delimiter: body bytes become events, preamble bytes are dropped. */
  private scanTo(buf: Uint8Array, pos: number, events: PartEvent[] | null): number {
    const match = findDelimiter(buf, this.delimiter, pos);
    const end = match.index < 0 ? buf.length : match.index;
    if (events && end > pos) events.push({ kind: 'data', bytes: buf.subarray(pos, end) });
    if (match.index < 0) return buf.length;
    if (!match.complete) {
      this.starved = true;
      return match.index;
    }
    if (events) events.push({ kind: 'end' });
    this.state = 'delimiter';
    this.padded = false;
    return match.index + this.delimiter.length;
  }

  /** After `--boundary`: `--` closes the body; otherwise optional spaces (transport padding), then CRLF. */
  private afterDelimiter(buf: Uint8Array, pos: number): number {
    if (!this.padded) {
      if (buf.length - pos < 2) return this.starve(pos);
      if (buf[pos] === DASH && buf[pos + 1] === DASH) {
        this.state = 'epilogue';
        return buf.length;
      }
    }
    while (pos < buf.length && (buf[pos] === SP || buf[pos] === HT)) {
      pos++;
      this.padded = true;
    }
    if (buf.length - pos < 2) return this.starve(pos);
    if (buf[pos] !== CR || buf[pos + 1] !== LF) throw malformed("a boundary delimiter is followed by neither a line break nor '--'");
    // The CRLF stays: the header block is found by searching for CRLF CRLF from here, which also
    // finds a part with no headers at all.
    this.state = 'headers';
    return pos;
  }

  private headers(buf: Uint8Array, pos: number, events: PartEvent[]): number {
    const end = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).indexOf(HEADER_END, pos);
    const max = PartScanner.MAX_HEADER_BYTES;
    // Sized the same with the terminator found or not (its CRLF before and up to 3 bytes of it
    // after), so the outcome does not depend on chunking.
    if ((end < 0 ? buf.length - pos - 5 : end - pos - 2) > max) throw malformed(`a part's headers exceed ${max} bytes`);
    if (end < 0) return this.starve(pos);
    events.push({ kind: 'part', head: parsePartHeaders(buf.subarray(pos + 2, Math.max(pos + 2, end))) });
    this.state = 'body';
    return end + HEADER_END.length;
  }

  private starve(pos: number): number {
    this.starved = true;
    return pos;
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The name and filename from a part's header block (CRLF-separated lines, without the blank line). */
export function parsePartHeaders(block: Uint8Array): PartHead {
  let text: string;
  try {
    text = utf8.decode(block);
  } catch {
    throw malformed("a part's headers are not valid UTF-8");
  }
  let disposition: string | undefined;
  for (const line of text.split('\r\n')) {
    if (!line) continue; // only an empty block splits into an empty line
    const colon = line.indexOf(':');
    if (colon <= 0) throw malformed(`part header line '${clip(line)}' has no name`);
    if (line.slice(0, colon).trim().toLowerCase() !== 'content-disposition') continue; // Content-Type and others are not needed
    if (disposition !== undefined) throw malformed('a part has two Content-Disposition headers');
    disposition = line.slice(colon + 1);
  }
  if (disposition === undefined) throw malformed('a part has no Content-Disposition header');
  return parseDisposition(disposition);
}

/** `form-data; name="x"; filename="y"`, where `filename*` (RFC 5987) wins over `filename` (RFC 6266). */
function parseDisposition(value: string): PartHead {
  const { type, params } = parseParameters(value, "a part's Content-Disposition");
  if (type !== 'form-data') throw malformed(`a part's Content-Disposition is '${clip(type)}', not form-data`);
  const name = params.get('name');
  if (!name) throw malformed('a part has no name in its Content-Disposition');
  const extended = params.get('filename*');
  return { name, filename: extended === undefined ? params.get('filename') : decodeExtendedValue(extended, name) };
}

/** `UTF-8''%E2%82%AC%20rates.txt` → `€ rates.txt` (charset UTF-8 or ISO-8859-1). */
function decodeExtendedValue(value: string, name: string): string {
  const match = /^([^']*)'[^']*'(.*)$/s.exec(value);
  if (!match) throw malformed(`filename* of '${name}' is not charset'language'value`, name);
  const charset = match[1]!.toLowerCase();
  const encoded = match[2]!;
  if (charset === 'iso-8859-1') return encoded.replace(/%([0-9a-fA-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  if (charset !== 'utf-8') throw malformed(`filename* of '${name}' uses charset '${clip(match[1]!)}'; expected UTF-8`, name);
  try {
    return decodeURIComponent(encoded);
  } catch {
    throw malformed(`filename* of '${name}' is not valid percent-encoded UTF-8`, name);
  }
}

/**
 * A header value with parameters: `type; key=token; key="quoted \\"string\\""`. Keys are
 * lowercased; a repeated key is a 400 rather than silently the first or last. `what` names the
 * header in messages.
 */
export function parseParameters(text: string, what: string): { type: string; params: Map<string, string> } {
  const bad = (problem: string) => new MultipartError(400, `${what} ${problem}`, null);
  const semi = text.indexOf(';');
  const type = (semi < 0 ? text : text.slice(0, semi)).trim().toLowerCase();
  const params = new Map<string, string>();
  let i = semi < 0 ? text.length : semi + 1;
  while (i < text.length) {
    const eq = text.indexOf('=', i);
    const key = (eq < 0 ? text.slice(i) : text.slice(i, eq)).trim().toLowerCase();
    if (!key && eq < 0) break; // a trailing ';'
    if (!key || eq < 0) throw bad(`parameter '${clip(text.slice(i).trim())}' is not key=value`);
    const read = readValue(text, eq + 1);
    if (!read) throw bad(`parameter '${clip(key)}' has an unclosed quoted string`);
    if (params.has(key)) throw bad(`parameter '${clip(key)}' is given twice`);
    params.set(key, read.value);
    i = skipSpaces(text, read.end);
    if (i < text.length && text[i] !== ';') throw bad(`has '${clip(text.slice(i))}' after parameter '${clip(key)}'`);
    i++;
  }
  return { type, params };
}

/** A token (up to `;`) or a quoted string, and where it ended; null if a quote is not closed. */
function readValue(text: string, start: number): { value: string; end: number } | null {
  let i = skipSpaces(text, start);
  if (text[i] !== '"') {
    const semi = text.indexOf(';', i);
    const end = semi < 0 ? text.length : semi;
    return { value: text.slice(i, end).trim(), end };
  }
  let value = '';
  for (i++; i < text.length; i++) {
    if (text[i] === '"') return { value, end: i + 1 };
    // Only \" and \\ are escapes: browsers send other backslashes as they are (C:\dir\file).
    if (text[i] === '\\' && (text[i + 1] === '"' || text[i + 1] === '\\')) i++;
    value += text[i]!;
  }
  return null;
}

function skipSpaces(text: string, i: number): number {
  while (text[i] === ' ' || text[i] === '\t') i++;
  return i;
}

/** Client text quoted in a message: kept short, control characters escaped so a message stays one line. */
export function clip(text: string): string {
  const short = text.length > 60 ? `${text.slice(0, 57)}...` : text;
  return short.replace(/[\x00-\x1f\x7f]/g, (c) => (c === '\r' ? '\\r' : c === '\n' ? '\\n' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`));
}
