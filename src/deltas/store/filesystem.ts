/**
 * Deltas in a directory: `<root>/<owner>/<name>/v<N>/{adapter_config.json,
 * adapter_model.safetensors, meta.json}`, tombstones in `<root>/<owner>/<name>/deleted/v<N>`,
 * idempotency records in `<root>/<owner>/<name>/idempotency/`, and other records (training files,
 * jobs) under `<root>/.training/`. Several replicas may share the directory on one volume.
 *
 * A put writes the three files into a private directory under `<root>/.staging/` (the same
 * filesystem), fsyncs them and the directory, then renames the directory to `v<N>`. rename(2) of a
 * directory onto an existing non-empty one fails, so the rename is both the commit and the version
 * allocation: a put that loses the race for `v<N>` rewrites its meta.json for the next number and
 * tries again. Readers therefore see a whole version or none, and concurrent puts (threads,
 * processes, or hosts sharing a POSIX filesystem) get distinct versions.
 *
 * A process killed mid-put leaves only its staging directory, which nothing reads; the next store
 * constructed on the root removes staging directories of dead processes on this host (and any
 * older than a day, e.g. from another host sharing the directory).
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import crypto from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  CONFIG_FILE,
  deletedThrough,
  DeltaNotFoundError,
  META_FILE,
  WEIGHTS_FILE,
  assertValidDeltaName,
  assertVersionRef,
  decodeMeta,
  deltaLabel,
  encodeMeta,
  isValidVersion,
  makeVersion,
  parseVersionSegment,
  tombstoneKey,
  tombstoneRecord,
  verifyFiles,
  versionSegment,
} from './common.js';
import { fsyncDirectory, writeFileDurably } from './durable.js';
import { isValidName } from '../ref.js';
import { putDeltaVersion } from './idempotency.js';
import { FilesystemObjects } from './objects-fs.js';
import type { ObjectStore } from './objects.js';
import type { DeltaFiles, DeltaStore, DeltaVersion, NewDeltaVersion, PutOptions } from './types.js';

const STAGING_DIR = '.staging';
/** Staging entries older than this are removed whoever left them. */
const STALE_STAGING_MS = 24 * 60 * 60 * 1000;
const MAX_PUT_ATTEMPTS = 1000;

export class FilesystemDeltaStore implements DeltaStore {
  readonly location: string;
  readonly root: string;
  private readonly staging: string;
  /** The same directory as records: tombstones and idempotency keys live beside the versions. */
  private readonly objects: FilesystemObjects;

  constructor(root: string) {
    this.root = path.resolve(root);
    this.location = pathToFileURL(this.root).href;
    this.staging = path.join(this.root, STAGING_DIR);
    this.objects = new FilesystemObjects(this.root);
    fs.mkdirSync(this.staging, { recursive: true });
    this.removeAbandonedStaging();
  }

  records(namespace: 'training'): ObjectStore {
    return new FilesystemObjects(path.join(this.root, `.${namespace}`));
  }

  put(delta: NewDeltaVersion, files: DeltaFiles, options: PutOptions = {}): Promise<DeltaVersion> {
    return putDeltaVersion(this, this.objects, delta, files, options, (sha256) => this.putNew(delta, files, sha256));
  }

