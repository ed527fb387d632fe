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

/**
 * Verified delta files on local disk, one directory per SHA-256 (`<dir>/<sha256>/`), written to a
 * temporary directory and renamed into place, so a reader sees a whole entry or none. A read
 * checks the digest again and drops an entry that no longer matches. `<dir>/keys/<owner>/<name>@<N>`
 * records which digest a version had when it was cached: versions are immutable, so when the
 * store cannot be asked, that digest says which entry holds the version's bytes.
 */
export class DiskDeltaCache {
  constructor(readonly dir: string) {}

  async read(sha256: string): Promise<DeltaFiles | undefined> {
    const entry = path.join(this.dir, sha256);
    let files: DeltaFiles;
    try {
      const [config, weights] = await Promise.all([fs.promises.readFile(path.join(entry, 'adapter_config.json')), fs.promises.readFile(path.join(entry, 'adapter_model.safetensors'))]);
      files = { config, weights };
    } catch {
      return undefined;
    }
    if (digestFiles(files) === sha256) return files;
    await fs.promises.rm(entry, { recursive: true, force: true });
    return undefined;
  }

  /** The digest recorded for an engine key (owner/name@version) when its files were cached, or undefined. */
  async digestOf(name: string): Promise<string | undefined> {
    const file = this.keyFile(name);
    const text = file ? await fs.promises.readFile(file, 'utf8').catch(() => '') : '';
    return /^[0-9a-f]{64}$/.test(text) ? text : undefined;
  }

  async remove(sha256: string, name?: string): Promise<void> {
    const key = name ? this.keyFile(name) : undefined;
    if (key) await fs.promises.rm(key, { force: true });
    if (!/^[0-9a-f]{64}$/.test(sha256)) return;
    await fs.promises.rm(path.join(this.dir, sha256), { recursive: true, force: true });
  }

  /** Caches a version's verified files under their digest, and (with its engine key) which digest it has. */
  async write(sha256: string, files: DeltaFiles, name?: string): Promise<void> {
    await fs.promises.mkdir(this.dir, { recursive: true }).catch(() => undefined);
    const target = path.join(this.dir, sha256);
    if (!fs.existsSync(target)) await this.writeEntry(target, files);
    const key = name ? this.keyFile(name) : undefined;
    if (key && fs.existsSync(target)) await writeSmallFile(key, sha256);
  }

  private async writeEntry(target: string, files: DeltaFiles): Promise<void> {
    let tmp: string | undefined;
    try {
      tmp = await fs.promises.mkdtemp(path.join(this.dir, '.tmp-'));
      await fs.promises.writeFile(path.join(tmp, 'adapter_config.json'), files.config);
      await fs.promises.writeFile(path.join(tmp, 'adapter_model.safetensors'), files.weights);
      await fs.promises.rename(tmp, target);
    } catch {
      // Another writer got there first (the entry exists), or the disk is full: the cache is optional.
    } finally {
      if (tmp) await fs.promises.rm(tmp, { recursive: true, force: true });
    }
  }

  private keyFile(name: string): string | undefined {
    const ref = parseDeltaKey(name);
    return ref ? path.join(this.dir, 'keys', ref.owner, `${ref.name}@${ref.version}`) : undefined;
  }
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
  /** The disk tier's directory, from which a deleted version's files are removed. */
  diskCacheDir?: string;
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
    if (options.diskCacheDir) this.disk = new DiskDeltaCache(options.diskCacheDir);
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
