import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import { postgresMissing, startPostgres, type TestPostgres } from '../../../test/postgres.js';
import { PostgresClaims } from './claims-postgres.js';
import { describeDeltaStoreContract, makeFiles } from './contract.js';
import { probeConditionalWrites } from './objects-s3.js';
import { openDeltaStore } from './index.js';
import { S3DeltaStore, parseS3Url, s3OptionsFromEnv, type S3DeltaStoreOptions } from './s3.js';
import type { DeltaVersion } from './types.js';

// The SDK warns once per process that its 2027 releases will need Node 22; keep test output clean.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const BUCKET = 'deltaserve-test';
const ROOT_BUCKET = 'deltaserve-root';
const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-s3rver-'));
const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory });
let options: S3DeltaStoreOptions;
const clients: S3Client[] = [];
const noPostgres = postgresMissing();
let postgres: TestPostgres | undefined;
/** What the stores warned (s3rver ignores conditional writes, and each local-only store says so once). */
const warnings: string[] = [];

before(async () => {
  const { port } = await server.run();
  options = {
    endpoint: `http://127.0.0.1:${port}`,
    forcePathStyle: true,
    region: 'us-east-1',
    // s3rver checks signatures against its fixed key pair.
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    warn: (message) => warnings.push(message),
  };
  if (!noPostgres) postgres = await startPostgres();
  const admin = track(new S3DeltaStore(`s3://${BUCKET}`, options).client);
  await admin.send(new CreateBucketCommand({ Bucket: BUCKET }));
  await admin.send(new CreateBucketCommand({ Bucket: ROOT_BUCKET }));
});

after(async () => {
  for (const client of clients) client.destroy();
  await postgres?.stop();
  await server.close();
  fs.rmSync(directory, { recursive: true, force: true });
});

function track(client: S3Client): S3Client {
  clients.push(client);
  return client;
}

let counter = 0;
function freshStore(extra: S3DeltaStoreOptions = {}, prefix = `run-${process.pid}-${++counter}`): S3DeltaStore {
  const store = new S3DeltaStore(`s3://${BUCKET}/${prefix}`, { ...options, ...extra });
  track(store.client);
  return store;
}

function key(store: S3DeltaStore, v: Pick<DeltaVersion, 'owner' | 'name' | 'version'>, file: string): string {
  return `${store.prefix ? `${store.prefix}/` : ''}${v.owner}/${v.name}/v${v.version}/${file}`;
}

async function listAll(store: S3DeltaStore): Promise<string[]> {
  const page = await store.client.send(new ListObjectsV2Command({ Bucket: store.bucket, Prefix: store.prefix ? `${store.prefix}/` : '' }));
  return (page.Contents ?? []).map((o) => o.Key!).sort();
}

describeDeltaStoreContract('s3 (s3rver)', async () => {
  const store = freshStore();
  return {
    store,
    async corrupt(version, file) {
      const Key = key(store, version, file === 'config' ? 'adapter_config.json' : 'adapter_model.safetensors');
      const object = await store.client.send(new GetObjectCommand({ Bucket: BUCKET, Key }));
      const bytes = await object.Body!.transformToByteArray();
      bytes[bytes.length >> 1]! ^= 0xff;
      await store.client.send(new PutObjectCommand({ Bucket: BUCKET, Key, Body: bytes }));
    },
  };
});

describeDeltaStoreContract(
  's3 (s3rver) with a PostgreSQL claims table, two replicas',
  async () => {
    const prefix = `claims-${process.pid}-${++counter}`;
    const opened: PostgresClaims[] = [];
    const open = () => {
      const claims = PostgresClaims.open(postgres!.url);
      return claims;
    };
    const first = await open();
    opened.push(first);
    const store = freshStore({ claims: first }, prefix);
    const second = await open();
    opened.push(second);
    return {
      store,
      replica: () => freshStore({ claims: second }, prefix),
      async corrupt(version, file) {
        const Key = key(store, version, file === 'config' ? 'adapter_config.json' : 'adapter_model.safetensors');
        const object = await store.client.send(new GetObjectCommand({ Bucket: BUCKET, Key }));
        const bytes = await object.Body!.transformToByteArray();
        bytes[bytes.length >> 1]! ^= 0xff;
        await store.client.send(new PutObjectCommand({ Bucket: BUCKET, Key, Body: bytes }));
      },
      async dispose() {
        await Promise.all(opened.map((c) => c.close()));
      },
    };
  },
  { skip: noPostgres ?? false },
);

