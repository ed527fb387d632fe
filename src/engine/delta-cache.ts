import fs from 'node:fs';
import path from 'node:path';
import { LRUCache } from 'lru-cache';
import { parsedBytes, type ParsedDelta } from '../deltas/kind.js';
import { digestFiles } from '../deltas/store/common.js';
import type { DeltaFiles, DeltaStore } from '../deltas/store/types.js';
import { parseDeltaKey } from '../deltas/ref.js';
import type { DeltaLoad } from './residency.js';
import { StoreUnavailableError } from '../deltas/store/unavailable.js';
import { EngineError } from './types.js';

/**
 * The tiers below the resident slots: parsed deltas in a host-memory LRU bounded in bytes, the
 * verified files of versions on local disk (for object stores), and the store itself.
 */

/** Parsed deltas by engine key, least recently used dropped first once their bytes exceed the bound. */
export class HostDeltaCache {
  private readonly lru: LRUCache<string, ParsedDelta>;

  constructor(readonly maxBytes: number) {
    this.lru = new LRUCache<string, ParsedDelta>({ maxSize: maxBytes, sizeCalculation: (d) => Math.max(1, parsedBytes(d)) });
  }

  get(name: string): ParsedDelta | undefined {
    return this.lru.get(name);
  }

  has(name: string): boolean {
    return this.lru.has(name);
  }

  /** Stores a delta; one larger than the whole bound is not kept (false). */
  set(name: string, delta: ParsedDelta): boolean {
    if (parsedBytes(delta) > this.maxBytes) return false;
    this.lru.set(name, delta);
    return true;
  }

  delete(name: string): void {
    this.lru.delete(name);
  }

  get bytes(): number {
    return this.lru.calculatedSize;
  }

  get size(): number {
    return this.lru.size;
  }

  keys(): string[] {
    return [...this.lru.keys()];
  }
}

/** Where the disk tier lives and how many bytes of entries it may hold. */
export interface DiskCacheOptions {
  dir: string;
  maxBytes: number;
}

/**
 * Verified delta files on local disk, one directory per SHA-256 (`<dir>/<sha256>/`), written to a
 * temporary directory and renamed into place, so a reader sees a whole entry or none. A read
 * checks the digest again and drops an entry that no longer matches. `<dir>/keys/<owner>/<name>@<N>`
 * records which digest a version had when it was cached: versions are immutable, so when the
 * store cannot be asked, that digest says which entry holds the version's bytes.
 *
 * The entries' bytes are bounded by `maxBytes`: after a new entry is written, the least recently
 * used ones (oldest directory mtime; a hit refreshes it) are removed until the rest fit. Several
 * instances (the engine and loader threads, replicas sharing the directory) may evict at once;
 * that can only remove a little more than needed, and a reader racing a removal sees a miss.
 */
export class DiskDeltaCache {
  constructor(
    readonly dir: string,
    readonly maxBytes: number,
  ) {}

  async read(sha256: string): Promise<DeltaFiles | undefined> {
    const entry = path.join(this.dir, sha256);
    let files: DeltaFiles;
    try {
      const [config, weights] = await Promise.all(ENTRY_FILES.map((file) => fs.promises.readFile(path.join(entry, file))));
      files = { config: config!, weights: weights! };
    } catch {
      return undefined;
    }
    if (digestFiles(files) === sha256) {
      await touch(entry);
      return files;
    }
    await fs.promises.rm(entry, { recursive: true, force: true });
    return undefined;
  }

  /** The digest recorded for an engine key (owner/name@version) when its files were cached, or undefined. */
  async digestOf(name: string): Promise<string | undefined> {
    const file = this.keyFile(name);
    const text = file ? await fs.promises.readFile(file, 'utf8').catch(() => '') : '';
    return SHA256.test(text) ? text : undefined;
  }

  async remove(sha256: string, name?: string): Promise<void> {
    const key = name ? this.keyFile(name) : undefined;
    if (key) await fs.promises.rm(key, { force: true });
    if (!SHA256.test(sha256)) return;
    await fs.promises.rm(path.join(this.dir, sha256), { recursive: true, force: true });
  }

  /** Caches a version's verified files under their digest, and (with its engine key) which digest it has. */
  async write(sha256: string, files: DeltaFiles, name?: string): Promise<void> {
    await fs.promises.mkdir(this.dir, { recursive: true }).catch(() => undefined);
    const target = path.join(this.dir, sha256);
    const existed = fs.existsSync(target);
    const written = !existed && (await this.writeEntry(target, files));
    if (existed) await touch(target);
    const key = name ? this.keyFile(name) : undefined;
    if (key && fs.existsSync(target)) await writeSmallFile(key, sha256);
    if (written) await this.evictBeyondBound(sha256);
  }

