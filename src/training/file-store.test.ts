import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { tempDir } from '../../test/helpers.js';
import { TrainingFileStore } from './file-store.js';

const bytesOf = (text: string) => new TextEncoder().encode(text);
const BODY = bytesOf('{"prompt": "a", "completion": "b"}\n');

describe('TrainingFileStore', () => {
  it('puts, gets, reads, lists and removes files', async () => {
    const store = await TrainingFileStore.open(tempDir());
    const before = Math.floor(Date.now() / 1000);
    const file = await store.put({ filename: 'train.jsonl', tenant: 'acme', rows: 1 }, BODY);
    assert.match(file.id, /^file-[0-9a-f]{24}$/);
    assert.deepEqual({ ...file, id: undefined, created_at: undefined }, {
      id: undefined, object: 'file', bytes: BODY.length, created_at: undefined, filename: 'train.jsonl',
      purpose: 'fine-tune', status: 'processed', tenant: 'acme', rows: 1,
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
    assert.deepEqual(fs.readdirSync(store.dir).sort(), [`${other.id}.json`, `${other.id}.jsonl`]);
  });

  it('lists newest first', async () => {
    const dir = tempDir();
    const store = await TrainingFileStore.open(dir);
    const old = await store.put({ filename: 'old.jsonl', tenant: 't', rows: 1 }, BODY);
    const recent = await store.put({ filename: 'new.jsonl', tenant: 't', rows: 1 }, BODY);
    // Backdate one record on disk: created_at has one-second resolution.
    fs.writeFileSync(path.join(dir, `${old.id}.json`), JSON.stringify({ ...old, created_at: old.created_at - 10 }));
    const reopened = await TrainingFileStore.open(dir);
    assert.deepEqual(reopened.list().map((f) => f.id), [recent.id, old.id]);
  });

  it('persists across reopen and ignores temp files, orphan data and junk', async () => {
    const dir = tempDir();
    const store = await TrainingFileStore.open(dir);
    const file = await store.put({ filename: 'train.jsonl', tenant: 'acme', rows: 1 }, BODY);
    const orphan = 'file-0123456789abcdef01234567';
    fs.writeFileSync(path.join(dir, `.${orphan}.jsonl.123.abcd.tmp`), 'partial');
    fs.writeFileSync(path.join(dir, `.${orphan}.json.123.abcd.tmp`), '{"id":');
    fs.writeFileSync(path.join(dir, `${orphan}.jsonl`), 'data without a record');
    fs.writeFileSync(path.join(dir, 'file-ffffffffffffffffffffffff.json'), JSON.stringify({ ...file, id: 'file-ffffffffffffffffffffffff' }));
    fs.writeFileSync(path.join(dir, 'notes.json'), '{}');

    const reopened = await TrainingFileStore.open(dir);
    assert.deepEqual(reopened.list(), [file]);
    assert.deepEqual(reopened.get(file.id), file);
    assert.deepEqual(await reopened.read(file.id), BODY);
    assert.equal(reopened.get(orphan), undefined);
  });

  it('creates its directory and rejects bad metadata', async () => {
    const dir = path.join(tempDir(), 'nested', 'files');
    const store = await TrainingFileStore.open(dir);
    assert.ok(fs.statSync(dir).isDirectory());
    await assert.rejects(store.put({ filename: '', tenant: 'acme', rows: 1 }, BODY), /filename/);
    await assert.rejects(store.put({ filename: 'a.jsonl', tenant: 'acme', rows: -1 }, BODY), /rows/);
    assert.deepEqual(fs.readdirSync(dir), []);
  });
});
