/**
 * OSIS markup (as in SWORD modules) -> the plain text a reader sees: words of the verse only.
 *
 * - Footnotes (`<note>`) and headings (`<title>`) go with their content: they are apparatus.
 *   In the WEB the space after a footnoted word often sits inside the footnote, so a removed
 *   footnote leaves a space when a word follows it ("God<note/>created" -> "God created") and
 *   nothing before punctuation ("earth<note/>," -> "earth,").
 * - Block elements (poetry lines `<l>`, line groups, paragraphs, line breaks, chapter and other
 *   milestones) become a space, since the next line's first word follows without one.
 * - Every other tag is dropped and its text kept (`<w lemma="strong:H7225">beginning</w>`).
 * - The five XML entities and numeric references are decoded; then `normaliseVerse`.
 */
import { normaliseVerse } from './verses.js';

const DROPPED = ['note', 'title'];
const BLOCK = /<\/?(?:l|lg|lb|div|p|item|list|chapter|milestone)\b[^>]*>/g;
const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
/** Stands where a footnote was until the text around it is known. */
const GAP = '\u0000';

/**
 * Plain text of one OSIS fragment. Throws on an unclosed footnote or heading, which would
 * otherwise swallow the rest of the text silently.
 *
 * @example
 * osisToText('<w lemma="strong:H0430">God</w><note placement="foot">Elohim</note><w>created</w>.'); // 'God created.'
 */
export function osisToText(markup: string): string {
  let text = markup.replaceAll(GAP, '');
  for (const name of DROPPED) {
    const gap = name === 'note' ? GAP : '';
    text = text.replace(new RegExp(`<${name}\\b[^>]*/>`, 'g'), gap);
    // Not nested in practice; the non-greedy match takes each element whole.
    text = text.replace(new RegExp(`<${name}\\b[^>]*>[\\s\\S]*?</${name}>`, 'g'), gap);
    if (new RegExp(`<${name}\\b`).test(text)) throw new Error(`OSIS: unclosed <${name}> in ${JSON.stringify(markup.slice(0, 80))}`);
  }
  text = text.replace(BLOCK, ' ').replace(/<[^>]*>/g, '');
  text = text.replace(/\u0000+/g, (gap, at: number, whole: string) => {
    const before = whole[at - 1] ?? ' ';
    const after = whole[at + gap.length] ?? ' ';
    return /\s/u.test(before) || !/[\p{L}\p{N}“‘(]/u.test(after) ? '' : ' ';
  });
  text = text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-z]+);/g, (whole, name: string) => {
    if (name.startsWith('#x')) return String.fromCodePoint(parseInt(name.slice(2), 16));
    if (name.startsWith('#')) return String.fromCodePoint(parseInt(name.slice(1), 10));
    return ENTITIES[name] ?? whole;
  });
  return normaliseVerse(text);
}