  /** Whether this call put the entry in place (false when another writer did, or the write failed). */
  private async writeEntry(target: string, files: DeltaFiles): Promise<boolean> {
    let tmp: string | undefined;
    try {
      tmp = await fs.promises.mkdtemp(path.join(this.dir, '.tmp-'));
      await fs.promises.writeFile(path.join(tmp, 'adapter_config.json'), files.config);
      await fs.promises.writeFile(path.join(tmp, 'adapter_model.safetensors'), files.weights);
      await fs.promises.rename(tmp, target);
      return true;
    } catch {
      // Another writer got there first (the entry exists), or the disk is full: the cache is optional.
      return false;
    } finally {
      if (tmp) await fs.promises.rm(tmp, { recursive: true, force: true });
    }
  }

  /** Removes the least recently used entries, never `keep` (the one just written), until the rest fit in maxBytes. */
  private async evictBeyondBound(keep: string): Promise<void> {
    const entries = await this.entries();
    let total = entries.reduce((sum, e) => sum + e.bytes, 0);
    if (total <= this.maxBytes) return;
    const evicted = new Set<string>();
    for (const entry of entries.filter((e) => e.sha256 !== keep).sort((a, b) => a.usedMs - b.usedMs)) {
      if (total <= this.maxBytes) break;
      const removed = await fs.promises.rm(path.join(this.dir, entry.sha256), { recursive: true, force: true }).then(() => true, () => false);
      if (!removed) continue;
      evicted.add(entry.sha256);
      total -= entry.bytes;
    }
    await this.removeKeysOf(evicted);
  }

  /** Every whole entry with its size and last use; one vanishing mid-scan (another evictor) is skipped. */
  private async entries(): Promise<{ sha256: string; bytes: number; usedMs: number }[]> {
    const names = await fs.promises.readdir(this.dir).catch((): string[] => []);
    const scanned = await Promise.all(
      names.filter((n) => SHA256.test(n)).map(async (sha256) => {
        const entry = path.join(this.dir, sha256);
        try {
          const [dir, ...files] = await Promise.all([entry, ...ENTRY_FILES.map((f) => path.join(entry, f))].map((p) => fs.promises.stat(p)));
          return { sha256, bytes: files.reduce((sum, f) => sum + f!.size, 0), usedMs: dir!.mtimeMs };
        } catch {
          return undefined;
        }
      }),
    );
    return scanned.filter((e) => e !== undefined);
  }

  /**
   * Drops the key files that record an evicted digest. Only the store-outage fallback reads them,
   * and a stale one just leads to a miss; this keeps keys/ from growing with every version ever
   * cached. Reading them all is paid only when something was evicted. A key rewritten for the
   * same digest meanwhile may go too: the next disk hit records it again.
   */
  private async removeKeysOf(evicted: Set<string>): Promise<void> {
    if (!evicted.size) return;
    const keys = path.join(this.dir, 'keys');
    const owners = await fs.promises.readdir(keys).catch((): string[] => []);
    for (const owner of owners) {
      const versions = await fs.promises.readdir(path.join(keys, owner)).catch((): string[] => []);
      for (const version of versions) {
        const file = path.join(keys, owner, version);
        const digest = await fs.promises.readFile(file, 'utf8').catch(() => '');
        if (evicted.has(digest)) await fs.promises.rm(file, { force: true }).catch(() => undefined);
      }
    }
  }

  private keyFile(name: string): string | undefined {
    const ref = parseDeltaKey(name);
    return ref ? path.join(this.dir, 'keys', ref.owner, `${ref.name}@${ref.version}`) : undefined;
  }
}

const ENTRY_FILES = ['adapter_config.json', 'adapter_model.safetensors'] as const;
const SHA256 = /^[0-9a-f]{64}$/;

/** Marks an entry as just used, for eviction's least-recently-used order; failures are ignored (it may be gone). */
async function touch(entry: string): Promise<void> {
  const now = new Date();
  await fs.promises.utimes(entry, now, now).catch(() => undefined);
}

