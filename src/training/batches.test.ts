import assert from 'node:assert/strict';
import { test } from 'node:test';
import { microBatches, sequenceLength, stepExamples, stepsPerEpoch } from './batches.js';

test('steps walk each epoch once through a seeded shuffle, and repeat exactly', () => {
  assert.equal(stepsPerEpoch(10, 4), 3);
  const epoch0 = [0, 1, 2].flatMap((s) => stepExamples(10, 4, 7, s));
  assert.deepEqual([...epoch0].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(stepExamples(10, 4, 7, 2).length, 2);
  const epoch1 = [3, 4, 5].flatMap((s) => stepExamples(10, 4, 7, s));
  assert.notDeepEqual(epoch1, epoch0);
  assert.deepEqual(stepExamples(10, 4, 7, 4), stepExamples(10, 4, 7, 4));
});

test('micro-batches have the graph shape; padding rows carry no targets', () => {
  const examples = [
    { inputIds: [5, 6, 7], labels: [-100, 6, 7] },
    { inputIds: [8, 9], labels: [8, 9] },
    { inputIds: [1, 2, 3, 4], labels: [1, 2, 3, 4] },
  ];
  const { batches, tokens } = microBatches(examples, 2, 4, 0);
  assert.equal(batches.length, 2);
  assert.equal(tokens, 9);
  assert.deepEqual([...batches[0]!.targetIds], [6, 7, 0, 0, 9, 0, 0, 0]);
  assert.deepEqual([...batches[1]!.targetMask], [1, 1, 1, 0, 0, 0, 0, 0]);
  assert.deepEqual([...batches[1]!.inputIds].map(Number), [1, 2, 3, 4, 0, 0, 0, 0]);
  assert.equal(sequenceLength(examples, 512), 8);
  assert.equal(sequenceLength([{ inputIds: new Array(20).fill(1), labels: [] }], 16), 16);
});
