/**
 * The King James Version from Debian's bible-kjv-text: the BRS data file decoded to its text
 * ("Ge1:1 In the beginning ..." one verse a line, after a one-line title), parsed into verses.
 */
import { bookByBrs, BOOKS } from './books.js';
import { readBrsArchive } from './brs-archive.js';
import { KJV_SOURCE, readPinned } from './sources.js';
import { normaliseVerse, type Verse } from './verses.js';

/** Verses in the KJV (Protestant canon, standard versification). */
export const KJV_VERSE_COUNT = 31102;

const MARKER = /^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$/;

/**
 * Parses the BRS text into verses. Normalisation: CRLF and lone CR become LF; the first line
 * (the file's title, "Holy Bible, Authorized (King James) Version. Textfile 930105.") is
 * dropped; every other non-empty line must be `<book><chapter>:<verse> <text>` with a known book
 * abbreviation, in canonical order; the marker is removed (kept as the verse's fields) and the
 * text normalised by `normaliseVerse`. Throws on any line that does not fit, naming it.
 *
 * @example
 * parseBrsText('title\nGe1:1 In the beginning God created the heaven and the earth.\n')[0];
 * // { book: Genesis, chapter: 1, verse: 1, text: 'In the beginning God created the heaven and the earth.' }
 */
export function parseBrsText(text: string): Verse[] {
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  const verses: Verse[] = [];
  let lastBook = 0;
  lines.slice(1).forEach((line, i) => {
    if (line.trim() === '') return;
    const m = MARKER.exec(line);
    const book = m ? bookByBrs(m[1]!) : undefined;
    if (!m || !book) throw new Error(`KJV text line ${i + 2}: not "<book><chapter>:<verse> <text>" with a known book: ${JSON.stringify(line.slice(0, 60))}`);
    if (book.index < lastBook) throw new Error(`KJV text line ${i + 2}: ${book.name} after ${BOOKS[lastBook]!.name}`);
    lastBook = book.index;
    verses.push({ book, chapter: Number(m[2]), verse: Number(m[3]), text: normaliseVerse(m[4]!) });
  });
  return verses;
}

/**
 * Reads, verifies (SHA-256 pinned in KJV_SOURCE) and parses the installed KJV. `root` prefixes
 * the installed path, for a .deb unpacked with `dpkg-deb -x` instead of installed.
 *
 * @example
 * const verses = loadKjv(); // 31102 verses, Genesis 1:1 first
 */
export function loadKjv(root = '/'): Verse[] {
  const bytes = readPinned(KJV_SOURCE, KJV_SOURCE.files[0]!, root);
  const text = new TextDecoder('utf-8', { fatal: true }).decode(readBrsArchive(bytes));
  const verses = parseBrsText(text);
  if (verses.length !== KJV_VERSE_COUNT) throw new Error(`KJV: parsed ${verses.length} verses, expected ${KJV_VERSE_COUNT}`);
  return verses;
}
