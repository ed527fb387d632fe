/**
 * Byte-level BPE training: start from the 256 byte symbols, and repeatedly merge the adjacent
 * pair of symbols that occurs most often in the training pieces, until the vocabulary is full.
 *
 * Pairs are counted over distinct pieces weighted by their frequency, and after each merge only
 * the pieces that contain the merged pair are re-counted, so training on the whole KJV takes
 * seconds. Ties (equal counts) go to the pair whose token strings sort first (left token, then
 * right token, by UTF-16 code unit), which makes the merge list a function of the text alone.
 */
import { byteLevelAlphabet } from '../model/embedded.js';
import { MaxHeap } from './max-heap.js';

export interface BpeTrainOptions {
  /** Total vocabulary, byte symbols and special tokens included (≤ 65536). */
  vocabSize: number;
  /** Added tokens, with ids right after the 256 byte symbols, in this order. */
  specialTokens: readonly string[];
  /** A pair seen fewer times than this is never merged (default 2). */
  minFrequency?: number;
}

export interface BpeModel {
  /** Token strings by id: 256 byte symbols (in GPT-2's alphabet order), special tokens, merged tokens. */
  vocab: string[];
  /** Merges in rank order, each the two token strings joined. */
  merges: [string, string][];
  /** Ids of `specialTokens`. */
  specialIds: number[];
  /**
   * Tokens the training pieces became after the last merge (each piece's length times its count):
   * what encoding the training text with the written tokenizer must give, which tests check.
   */
  trainingTokens: number;
}

const PAIR_BASE = 65536;

/**
 * Learns merges from piece counts (see `countPieces`). Stops when the vocabulary reaches
 * `vocabSize` or no pair occurs `minFrequency` times.
 *
 * @example
 * const model = trainBpe(countPieces([text]), { vocabSize: 1024, specialTokens: ['<|endoftext|>'] });
 * model.merges[0]; // ['Ġ', 't'] for English text
 */
export function trainBpe(pieces: ReadonlyMap<string, number>, options: BpeTrainOptions): BpeModel {
  const { vocab, specialIds, ids } = initialVocab(options);
  const minFrequency = options.minFrequency ?? 2;
  const words: number[][] = [];
  const freqs: number[] = [];
  for (const [piece, count] of [...pieces].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    words.push(Array.from(piece, (symbol) => idOf(ids, symbol, piece)));
    freqs.push(count);
  }
  const counts = new Map<number, number>();
  const where = new Map<number, Set<number>>();
  words.forEach((word, w) => addPairs(word, freqs[w]!, w, counts, where));

  const better = (a: [number, number], b: [number, number]) =>
    a[1] !== b[1] ? a[1] > b[1] : compareTokens(vocab, a[0], b[0]) < 0;
  const heap = new MaxHeap<[number, number]>(better);
  for (const [key, count] of counts) heap.push([key, count]);

  const merges: [string, string][] = [];
  while (vocab.length < options.vocabSize) {
    const top = heap.pop();
    if (!top) break;
    const [key, stale] = top;
    const count = counts.get(key) ?? 0;
    if (count !== stale) {
      // Counts of existing pairs only fall, so an outdated entry goes back with its true count.
      if (count > 0) heap.push([key, count]);
      continue;
    }
    if (count < minFrequency) break;
    const left = Math.floor(key / PAIR_BASE);
    const right = key % PAIR_BASE;
    const token = vocab[left]! + vocab[right]!;
    let id = ids.get(token);
    if (id === undefined) {
      id = vocab.length;
      vocab.push(token);
      ids.set(token, id);
    }
    merges.push([vocab[left]!, vocab[right]!]);
    const touched = applyMerge(key, id, words, freqs, counts, where);
    for (const k of touched) {
      const c = counts.get(k) ?? 0;
      if (c > 0) heap.push([k, c]);
    }
  }
  const trainingTokens = words.reduce((sum, word, w) => sum + word.length * freqs[w]!, 0);
  return { vocab, merges, specialIds, trainingTokens };
}

function initialVocab(options: BpeTrainOptions) {
  if (options.vocabSize > PAIR_BASE) throw new Error(`vocabSize ${options.vocabSize} exceeds ${PAIR_BASE}`);
  // Byte symbols get the ids the embedded model's tokenizer gives them (printable bytes first).
  const vocab = byteLevelAlphabet().map((entry) => entry.symbol);
  const specialIds: number[] = [];
  for (const token of options.specialTokens) {
    if (vocab.includes(token)) throw new Error(`special token ${JSON.stringify(token)} is listed twice or is a byte symbol`);
    specialIds.push(vocab.length);
    vocab.push(token);
  }
  if (vocab.length > options.vocabSize) {
    throw new Error(`vocabSize ${options.vocabSize} is smaller than the ${vocab.length} byte symbols and special tokens`);
  }
  const ids = new Map(vocab.map((token, id) => [token, id]));
  return { vocab, specialIds, ids };
}

function idOf(ids: Map<string, number>, symbol: string, piece: string): number {
  const id = ids.get(symbol);
  if (id === undefined) throw new Error(`piece ${JSON.stringify(piece)} is not in byte-level spelling (${JSON.stringify(symbol)})`);
  return id;
}

function compareTokens(vocab: readonly string[], a: number, b: number): number {
  const [la, ra] = [vocab[Math.floor(a / PAIR_BASE)]!, vocab[a % PAIR_BASE]!];
  const [lb, rb] = [vocab[Math.floor(b / PAIR_BASE)]!, vocab[b % PAIR_BASE]!];
  if (la !== lb) return la < lb ? -1 : 1;
  return ra < rb ? -1 : ra > rb ? 1 : 0;
}

/** Adds (sign = 1) or removes (-1) the pairs of one word, weighted by its frequency. */
function addPairs(word: readonly number[], freq: number, w: number, counts: Map<number, number>, where: Map<number, Set<number>>, sign = 1, touched?: Set<number>): void {
  for (let i = 0; i + 1 < word.length; i++) {
    const key = word[i]! * PAIR_BASE + word[i + 1]!;
    counts.set(key, (counts.get(key) ?? 0) + sign * freq);
    touched?.add(key);
    if (sign > 0) {
      let set = where.get(key);
      if (!set) where.set(key, (set = new Set()));
      set.add(w);
    }
  }
}

/**
 * Replaces every occurrence of the pair `key` by `id` in the words that contain it, left to right
 * (so "a a a" with pair (a, a) becomes "aa a", as the runtime's merge order does), and re-counts
 * those words' pairs. Returns the pairs whose counts changed.
 */
function applyMerge(key: number, id: number, words: number[][], freqs: readonly number[], counts: Map<number, number>, where: Map<number, Set<number>>): Set<number> {
  const left = Math.floor(key / PAIR_BASE);
  const right = key % PAIR_BASE;
  const touched = new Set<number>();
  for (const w of where.get(key) ?? []) {
    const word = words[w]!;
    const merged: number[] = [];
    for (let i = 0; i < word.length; i++) {
      if (i + 1 < word.length && word[i] === left && word[i + 1] === right) {
        merged.push(id);
        i++;
      } else merged.push(word[i]!);
    }
    if (merged.length === word.length) continue;
    addPairs(word, freqs[w]!, w, counts, where, -1, touched);
    addPairs(merged, freqs[w]!, w, counts, where, 1, touched);
    words[w] = merged;
  }
  where.delete(key);
  counts.delete(key);
  return touched;
}
