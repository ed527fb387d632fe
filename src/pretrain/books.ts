/**
 * The 66 books of the Protestant canon in order, with the abbreviation each source uses: the
 * BRS data file's verse markers ("Ge1:1") and OSIS ids in the SWORD modules ("Gen.1"). Sections
 * group books by genre for the classification task (its verbalizer words are the section names).
 */

/** Genre sections, in canonical order; each name is the word the classifier must answer. */
export const SECTIONS = ['law', 'history', 'wisdom', 'prophets', 'gospels', 'letters'] as const;
export type Section = (typeof SECTIONS)[number];

export interface Book {
  /** Position in the canon, 0 = Genesis. */
  index: number;
  name: string;
  /** Abbreviation in the BRS text's verse markers. */
  brs: string;
  /** OSIS book id, as in SWORD modules. */
  osis: string;
  testament: 'old' | 'new';
  section: Section;
}

// [name, BRS abbreviation, OSIS id, section]; the first 39 are the Old Testament.
const TABLE: [string, string, string, Section][] = [
  ['Genesis', 'Ge', 'Gen', 'law'], ['Exodus', 'Exo', 'Exod', 'law'], ['Leviticus', 'Lev', 'Lev', 'law'],
  ['Numbers', 'Num', 'Num', 'law'], ['Deuteronomy', 'Deu', 'Deut', 'law'],
  ['Joshua', 'Josh', 'Josh', 'history'], ['Judges', 'Jdgs', 'Judg', 'history'], ['Ruth', 'Ruth', 'Ruth', 'history'],
  ['1 Samuel', '1Sm', '1Sam', 'history'], ['2 Samuel', '2Sm', '2Sam', 'history'], ['1 Kings', '1Ki', '1Kgs', 'history'],
  ['2 Kings', '2Ki', '2Kgs', 'history'], ['1 Chronicles', '1Chr', '1Chr', 'history'], ['2 Chronicles', '2Chr', '2Chr', 'history'],
  ['Ezra', 'Ezra', 'Ezra', 'history'], ['Nehemiah', 'Neh', 'Neh', 'history'], ['Esther', 'Est', 'Esth', 'history'],
  ['Job', 'Job', 'Job', 'wisdom'], ['Psalms', 'Psa', 'Ps', 'wisdom'], ['Proverbs', 'Prv', 'Prov', 'wisdom'],
  ['Ecclesiastes', 'Eccl', 'Eccl', 'wisdom'], ['Song of Solomon', 'SSol', 'Song', 'wisdom'],
  ['Isaiah', 'Isa', 'Isa', 'prophets'], ['Jeremiah', 'Jer', 'Jer', 'prophets'], ['Lamentations', 'Lam', 'Lam', 'prophets'],
  ['Ezekiel', 'Eze', 'Ezek', 'prophets'], ['Daniel', 'Dan', 'Dan', 'prophets'], ['Hosea', 'Hos', 'Hos', 'prophets'],
  ['Joel', 'Joel', 'Joel', 'prophets'], ['Amos', 'Amos', 'Amos', 'prophets'], ['Obadiah', 'Obad', 'Obad', 'prophets'],
  ['Jonah', 'Jonah', 'Jonah', 'prophets'], ['Micah', 'Mic', 'Mic', 'prophets'], ['Nahum', 'Nahum', 'Nah', 'prophets'],
  ['Habakkuk', 'Hab', 'Hab', 'prophets'], ['Zephaniah', 'Zep', 'Zeph', 'prophets'], ['Haggai', 'Hag', 'Hag', 'prophets'],
  ['Zechariah', 'Zec', 'Zech', 'prophets'], ['Malachi', 'Mal', 'Mal', 'prophets'],
  ['Matthew', 'Mat', 'Matt', 'gospels'], ['Mark', 'Mark', 'Mark', 'gospels'], ['Luke', 'Luke', 'Luke', 'gospels'],
  ['John', 'John', 'John', 'gospels'], ['Acts', 'Acts', 'Acts', 'gospels'],
  ['Romans', 'Rom', 'Rom', 'letters'], ['1 Corinthians', '1Cor', '1Cor', 'letters'], ['2 Corinthians', '2Cor', '2Cor', 'letters'],
  ['Galatians', 'Gal', 'Gal', 'letters'], ['Ephesians', 'Eph', 'Eph', 'letters'], ['Philippians', 'Phi', 'Phil', 'letters'],
  ['Colossians', 'Col', 'Col', 'letters'], ['1 Thessalonians', '1Th', '1Thess', 'letters'], ['2 Thessalonians', '2Th', '2Thess', 'letters'],
  ['1 Timothy', '1Tim', '1Tim', 'letters'], ['2 Timothy', '2Tim', '2Tim', 'letters'], ['Titus', 'Titus', 'Titus', 'letters'],
  ['Philemon', 'Phmn', 'Phlm', 'letters'], ['Hebrews', 'Heb', 'Heb', 'letters'], ['James', 'Jas', 'Jas', 'letters'],
  ['1 Peter', '1Pet', '1Pet', 'letters'], ['2 Peter', '2Pet', '2Pet', 'letters'], ['1 John', '1Jn', '1John', 'letters'],
  ['2 John', '2Jn', '2John', 'letters'], ['3 John', '3Jn', '3John', 'letters'], ['Jude', 'Jude', 'Jude', 'letters'],
  ['Revelation', 'Rev', 'Rev', 'letters'],
];

const OLD_TESTAMENT_BOOKS = 39;

export const BOOKS: readonly Book[] = TABLE.map(([name, brs, osis, section], index) => ({
  index,
  name,
  brs,
  osis,
  testament: index < OLD_TESTAMENT_BOOKS ? 'old' : 'new',
  section,
}));

const byBrs = new Map(BOOKS.map((b) => [b.brs, b]));
const byOsis = new Map(BOOKS.map((b) => [b.osis, b]));

/**
 * The book a BRS verse marker names, or undefined.
 *
 * @example
 * bookByBrs('SSol')?.name; // 'Song of Solomon'
 */
export function bookByBrs(abbreviation: string): Book | undefined {
  return byBrs.get(abbreviation);
}

/**
 * The book an OSIS id names, or undefined (e.g. for deuterocanonical books such as "Tob").
 *
 * @example
 * bookByOsis('Matt')?.testament; // 'new'
 */
export function bookByOsis(id: string): Book | undefined {
  return byOsis.get(id);
}
