import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { tempDir } from '../../test/helpers.js';
import { FilesystemObjects } from '../deltas/store/objects-fs.js';
import { TrainingFileConflictError, TrainingFileStore } from './file-store.js';

const bytesOf = (text: string) => new TextEncoder().encode(text);
const BODY = bytesOf('{"prompt": "a", "completion": "b"}\n');

describe('TrainingFileStore', () => {
  it('puts, gets, reads, lists and removes files', async () => {
    const dir = tempDir();
    const store = await TrainingFileStore.open(new FilesystemObjects(dir));
    const before = Math.floor(Date.now() / 1000);
    const file = await store.put({ filename: 'train.jsonl', tenant: 'acme', rows: 1 }, BODY);
    assert.match(file.id, /^file-[0-9a-f]{24}$/);
    assert.deepEqual({ ...file, id: undefined, created_at: undefined, sha256: undefined }, {
      id: undefined, object: 'file', bytes: BODY.length, created_at: undefined, filename: 'train.jsonl',
      purpose: 'fine-tune', status: 'processed', tenant: 'acme', rows: 1, sha256: undefined,
    });
    assert.ok(file.created_at >= before && file.created_at <= Math.floor(Date.now() / 1000) + 1);
    assert.deepEqual(store.get(file.id), file);
    assert.deepEqual(await store.read(file.id), BODY);

    const other = await store.put({ filename: 'chat.jsonl', tenant: 'globex', rows: 2 }, bytesOf('x'));
    assert.notEqual(other.id, file.id);
    assert.deepEqual(store.list('acme'), [file]);
    assert.deepEqual(store.list('globex'), [other]);
    assert.deepEqual(new Set(store.list().map((f) => f.id)), new Set([file.id, other.id]));
    assert.deepEqual(store.list('nobody'), []);

    assert.equal(await store.remove(file.id), true);
    assert.equal(await store.remove(file.id), false);
    assert.equal(store.get(file.id), undefined);
    await assert.rejects(store.read(file.id), /no training file/);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'files')).sort(), [`${other.id}-${other.sha256.slice(0, 16)}.jsonl`, `${other.id}.json`]);
  });

  it('a file uploaded through one replica is found by another at once, and listed once its index is refreshed', async () => {
    const dir = tempDir();
    const a = await TrainingFileStore.open(new FilesystemObjects(dir), 60_000);
    const b = await TrainingFileStore.open(new FilesystemObjects(dir), 60_000);
    const file = await a.put({ filename: 'train.jsonl', tenant: 'acme', rows: 1 }, BODY);
    assert.equal(b.get(file.id), undefined, 'the index is a cache');
    assert.deepEqual(await b.find(file.id), file);
    assert.deepEqual(await b.read(file.id), BODY);
    const second = await a.put({ filename: 'more.jsonl', tenant: 'acme', rows: 1 }, BODY);
    await b.refresh(true);
    assert.deepEqual(b.list().map((f) => f.id).sort(), [file.id, second.id].sort());
    await a.remove(file.id);
    await b.refresh(true);
    assert.deepEqual(b.list().map((f) => f.id), [second.id]);
    assert.equal(await b.find('not-an-id'), undefined);
  });

  it('an upload retried with the same idempotency key returns the first file; other bytes under that key are refused', async () => {
    const dir = tempDir();
    const a = await TrainingFileStore.open(new FilesystemObjects(dir));
    const b = await TrainingFileStore.open(new FilesystemObjects(dir));
    const [first, retry] = await Promise.all([a.put({ filename: 't.jsonl', tenant: 'acme', rows: 1 }, BODY, { idempotencyKey: 'k1' }), b.put({ filename: 't.jsonl', tenant: 'acme', rows: 1 }, BODY, { idempotencyKey: 'k1' })]);
    assert.deepEqual(retry, first);
    await assert.rejects(b.put({ filename: 't.jsonl', tenant: 'acme', rows: 1 }, bytesOf('other\n'), { idempotencyKey: 'k1' }), TrainingFileConflictError);
    // The same key of another tenant is another file.
    assert.notEqual((await a.put({ filename: 't.jsonl', tenant: 'globex', rows: 1 }, BODY, { idempotencyKey: 'k1' })).id, first.id);
    await a.refresh(true);
    assert.equal(a.list('acme').length, 1);
    assert.deepEqual(await a.read(first.id), BODY);
  });

  it('lists newest first, and ignores temporary files, data without a record and junk', async () => {
    const dir = tempDir();
    const store = await TrainingFileStore.open(new FilesystemObjects(dir));
    const old = await store.put({ filename: 'old.jsonl', tenant: 't', rows: 1 }, BODY);
    const recent = await store.put({ filename: 'new.jsonl', tenant: 't', rows: 1 }, BODY);
    // Backdate one record: created_at has one-second resolution.
    fs.writeFileSync(path.join(dir, 'files', `${old.id}.json`), JSON.stringify({ ...old, created_at: old.created_at - 10 }));
    const orphan = 'file-0123456789abcdef01234567';
    fs.writeFileSync(path.join(dir, 'files', `.${orphan}.json.123.abcd.new`), '{"id":');
    fs.writeFileSync(path.join(dir, 'files', `${orphan}-0000000000000000.jsonl`), 'data without a record');
    fs.writeFileSync(path.join(dir, 'files', 'file-ffffffffffffffffffffffff.json'), JSON.stringify({ ...recent, id: 'file-ffffffffffffffffffffffff' }));
    fs.writeFileSync(path.join(dir, 'files', 'notes.json'), '{}');
    const reopened = await TrainingFileStore.open(new FilesystemObjects(dir));
    assert.deepEqual(reopened.list().map((f) => f.id), [recent.id, old.id]);
    assert.equal(await reopened.find(orphan), undefined);
  });

  it('rejects bad metadata and stores nothing', async () => {
    const dir = tempDir();
    const store = await TrainingFileStore.open(new FilesystemObjects(dir));
    await assert.rejects(store.put({ filename: '', tenant: 'acme', rows: 1 }, BODY), /filename/);
    await assert.rejects(store.put({ filename: 'a.jsonl', tenant: 'acme', rows: -1 }, BODY), /rows/);
    assert.deepEqual(fs.readdirSync(dir), []);
  });
});
