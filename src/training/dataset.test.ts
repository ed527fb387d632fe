import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { FIXTURE } from '../../test/helpers.js';
import { ChatTemplate } from '../model/chat-template.js';
import { TextTokenizer } from '../model/tokenizer.js';
import { DatasetError, epochOrder, packBatch, parseTrainingJsonl, type DatasetOptions, type TrainingExample } from './dataset.js';

const BASE = path.join(FIXTURE, 'base');
const tokenizer = TextTokenizer.fromDirectory(BASE);
const chatTemplate = ChatTemplate.fromDirectory(BASE)!;
const OPTIONS: DatasetOptions = { tokenizer, chatTemplate, vocabSize: 512, maxLength: 256 };
const EOS = tokenizer.eosTokenIds[0]!;
const jsonl = (...rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join('\n');
const masked = (n: number) => Array<number>(n).fill(-100);

/** Runs the parser and returns the DatasetError it must throw. */
function parseError(text: string, options = OPTIONS): DatasetError {
  try {
    parseTrainingJsonl(text, options);
  } catch (err) {
    assert.ok(err instanceof DatasetError, `expected a DatasetError, got ${err}`);
    return err;
  }
  assert.fail('expected parseTrainingJsonl to throw');
}

describe('parseTrainingJsonl: prompt/completion', () => {
  it('encodes the prompt with special tokens, the completion without, then eos; loss on completion + eos', () => {
    const [row] = parseTrainingJsonl(jsonl({ prompt: 'Hello world', completion: ' there' }), OPTIONS);
    const prompt = tokenizer.encode('Hello world', { addSpecialTokens: true });
    const completion = tokenizer.encode(' there', { addSpecialTokens: false });
    assert.deepEqual(row!.inputIds, [...prompt, ...completion, EOS]);
    assert.deepEqual(row!.labels, [...masked(prompt.length), ...completion, EOS]);
  });

  it('skips blank lines and keeps file order', () => {
    const rows = parseTrainingJsonl(`\n${jsonl({ prompt: 'a', completion: 'b' })}\n\n${jsonl({ prompt: 'c', completion: 'd' })}\n`, OPTIONS);
    assert.equal(rows.length, 2);
    assert.deepEqual(rows[1]!.inputIds, [...tokenizer.encode('c'), ...tokenizer.encode('d', { addSpecialTokens: false }), EOS]);
  });
});

describe('parseTrainingJsonl: chat messages', () => {
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'hi' },
    { role: 'assistant', content: 'hello' },
    { role: 'user', content: 'bye' },
    { role: 'assistant', content: 'ok bye' },
  ];
  const render = (n: number, addGenerationPrompt = false) =>
    tokenizer.encode(chatTemplate.render(messages.slice(0, n), { addGenerationPrompt }), { addSpecialTokens: false });

  it('labels only the assistant turns, from after the generation prompt through <|im_end|>\\n', () => {
    const [row] = parseTrainingJsonl(jsonl({ messages }), OPTIONS);
    const full = render(5);
    assert.deepEqual(row!.inputIds, full);
    const expected = masked(full.length);
    for (const i of [2, 4]) {
      for (let t = render(i, true).length; t < render(i + 1).length; t++) expected[t] = full[t]!;
    }
    assert.deepEqual(row!.labels, expected);
    // The learned spans decode to the assistant contents and the turn's closing tokens.
    const spans = decodeSpans(row!);
    assert.deepEqual(spans, ['hello<|im_end|>\n', 'ok bye<|im_end|>\n']);
  });

  it('gives no loss to an assistant message with weight 0', () => {
    const weighted = messages.map((m, i) => (i === 2 ? { ...m, weight: 0 } : m));
    const [row] = parseTrainingJsonl(jsonl({ messages: weighted }), OPTIONS);
    assert.deepEqual(decodeSpans(row!), ['ok bye<|im_end|>\n']);
  });

  it('raises a DatasetError when the template tokens are not prefix-stable', () => {
    // Renders the generation prompt as "<|im_start|>assistant" + "\nX", which the full render never contains.
    const odd = new ChatTemplate(chatTemplate.source.replace('<|im_start|>assistant\n', '<|im_start|>assistant\nX'));
    const err = parseError(`${jsonl({ prompt: 'a', completion: 'b' })}\n${jsonl({ messages })}`, { ...OPTIONS, chatTemplate: odd });
    assert.equal(err.line, 2);
    assert.equal(err.field, 'messages');
    assert.match(err.message, /^line 2: .*prefix-stable/);
  });
});