/** Writes a small file by rename, so a reader sees all of it or none; failures are ignored (the cache is optional). */
async function writeSmallFile(file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${Math.random().toString(16).slice(2)}`;
  try {
    await fs.promises.mkdir(path.dirname(file), { recursive: true });
    await fs.promises.writeFile(tmp, text);
    await fs.promises.rename(tmp, file);
  } catch {
    await fs.promises.rm(tmp, { force: true });
  }
}

export interface DeltaCacheStats {
  hostHits: number;
  hostMisses: number;
  hostBytes: number;
  hostEntries: number;
  diskHits: number;
  diskMisses: number;
  storeLoads: number;
  loads: number;
  loadFailures: number;
  lastLoadMs: number;
  avgLoadMs: number;
}

export interface TieredDeltaSourceOptions {
  hostCacheBytes: number;
  /** The disk tier, from which a deleted version's files are removed (the loader thread writes, and so evicts). */
  diskCache?: DiskCacheOptions;
  /** How many loaded deltas are held (outside the LRU) until the scheduler makes them resident. */
  holdLimit?: number;
}

/** The tier a stored delta was read from. */
export type FetchTier = 'disk' | 'store';

/** Reads a stored delta version and lays it out for slots (the loader thread's work), and says from which tier. */
export type FetchDelta = (name: string) => Promise<{ delta: ParsedDelta; tier: FetchTier }>;

/**
 * A scheduler DeltaSource over the tiers. `lookup` answers from host memory only; `load` has a
 * cold delta fetched and parsed (disk cache, else the store) and keeps it in host memory. A
 * loaded delta is also held outside the LRU until `resident` says it reached a slot, so a host
 * cache smaller than the working set cannot evict it between its load and its admission.
 */
export class TieredDeltaSource {
  readonly host: HostDeltaCache;
  private readonly disk?: DiskDeltaCache;
  private readonly held = new Map<string, ParsedDelta>();
  private readonly holdLimit: number;
  private readonly counters = { hostHits: 0, hostMisses: 0, diskHits: 0, diskMisses: 0, storeLoads: 0, loads: 0, loadFailures: 0, lastLoadMs: 0, totalLoadMs: 0 };

  constructor(
    private readonly fetch: FetchDelta,
    options: TieredDeltaSourceOptions,
  ) {
    this.host = new HostDeltaCache(options.hostCacheBytes);
    if (options.diskCache) this.disk = new DiskDeltaCache(options.diskCache.dir, options.diskCache.maxBytes);
    this.holdLimit = options.holdLimit ?? 64;
  }

  lookup(name: string): ParsedDelta | undefined {
    const held = this.held.get(name);
    if (held) return held;
    const delta = this.host.get(name);
    if (delta) this.counters.hostHits++;
    return delta;
  }

  has(name: string): boolean {
    return this.held.has(name) || this.host.has(name);
  }

  /** The scheduler wrote the delta into a slot: the hold is no longer needed. */
  resident(name: string): void {
    this.held.delete(name);
  }

  /** Puts a delta parsed elsewhere (an upload) into host memory. */
  put(name: string, delta: ParsedDelta): void {
    // A key deleted and uploaded again names new weights: no older hold may shadow them.
    this.held.delete(name);
    this.host.set(name, delta);
  }

  /** Drops a deleted delta version from host memory and from the disk cache (its digest given, or the one recorded there). */
  async forget(name: string, sha256?: string): Promise<void> {
    this.host.delete(name);
    this.held.delete(name);
    const digest = sha256 ?? (await this.disk?.digestOf(name));
    if (digest) await this.disk?.remove(digest, name);
  }

  /** Brings `owner/name@version` into host memory; the caller deduplicates concurrent loads. */
  async load(name: string): Promise<DeltaLoad> {
    if (this.held.has(name) || this.host.has(name)) return { tier: 'host', ms: 0 };
    this.counters.hostMisses++;
    const started = performance.now();
    try {
      const { delta, tier } = await this.fetch(name);
      if (tier === 'disk') this.counters.diskHits++;
      else if (this.disk) this.counters.diskMisses++;
      if (tier === 'store') this.counters.storeLoads++;
      this.host.set(name, delta);
      this.hold(name, delta);
      const ms = performance.now() - started;
      this.counters.loads++;
      this.counters.lastLoadMs = ms;
      this.counters.totalLoadMs += ms;
      return { tier, ms };
    } catch (err) {
      this.counters.loadFailures++;
      throw err;
    }
  }

  private hold(name: string, delta: ParsedDelta): void {
    this.held.delete(name);
    this.held.set(name, delta);
    while (this.held.size > this.holdLimit) this.held.delete(this.held.keys().next().value!);
  }

  get stats(): DeltaCacheStats {
    const { totalLoadMs, ...c } = this.counters;
    return { ...c, hostBytes: this.host.bytes, hostEntries: this.host.size, avgLoadMs: c.loads ? totalLoadMs / c.loads : 0 };
  }
}

/**
 * The files of `owner/name@version`: from the disk tier when it holds them (digest checked), else
 * from the store (which verifies the digest), then copied into the disk tier. When the store
 * cannot be reached, a version whose digest the disk tier recorded is served from there.
 */
export async function fetchDeltaFiles(store: DeltaStore, disk: DiskDeltaCache | undefined, name: string): Promise<{ files: DeltaFiles; tier: FetchTier }> {
  const ref = parseDeltaKey(name);
  if (!ref) throw new EngineError('delta_not_found', `delta '${name}' is not a stored delta version (owner/name@version)`);
  let version;
  try {
    version = await store.get(ref.owner, ref.name, ref.version);
  } catch (err) {
    const recorded = err instanceof StoreUnavailableError ? await disk?.digestOf(name) : undefined;
    const cached = recorded ? await disk?.read(recorded) : undefined;
    if (cached) return { files: cached, tier: 'disk' };
    throw err;
  }
  if (!version) throw new EngineError('delta_not_found', `delta '${name}' does not exist in the delta store`);
  const cached = await disk?.read(version.sha256);
  if (cached) {
    if (!(await disk!.digestOf(name))) await disk!.write(version.sha256, cached, name);
    return { files: cached, tier: 'disk' };
  }
  const files = await store.read(version);
  if (disk) await disk.write(version.sha256, files, name);
  return { files, tier: 'store' };
}
