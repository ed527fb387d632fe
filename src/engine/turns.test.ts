import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Turns } from './turns.js';

const deferred = () => {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
};

test('at most `limit` run at once; the rest start in arrival order as turns free up', async () => {
  const turns = new Turns(2);
  const gates = Array.from({ length: 5 }, deferred);
  const started: number[] = [];
  const done = gates.map((gate, i) => turns.run(async () => {
    started.push(i);
    await gate.promise;
    return i;
  }));
  await Promise.resolve();
  assert.deepEqual(started, [0, 1]);
  assert.deepEqual(turns.stats, { running: 2, waiting: 3 });
  gates[1]!.resolve();
  await done[1];
  await Promise.resolve();
  assert.deepEqual(started, [0, 1, 2]);
  // A caller arriving now queues behind 3 and 4, though a turn was just handed over.
  const late = turns.run(async () => { started.push(5); return 5; });
  gates[0]!.resolve();
  gates[2]!.resolve();
  await Promise.all([done[0], done[2]]);
  await Promise.resolve();
  assert.deepEqual(started, [0, 1, 2, 3, 4]);
  gates[3]!.resolve();
  gates[4]!.resolve();
  assert.deepEqual(await Promise.all([...done, late]), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(started, [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(turns.stats, { running: 0, waiting: 0 });
});

test('a failing holder still hands its turn on', async () => {
  const turns = new Turns(1);
  await assert.rejects(turns.run(async () => { throw new Error('boom'); }), /boom/);
  assert.equal(await turns.run(async () => 7), 7);
  assert.deepEqual(turns.stats, { running: 0, waiting: 0 });
});

test('the limit is a positive integer', () => {
  assert.throws(() => new Turns(0), /positive integer/);
  assert.throws(() => new Turns(1.5), /positive integer/);
});