/** The decoded text of each maximal run of labeled positions. */
function decodeSpans(row: TrainingExample): string[] {
  const spans: string[] = [];
  let current: number[] = [];
  row.labels.forEach((label, t) => {
    if (label !== -100) current.push(row.inputIds[t]!);
    else if (current.length) { spans.push(tokenizer.decode(current)); current = []; }
  });
  if (current.length) spans.push(tokenizer.decode(current));
  return spans;
}

describe('parseTrainingJsonl: pre-tokenized', () => {
  it('uses input_ids and labels as given', () => {
    const [row] = parseTrainingJsonl(jsonl({ input_ids: [5, 6, 7, 8], labels: [-100, -100, 7, 8] }), OPTIONS);
    assert.deepEqual(row, { inputIds: [5, 6, 7, 8], labels: [-100, -100, 7, 8] });
  });

  it('defaults labels to input_ids', () => {
    const [row] = parseTrainingJsonl(jsonl({ input_ids: [5, 6, 511] }), OPTIONS);
    assert.deepEqual(row, { inputIds: [5, 6, 511], labels: [5, 6, 511] });
  });
});

describe('parseTrainingJsonl: truncation', () => {
  it('keeps the first maxLength tokens of ids and labels', () => {
    const [row] = parseTrainingJsonl(jsonl({ input_ids: [1, 2, 3, 4, 5, 6], labels: [-100, 2, 3, 4, 5, 6] }), { ...OPTIONS, maxLength: 4 });
    assert.deepEqual(row, { inputIds: [1, 2, 3, 4], labels: [-100, 2, 3, 4] });
  });

  it('rejects a row whose only targets were truncated away', () => {
    const err = parseError(jsonl({ input_ids: [1, 2, 3, 4], labels: [-100, -100, -100, 4] }), { ...OPTIONS, maxLength: 3 });
    assert.equal(err.line, 1);
    assert.match(err.message, /nothing to learn/);
  });
});

describe('parseTrainingJsonl: errors name the line and field', () => {
  const ok = jsonl({ prompt: 'a', completion: 'b' });
  const cases: [string, string, string | undefined, RegExp][] = [
    ['malformed JSON', '{"prompt": "a",', undefined, /not valid JSON/],
    ['a non-object', '[1, 2]', undefined, /expected a JSON object/],
    ['an unknown shape', jsonl({ text: 'hello' }), undefined, /expected 'messages'/],
    ['mixed shapes', jsonl({ prompt: 'a', completion: 'b', input_ids: [1, 2] }), undefined, /mixes example shapes/],
    ['a non-string prompt', jsonl({ prompt: 3, completion: 'b' }), 'prompt', /'prompt' must be a string/],
    ['a missing completion', jsonl({ prompt: 'a' }), 'completion', /'completion' must be a non-empty string/],
    ['an empty completion', jsonl({ prompt: 'a', completion: '' }), 'completion', /^line 3: 'completion' must be a non-empty string$/],
    ['empty messages', jsonl({ messages: [] }), 'messages', /non-empty array/],
    ['a non-object message', jsonl({ messages: ['hi'] }), 'messages[0]', /must be an object/],
    ['an unknown role', jsonl({ messages: [{ role: 'robot', content: 'x' }] }), 'messages[0].role', /must be one of/],
    ['a non-string content', jsonl({ messages: [{ role: 'user', content: 'x' }, { role: 'assistant', content: 5 }] }), 'messages[1].content', /must be a string/],
    ['a bad weight', jsonl({ messages: [{ role: 'user', content: 'x', weight: 0 }, { role: 'assistant', content: 'y' }] }), 'messages[0].weight', /0 or 1/],
    ['no assistant message', jsonl({ messages: [{ role: 'user', content: 'x' }] }), 'messages', /at least one assistant/],
    ['empty input_ids', jsonl({ input_ids: [] }), 'input_ids', /non-empty array/],
    ['a non-integer id', jsonl({ input_ids: [1, 2.5] }), 'input_ids', /'input_ids'\[1\] = 2.5/],
    ['an id past the vocabulary', jsonl({ input_ids: [1, 512] }), 'input_ids', /\[0, 512\)/],
    ['a negative id', jsonl({ input_ids: [-1, 2] }), 'input_ids', /'input_ids'\[0\]/],
    ['labels of the wrong length', jsonl({ input_ids: [1, 2], labels: [1] }), 'labels', /as long as 'input_ids'/],
    ['an out-of-range label', jsonl({ input_ids: [1, 2], labels: [-100, 600] }), 'labels', /'labels'\[1\] = 600/],
    ['a label of -1', jsonl({ input_ids: [1, 2], labels: [-100, -1] }), 'labels', /neither -100/],
    ['no target after position 0', jsonl({ input_ids: [1, 2], labels: [1, -100] }), undefined, /nothing to learn/],
  ];
  for (const [what, line, field, message] of cases) {
    it(`rejects ${what} on line 3`, () => {
      const err = parseError(`${ok}\n${ok}\n${line}\n${ok}`);
      assert.equal(err.line, 3);
      assert.equal(err.field, field);
      assert.match(err.message, /^line 3: /);
      assert.match(err.message, message);
    });
  }

  it('rejects a file with no examples, without a line', () => {
    for (const text of ['', '\n  \n\n']) {
      const err = parseError(text);
      assert.equal(err.line, undefined);
      assert.match(err.message, /no examples/);
    }
  });

  it('counts lines across CRLF endings and a leading BOM', () => {
    const err = parseError(`\uFEFF${ok}\r\n\r\n{bad\r\n`);
    assert.equal(err.line, 3);
  });
});