  private async putNew(delta: NewDeltaVersion, files: DeltaFiles, sha256: string): Promise<DeltaVersion> {
    const deltaDir = this.deltaDir(delta.owner, delta.name);
    const stage = await this.makeStagingDir();
    try {
      await writeFileDurably(path.join(stage, CONFIG_FILE), files.config);
      await writeFileDurably(path.join(stage, WEIGHTS_FILE), files.weights);
      let version = (await this.highestVersionNumber(delta.owner, delta.name)) + 1;
      for (let attempt = 1; ; attempt++) {
        const record = makeVersion(delta, files, version, sha256);
        await writeFileDurably(path.join(stage, META_FILE), encodeMeta(record), true);
        await fsyncDirectory(stage);
        await fsp.mkdir(deltaDir, { recursive: true });
        try {
          await fsp.rename(stage, path.join(deltaDir, versionSegment(version)));
        } catch (error) {
          const code = errorCode(error);
          if (attempt >= MAX_PUT_ATTEMPTS) throw error;
          if (code === 'EEXIST' || code === 'ENOTEMPTY') {
            // Another put committed v<version> first: take the next free number.
            version = Math.max(version + 1, (await this.highestVersionNumber(delta.owner, delta.name)) + 1);
            continue;
          }
          // The delta directory was removed by a concurrent delete between mkdir and rename.
          if (code === 'ENOENT' && (await exists(stage))) continue;
          throw error;
        }
        await fsyncDirectory(deltaDir);
        await fsyncDirectory(path.dirname(deltaDir));
        await fsyncDirectory(this.root);
        return record;
      }
    } catch (error) {
      await fsp.rm(stage, { recursive: true, force: true });
      throw error;
    }
  }

  async get(owner: string, name: string, version?: number): Promise<DeltaVersion | null> {
    assertValidDeltaName('owner', owner);
    assertValidDeltaName('name', name);
    if (version === undefined) {
      const numbers = await this.liveVersionNumbers(owner, name);
      // Newest first; a version removed by a concurrent delete is skipped.
      for (let i = numbers.length - 1; i >= 0; i--) {
        const meta = await this.readMeta(owner, name, numbers[i]!);
        if (meta) return meta;
      }
      return null;
    }
    if (!isValidVersion(version) || version <= (await this.deletedThrough(owner, name))) return null;
    return this.readMeta(owner, name, version);
  }

  async list(owner?: string): Promise<DeltaVersion[]> {
    let owners: string[];
    if (owner !== undefined) {
      assertValidDeltaName('owner', owner);
      owners = [owner];
    } else {
      owners = (await readDirNames(this.root)).filter(isValidName);
    }
    const result: DeltaVersion[] = [];
    for (const o of owners.sort()) {
      const names = (await readDirNames(path.join(this.root, o))).filter(isValidName).sort();
      const latest = await Promise.all(names.map((n) => this.get(o, n)));
      for (const meta of latest) if (meta) result.push(meta);
    }
    return result;
  }

  async versions(owner: string, name: string): Promise<DeltaVersion[]> {
    assertValidDeltaName('owner', owner);
    assertValidDeltaName('name', name);
    const numbers = await this.liveVersionNumbers(owner, name);
    const metas = await Promise.all(numbers.map((v) => this.readMeta(owner, name, v)));
    return metas.filter((meta): meta is DeltaVersion => meta !== null);
  }

  async read(version: DeltaVersion): Promise<DeltaFiles> {
    assertVersionRef(version);
    const dir = path.join(this.deltaDir(version.owner, version.name), versionSegment(version.version));
    let files: DeltaFiles;
    try {
      const [config, weights] = await Promise.all([
        fsp.readFile(path.join(dir, CONFIG_FILE)),
        fsp.readFile(path.join(dir, WEIGHTS_FILE)),
      ]);
      files = { config: asBytes(config), weights: asBytes(weights) };
    } catch (error) {
      if (isMissing(error)) {
        throw new DeltaNotFoundError(deltaLabel(version.owner, version.name, version.version), this.location, { cause: error });
      }
      throw error;
    }
    return verifyFiles(version, files);
  }

  async delete(owner: string, name: string): Promise<boolean> {
    assertValidDeltaName('owner', owner);
    assertValidDeltaName('name', name);
    const live = await this.versions(owner, name);
    if (live.length === 0) return false;
    const highest = live[live.length - 1]!.version;
    // The tombstone first: from here on every reader (any replica) sees none of these versions,
    // and no put can take their numbers again, whatever happens to the files below.
    await this.objects.create(tombstoneKey(owner, name, highest), tombstoneRecord());
    const deltaDir = this.deltaDir(owner, name);
    for (const version of await this.versionNumbers(deltaDir)) {
      if (version > highest) continue;
      const trash = this.stagingPath();
      try {
        await fsp.rename(path.join(deltaDir, versionSegment(version)), trash);
      } catch (error) {
        if (isMissing(error)) continue;
        throw error;
      }
      await fsp.rm(trash, { recursive: true, force: true });
    }
    await fsyncDirectory(deltaDir);
    return true;
  }