describe('S3DeltaStore', () => {
  it('finds out that s3rver ignores If-None-Match (it overwrites), and says creates are then atomic in one process only', async () => {
    const store = freshStore();
    assert.equal(await probeConditionalWrites(store.client, BUCKET, `${store.prefix}/`), false);
    const before = warnings.length;
    await store.put({ owner: 'acme', name: 'probe', public: false, kind: 'lora', summary: {}, virtualTokens: 0 }, makeFiles('probe'));
    assert.equal(warnings.length, before + 1);
    assert.match(warnings.at(-1)!, /does not honour If-None-Match.*--control-db/);
    // The probe leaves nothing behind.
    assert.deepEqual((await listAll(store)).filter((k) => k.includes('.probe')), []);
  });

  it('stores <prefix>/<owner>/<name>/v<N>/{config, weights, meta.json}, also at the bucket root', async () => {
    const store = freshStore({}, 'some/nested/prefix');
    assert.equal(store.location, `s3://${BUCKET}/some/nested/prefix`);
    const v = await store.put({ owner: 'acme', name: 'sql', public: false, kind: 'lora', summary: { rank: 8, modules: 3 }, virtualTokens: 0 }, makeFiles('layout'));
    assert.deepEqual(await listAll(store), [
      'some/nested/prefix/acme/sql/v1/adapter_config.json',
      'some/nested/prefix/acme/sql/v1/adapter_model.safetensors',
      'some/nested/prefix/acme/sql/v1/meta.json',
    ]);
    const meta = await store.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key(store, v, 'meta.json') }));
    assert.deepEqual(JSON.parse(await meta.Body!.transformToString()), v);

    const atRoot = new S3DeltaStore(`s3://${ROOT_BUCKET}/`, options);
    track(atRoot.client);
    assert.equal(atRoot.location, `s3://${ROOT_BUCKET}`);
    const r = await atRoot.put({ owner: 'acme', name: 'sql', public: true, kind: 'lora', summary: { rank: 2, modules: 1 }, virtualTokens: 0 }, makeFiles('root'));
    assert.deepEqual(await listAll(atRoot), ['acme/sql/v1/adapter_config.json', 'acme/sql/v1/adapter_model.safetensors', 'acme/sql/v1/meta.json']);
    assert.deepEqual(await atRoot.list(), [r]);
    assert.equal(await atRoot.delete('acme', 'sql'), true);
    // Only the tombstone stays: the number 1 is never given again.
    assert.deepEqual(await listAll(atRoot), ['acme/sql/deleted/v1']);
  });

  it('a version without meta.json (a writer killed mid-upload) is invisible, and the next put gets a fresh one', async () => {
    const store = freshStore();
    const delta = { owner: 'acme', name: 'big', public: false, kind: 'lora', summary: { rank: 8, modules: 1 }, virtualTokens: 0 };
    const v1 = await store.put(delta, makeFiles('one'));
    const v2 = await store.put(delta, makeFiles('two'));
    // What a killed put leaves: both files of v3 uploaded, the meta.json commit marker never written.
    const orphan = makeFiles('orphan', 256 * 1024);
    await store.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key(store, { ...delta, version: 3 }, 'adapter_config.json'), Body: orphan.config }));
    await store.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key(store, { ...delta, version: 3 }, 'adapter_model.safetensors'), Body: orphan.weights }));

    assert.deepEqual(await store.versions('acme', 'big'), [v1, v2]);
    assert.deepEqual(await store.get('acme', 'big'), v2);
    assert.equal(await store.get('acme', 'big', 3), null);
    assert.deepEqual(await store.list(), [v2]);
    assert.deepEqual(await store.read(v2), makeFiles('two'));

    // The unfinished number is never reused (it could be another writer still uploading).
    const v4 = await store.put(delta, makeFiles('four'));
    assert.equal(v4.version, 4);
    assert.deepEqual(await store.read(v4), makeFiles('four'));
    assert.deepEqual(
      (await store.versions('acme', 'big')).map((v) => v.version),
      [1, 2, 4],
    );
    assert.equal(await store.get('acme', 'big', 3), null);

    // delete removes the leftovers too, leaving the tombstone.
    assert.equal(await store.delete('acme', 'big'), true);
    assert.deepEqual(await listAll(store), [key(store, { ...delta, version: 4 }, '').replace(/v4\/$/, 'deleted/v4')]);
  });

  it('with conditional writes, two writers (separate processes, emulated) never share a version', async () => {
    // s3rver ignores If-None-Match on PUT; this middleware gives it the semantics AWS S3 has
    // (atomic create-if-absent, else 412), and holds the first two conditional uploads until both
    // have arrived, so the two writers certainly race for the same number.
    const gate = twoArrivals();
    let conflicts = 0;
    const prefix = `race-${process.pid}`;
    const writers = [freshStore({ conditionalWrites: true }, prefix), freshStore({ conditionalWrites: true }, prefix)];
    for (const writer of writers) {
      writer.client.middlewareStack.add(
        (next, context) => async (args) => {
          const input = args.input as { Bucket: string; Key: string; IfNoneMatch?: string };
          if (context.commandName !== 'PutObjectCommand' || input.IfNoneMatch !== '*') return next(args);
          await gate.arrive();
          return withKeyLock(input.Key, async () => {
            const exists = await writer.client.send(new HeadObjectCommand({ Bucket: input.Bucket, Key: input.Key })).then(
              () => true,
              (error: { $metadata?: { httpStatusCode?: number } }) => {
                if (error.$metadata?.httpStatusCode === 404) return false;
                throw error;
              },
            );
            if (exists) {
              conflicts++;
              throw Object.assign(new Error('At least one of the pre-conditions you specified did not hold'), {
                name: 'PreconditionFailed',
                $metadata: { httpStatusCode: 412 },
              });
            }
            return next(args);
          });
        },
        { step: 'initialize', name: 'emulateConditionalWrites' },
      );
    }
    const delta = { owner: 'acme', name: 'race', public: false, kind: 'lora', summary: { rank: 1, modules: 1 }, virtualTokens: 0 };
    const puts = await Promise.all(
      Array.from({ length: 6 }, (_, i) => writers[i % 2]!.put({ ...delta, summary: { rank: i } }, makeFiles(`race${i}`))),
    );
    assert.ok(conflicts >= 1, 'the writers raced for a version');
    assert.deepEqual(puts.map((p) => p.version).sort(), [1, 2, 3, 4, 5, 6]);
    for (const [i, p] of puts.entries()) {
      assert.equal(p.summary['rank'], i);
      assert.deepEqual(await writers[(i + 1) % 2]!.read(p), makeFiles(`race${i}`));
    }
  });

  it('parses s3:// URLs and environment options; openDeltaStore picks S3 for s3:// specs', () => {
    assert.deepEqual(parseS3Url('s3://bucket'), { bucket: 'bucket', prefix: '' });
    assert.deepEqual(parseS3Url('s3://bucket/'), { bucket: 'bucket', prefix: '' });
    assert.deepEqual(parseS3Url('s3://bucket/a/b/'), { bucket: 'bucket', prefix: 'a/b' });
    assert.throws(() => parseS3Url('s3:///x'), /not an S3 URL/);
    assert.throws(() => parseS3Url('s3://bucket/a//b'), /empty segment/);

    assert.deepEqual(s3OptionsFromEnv({}), {});
    assert.deepEqual(
      s3OptionsFromEnv({ AWS_ENDPOINT_URL: 'http://generic:1', AWS_ENDPOINT_URL_S3: 'http://s3:2', AWS_S3_FORCE_PATH_STYLE: 'true', AWS_REGION: 'eu-west-1' }),
      { endpoint: 'http://s3:2', forcePathStyle: true, region: 'eu-west-1' },
    );
    assert.deepEqual(s3OptionsFromEnv({ AWS_ENDPOINT_URL: 'http://generic:1', AWS_S3_FORCE_PATH_STYLE: '0', AWS_DEFAULT_REGION: 'ap-south-1' }), {
      endpoint: 'http://generic:1',
      forcePathStyle: false,
      region: 'ap-south-1',
    });

    const store = openDeltaStore('s3://bucket/deltas', { env: { AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:1', AWS_S3_FORCE_PATH_STYLE: '1' } });
    assert.ok(store instanceof S3DeltaStore);
    assert.equal(store.location, 's3://bucket/deltas');
    track(store.client);
  });
});

const keyLocks = new Map<string, Promise<void>>();
async function withKeyLock<T>(key: string, task: () => Promise<T>): Promise<T> {
  const previous = keyLocks.get(key) ?? Promise.resolve();
  const run = previous.then(task);
  keyLocks.set(
    key,
    run.then(
      () => undefined,
      () => undefined,
    ),
  );
  return run;
}

/** Resolves every arrive() once two have arrived (or after 2 s, so a bug cannot hang the test). */
function twoArrivals(): { arrive(): Promise<void> } {
  let count = 0;
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
    setTimeout(resolve, 2000).unref();
  });
  return {
    arrive() {
      if (++count >= 2) open();
      return opened;
    },
  };
}