describe('epochOrder', () => {
  it('is a deterministic permutation that depends on seed and epoch', () => {
    const a = epochOrder(50, 7, 0);
    assert.deepEqual(a, epochOrder(50, 7, 0));
    assert.deepEqual([...a].sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i));
    assert.notDeepEqual(a, epochOrder(50, 7, 1));
    assert.notDeepEqual(a, epochOrder(50, 8, 0));
    assert.notDeepEqual(a, Array.from({ length: 50 }, (_, i) => i));
  });

  it('handles empty and single-element orders', () => {
    assert.deepEqual(epochOrder(0, 1, 0), []);
    assert.deepEqual(epochOrder(1, 1, 0), [0]);
    assert.throws(() => epochOrder(-1, 1, 0), RangeError);
  });
});

describe('packBatch', () => {
  it('shifts the train_reference rows into targets (11 + 9 = 20 real targets)', () => {
    const ref = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'train_reference.json'), 'utf8')) as { input_ids: number[][]; labels: number[][] };
    const examples = ref.input_ids.map((inputIds, r) => ({ inputIds, labels: ref.labels[r]! }));
    const batch = packBatch(examples, 16, 0);
    assert.equal(batch.rows, 2);
    assert.equal(batch.seqLen, 16);
    assert.equal(batch.targetCount, 20);
    assert.equal(batch.tokens, 32);
    assert.deepEqual([...batch.inputIds].map(Number), ref.input_ids.flat());
    for (let r = 0; r < 2; r++) {
      for (let t = 0; t < 16; t++) {
        const label = t + 1 < 16 ? ref.labels[r]![t + 1]! : -100;
        assert.equal(batch.targetMask[r * 16 + t], label === -100 ? 0 : 1, `mask[${r}, ${t}]`);
        assert.equal(Number(batch.targetIds[r * 16 + t]), label === -100 ? 0 : label, `target[${r}, ${t}]`);
      }
    }
  });

  it('right-pads shorter rows and never targets padding', () => {
    const batch = packBatch([{ inputIds: [5, 6, 7], labels: [-100, 6, 7] }, { inputIds: [9, 10], labels: [9, 10] }], 4, 3);
    assert.deepEqual([...batch.inputIds].map(Number), [5, 6, 7, 3, 9, 10, 3, 3]);
    assert.deepEqual([...batch.targetIds].map(Number), [6, 7, 0, 0, 10, 0, 0, 0]);
    assert.deepEqual([...batch.targetMask], [1, 1, 0, 0, 1, 0, 0, 0]);
    assert.equal(batch.targetCount, 3);
    assert.equal(batch.tokens, 5);
  });

  it('throws when a row is longer than seqLen', () => {
    assert.throws(() => packBatch([{ inputIds: [1, 2, 3], labels: [1, 2, 3] }], 2, 0), /3 tokens, more than seqLen 2/);
  });
});
