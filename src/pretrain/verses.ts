/**
 * Verses and chapters: the unit both texts are parsed into, and the one normalisation and layout
 * every corpus file uses, so a byte count means the same thing everywhere.
 */
import type { Book } from './books.js';

export interface Verse {
  book: Book;
  chapter: number;
  verse: number;
  /** Normalised text (see `normaliseVerse`): no marker, no newline, single spaces. */
  text: string;
}

/** The verses of one chapter, in order; chapters are the unit of the held-out split. */
export interface Chapter {
  book: Book;
  chapter: number;
  verses: Verse[];
}

/**
 * One verse's text as the corpus stores it: Unicode NFC, every run of whitespace (line breaks
 * and tabs included) turned into one space, and no leading or trailing space. The KJV source is
 * plain ASCII, so in practice this only collapses the two double spaces and one trailing space it has.
 *
 * @example
 * normaliseVerse(' And God\r\nsaid,  Let there be light. '); // 'And God said, Let there be light.'
 */
export function normaliseVerse(text: string): string {
  return text.normalize('NFC').replace(/\s+/gu, ' ').trim();
}

/**
 * Groups verses (in canonical order) into chapters.
 *
 * @example
 * chaptersOf(verses)[0]; // { book: Genesis, chapter: 1, verses: [31 verses] }
 */
export function chaptersOf(verses: readonly Verse[]): Chapter[] {
  const chapters: Chapter[] = [];
  for (const v of verses) {
    const last = chapters.at(-1);
    if (last && last.book === v.book && last.chapter === v.chapter) last.verses.push(v);
    else chapters.push({ book: v.book, chapter: v.chapter, verses: [v] });
  }
  return chapters;
}

/**
 * The corpus layout of a run of chapters: each verse on its own line (ending in '\n'), and a
 * blank line between chapters. No verse numbers, book names or headings: those are the source's
 * apparatus, not its prose, and would only teach the model to count.
 *
 * @example
 * layoutChapters([gen1, gen2]); // 'In the beginning God created ...\n...\n\nThus the heavens ...\n'
 */
export function layoutChapters(chapters: readonly Chapter[]): string {
  return chapters.map((c) => c.verses.map((v) => `${v.text}\n`).join('')).join('\n');
}

/**
 * "Genesis 1:1" style reference.
 *
 * @example
 * reference(verse); // 'Song of Solomon 2:1'
 */
export function reference(v: { book: Book; chapter: number; verse?: number }): string {
  return v.verse === undefined ? `${v.book.name} ${v.chapter}` : `${v.book.name} ${v.chapter}:${v.verse}`;
}