  private deltaDir(owner: string, name: string): string {
    return path.join(this.root, owner, name);
  }

  private async readMeta(owner: string, name: string, version: number): Promise<DeltaVersion | null> {
    const file = path.join(this.deltaDir(owner, name), versionSegment(version), META_FILE);
    let bytes: Buffer;
    try {
      bytes = await fsp.readFile(file);
    } catch (error) {
      if (isMissing(error)) return null;
      throw error;
    }
    return decodeMeta(bytes, file, { owner, name, version });
  }

  /** The committed version numbers of a delta directory, ascending. */
  private async versionNumbers(deltaDir: string): Promise<number[]> {
    const numbers: number[] = [];
    for (const entry of await readDirNames(deltaDir)) {
      const version = parseVersionSegment(entry);
      if (version !== undefined) numbers.push(version);
    }
    return numbers.sort((a, b) => a - b);
  }

  /** The highest number any version ever had: committed, unfinished, or deleted (the tombstone). */
  private async highestVersionNumber(owner: string, name: string): Promise<number> {
    const numbers = await this.versionNumbers(this.deltaDir(owner, name));
    return Math.max(numbers.length ? numbers[numbers.length - 1]! : 0, await this.deletedThrough(owner, name));
  }

  private async deletedThrough(owner: string, name: string): Promise<number> {
    return deletedThrough(await this.objects.list(`${owner}/${name}/deleted/`));
  }

  /** Version directories above the tombstone, ascending (a directory may still lack its meta.json). */
  private async liveVersionNumbers(owner: string, name: string): Promise<number[]> {
    const [numbers, deleted] = await Promise.all([this.versionNumbers(this.deltaDir(owner, name)), this.deletedThrough(owner, name)]);
    return numbers.filter((v) => v > deleted);
  }

  /** `<pid>.<random>.<hostname>`: enough to tell later whether its writer is still alive. */
  private stagingPath(): string {
    return path.join(this.staging, `${process.pid}.${crypto.randomBytes(8).toString('hex')}.${os.hostname()}`);
  }

  private async makeStagingDir(): Promise<string> {
    await fsp.mkdir(this.staging, { recursive: true });
    const dir = this.stagingPath();
    await fsp.mkdir(dir);
    return dir;
  }

  private removeAbandonedStaging(): void {
    const host = os.hostname();
    for (const entry of fs.readdirSync(this.staging)) {
      const full = path.join(this.staging, entry);
      const match = /^(\d+)\.[0-9a-f]+\.(.+)$/.exec(entry);
      let abandoned = false;
      if (match && match[2] === host) {
        abandoned = !processIsAlive(Number(match[1]));
      }
      if (!abandoned) {
        try {
          abandoned = Date.now() - fs.lstatSync(full).mtimeMs > STALE_STAGING_MS;
        } catch {
          continue; // gone already
        }
      }
      if (abandoned) fs.rmSync(full, { recursive: true, force: true });
    }
  }
}

function processIsAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return errorCode(error) === 'EPERM';
  }
}



async function readDirNames(dir: string): Promise<string[]> {
  try {
    return await fsp.readdir(dir);
  } catch (error) {
    if (isMissing(error)) return [];
    throw error;
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await fsp.lstat(file);
    return true;
  } catch {
    return false;
  }
}

function asBytes(buffer: Buffer): Uint8Array {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error ? String((error as { code: unknown }).code) : undefined;
}

function isMissing(error: unknown): boolean {
  const code = errorCode(error);
  return code === 'ENOENT' || code === 'ENOTDIR';
}
