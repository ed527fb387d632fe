/**
 * The World English Bible from Debian's sword-text-web: both testaments' zText entries, walked in
 * versification order. A `<chapter sID osisID="Gen.1">` entry starts a chapter and the entries
 * after it are its verses 1, 2, ... until the next chapter heading; a book's end tag
 * (`<div type="book" eID>`) ends the chapter, and what follows it in the same entry (the
 * glossary after Revelation) is not verse text. Books outside the 66 of the KJV (the module includes
 * the deuterocanon) are skipped, and so are empty slots.
 */
import path from 'node:path';
import { bookByOsis, type Book } from './books.js';
import { osisToText } from './osis.js';
import { readPinned, WEB_SOURCE } from './sources.js';
import { readZText } from './sword-ztext.js';
import type { Verse } from './verses.js';

const CHAPTER_START = /<chapter\b[^>]*\bsID="[^"]*"[^>]*>/;
const OSIS_ID = /\bosisID="([^".]+)\.(\d+)"/;
const BOOK_START = /<div\b(?=[^>]*\btype="book")(?=[^>]*\bsID=)[^>]*>/;
/** A book's end tag; whatever follows it in the same entry is back matter (the WEB's glossary). */
const BOOK_END = /<div\b(?=[^>]*\btype="book")(?=[^>]*\beID=)[^>]*>/;

/**
 * Verses from zText entries in versification order (see the module comment).
 *
 * @example
 * versesFromEntries(['', '<chapter osisID="Gen.1" sID="Gen.1"/>', '<w>In</w> the beginning']);
 * // [{ book: Genesis, chapter: 1, verse: 1, text: 'In the beginning' }]
 */
export function versesFromEntries(entries: readonly string[]): Verse[] {
  const verses: Verse[] = [];
  let current: { book: Book | undefined; chapter: number; verse: number } | undefined;
  for (const entry of entries) {
    const chapterTag = CHAPTER_START.exec(entry)?.[0];
    if (chapterTag) {
      const id = OSIS_ID.exec(chapterTag);
      if (!id) throw new Error(`WEB: a chapter heading without an osisID: ${JSON.stringify(chapterTag)}`);
      current = { book: bookByOsis(id[1]!), chapter: Number(id[2]), verse: 0 };
      continue;
    }
    if (BOOK_START.test(entry)) {
      current = undefined;
      continue;
    }
    if (!current) continue;
    current.verse++;
    const end = BOOK_END.exec(entry);
    const text = current.book ? osisToText(end ? entry.slice(0, end.index) : entry) : '';
    if (current.book && text !== '') verses.push({ book: current.book, chapter: current.chapter, verse: current.verse, text });
    if (end) current = undefined;
  }
  return verses;
}

/**
 * Reads, verifies (SHA-256s pinned in WEB_SOURCE) and parses the installed WEB, Old Testament
 * then New. `root` prefixes the installed paths, as for `loadKjv`.
 *
 * @example
 * const web = loadWeb(); // ~31,000 verses, Genesis 1:1 'In the beginning, God created the heavens and the earth.'
 */
export function loadWeb(root = '/'): Verse[] {
  const file = (name: string) => {
    const pinned = WEB_SOURCE.files.find((f) => path.basename(f.path) === name);
    if (!pinned) throw new Error(`WEB_SOURCE pins no ${name}`);
    return readPinned(WEB_SOURCE, pinned, root);
  };
  const entries = ['ot', 'nt'].flatMap((t) => readZText({ bzs: file(`${t}.bzs`), bzv: file(`${t}.bzv`), bzz: file(`${t}.bzz`) }));
  return versesFromEntries(entries);
}
