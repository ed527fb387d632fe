import fs from 'node:fs';
import path from 'node:path';
import type { DeltaCatalog, DeltaRecord } from '../deltas/catalog.js';
import { adapterWeightsPath } from '../deltas/parse.js';
import { deltaKey, isValidName, parseDeltaRef } from '../deltas/ref.js';
import { digestFiles } from '../deltas/store/common.js';
import type { DeltaFiles, DeltaStore, DeltaVersion } from '../deltas/store/types.js';
import { StoreUnavailableError } from '../deltas/store/unavailable.js';
import type { Engine } from '../engine/client.js';

/**
 * Deltas flow upload → validate (by the engine, against the backbone) → store (a new immutable
 * version) → register (warm in the engine's host-memory tier) → catalog (what the HTTP side
 * resolves). Nothing is stored before validation passes; the engine loads any catalogued version
 * it does not hold from the same store on demand.
 *
 * The store is the truth every replica shares; the catalog is this replica's cache of it. A delta
 * the catalog does not know is looked up in the store before anything answers 404 (so a version
 * uploaded through another replica is usable at once), and a known delta is read again once its
 * entry is older than `ttlMs` (so another replica's new latest version or delete shows within
 * that bound). A version's bytes never change, so what the engine holds of `name@N` never goes stale.
 */
export class DeltaService {
  /** owner/name → when the store was last read for it (ms). */
  private readonly checked = new Map<string, number>();
  /** owner/name → the read in progress (one per delta, however many requests wait for it). */
  private readonly reading = new Map<string, Promise<void>>();
  private listedAt = 0;
  private listing: Promise<void> | undefined;

  constructor(
    private readonly store: DeltaStore,
    private readonly engine: Engine,
    private readonly catalog: DeltaCatalog,
    private readonly options: { ttlMs: number } = { ttlMs: 1000 },
  ) {}

  /**
   * Validates and stores a new version, then makes it servable; throws the engine's invalid_delta
   * error untouched. `warnings` lists what validation ignored (tensors PEFT would ignore too).
   * With an idempotency key, a retried upload answers with the version its first attempt stored.
   */
  async upload(owner: string, name: string, files: DeltaFiles, options: { public: boolean; idempotencyKey?: string }): Promise<{ version: DeltaVersion; warnings: string[] }> {
    const summary = await this.engine.registerPeft(`${owner}/${name}`, files, { dryRun: true });
    const meta = { owner, name, public: options.public, kind: summary.kind, summary: summary.summary, virtualTokens: summary.virtualTokens };
    const version = await this.store.put(meta, files, options.idempotencyKey !== undefined ? { idempotencyKey: options.idempotencyKey } : {});
    await this.engine.registerPeft(deltaKey(owner, name, version.version), files, { sha256: version.sha256 });
    this.remember(version);
    return { version, warnings: summary.warnings };
  }

  /**
   * Brings the catalog up to date for the references in `model` (joined by '+') and `ids`, as
   * `tenant` would resolve them: each delta they can name is read from the store when unknown or
   * older than the TTL; a plain name that is not the tenant's own also refreshes the list of
   * every delta (at most once per TTL), where another tenant's public delta of that name shows.
   */
  async freshen(model: string, tenant: string, ids: readonly string[] = []): Promise<void> {
    const refs = [...model.split('+'), ...ids].flatMap((text) => {
      const parsed = parseDeltaRef(text);
      // A reference that names no storable delta resolves to a 4xx later; the store is not asked.
      return parsed.ok && isValidName(parsed.ref.owner ?? tenant) && isValidName(parsed.ref.name) ? [parsed.ref] : [];
    });
    await Promise.all(
      refs.map(async ({ owner, name, version }) => {
        // A miss (an unknown delta, or a version this replica has not seen) always asks the store.
        const known = this.catalog.get(owner ?? tenant, name);
        const miss = !known || (version !== undefined && !known.versions.includes(version));
        await this.refresh(owner ?? tenant, name, miss).catch((err: unknown) => {
          // While the store is down, a delta this replica knows keeps resolving from the catalog
          // (its versions never change; its latest and deletes are as stale as the outage is long).
          if (miss || !(err instanceof StoreUnavailableError)) throw err;
        });
        if (owner !== undefined || this.catalog.get(tenant, name)) return;
        await this.refreshList();
        await Promise.all(this.catalog.find(name).map((r) => this.refresh(r.owner, r.name)));
      }),
    );
  }

  /** Re-reads every delta's latest version (at most once per TTL unless `force`): new names appear, deleted ones go. */
  async refreshList(force = false): Promise<void> {
    if (!force && Date.now() - this.listedAt < this.options.ttlMs) return;
    this.listing ??= (async () => {
      const started = Date.now();
      const latest = await this.store.list();
      const stored = new Set(latest.map((v) => `${v.owner}/${v.name}`));
      for (const record of this.catalog.list()) if (!stored.has(`${record.owner}/${record.name}`)) await this.refresh(record.owner, record.name, true);
      await Promise.all(latest.filter((v) => this.catalog.get(v.owner, v.name)?.version !== v.version).map((v) => this.refresh(v.owner, v.name, true)));
      this.listedAt = started;
    })().finally(() => (this.listing = undefined));
    return this.listing;
  }

  /** Reads owner/name's versions from the store when its entry is unknown or older than the TTL (or `force`). */
  refresh(owner: string, name: string, force = false): Promise<void> {
    const id = `${owner}/${name}`;
    if (!force && Date.now() - (this.checked.get(id) ?? -Infinity) < this.options.ttlMs) return Promise.resolve();
    let read = this.reading.get(id);
    if (!read) {
      const started = Date.now();
      read = this.store
        .versions(owner, name)
        .then((versions) => {
          const known = this.catalog.get(owner, name)?.versions ?? [];
          this.catalog.remove(owner, name);
          for (const version of versions) this.remember(version);
          this.checked.set(id, started);
          // Versions deleted through another replica leave this one's engine too (host memory,
          // slots, disk tier), as they leave the deleting one's.
          const stored = new Set(versions.map((v) => v.version));
          for (const v of known) if (!stored.has(v)) this.engine.unregisterDelta(deltaKey(owner, name, v)).catch(() => undefined);
        })
        .finally(() => this.reading.delete(id));
      this.reading.set(id, read);
    }
    return read;
  }

  /**
   * A `--delta` directory at startup goes through the same store: stored as a new version unless
   * the latest stored version has the same bytes (restarts do not pile up versions).
   */
  async adoptDirectory(owner: string, name: string, dir: string, options: { public: boolean }): Promise<DeltaVersion> {
    // shared (bottleneck kind): the adapters library names its weights adapter.safetensors.
    const files = { config: fs.readFileSync(path.join(dir, 'adapter_config.json')), weights: fs.readFileSync(adapterWeightsPath(dir, `${owner}/${name}`)) };
    const latest = await this.store.get(owner, name);
    if (latest && latest.sha256 === digestFiles(files) && latest.public === options.public) return latest;
    return (await this.upload(owner, name, files, options)).version;
  }

  /**
   * Records every stored version in the catalog, so uploads survive restarts, without reading
   * any files: validation happened at upload, and the engine loads a version from the store the
   * first time a request needs it (then keeps it in its host-memory and disk tiers).
   */
  async loadAll(warn: (message: string) => void = console.warn): Promise<void> {
    const started = Date.now();
    for (const latest of await this.store.list()) {
      try {
        for (const version of await this.store.versions(latest.owner, latest.name)) this.remember(version);
        this.checked.set(`${latest.owner}/${latest.name}`, started);
      } catch (err) {
        // An outage is not a bad delta: skipping would drop every delta from the catalog.
        if (err instanceof StoreUnavailableError) throw err;
        warn(`skipping stored delta ${latest.owner}/${latest.name}: ${(err as Error).message.slice(0, 300)}`);
      }
    }
    this.listedAt = started;
  }

  /** Deletes every version (they stay tombstones in the store); the engine forgets them, and their files leave its disk cache. */
  async remove(record: DeltaRecord): Promise<void> {
    const stored = await this.store.versions(record.owner, record.name);
    await this.store.delete(record.owner, record.name);
    this.catalog.remove(record.owner, record.name);
    this.checked.set(`${record.owner}/${record.name}`, Date.now());
    const digests = new Map(stored.map((v) => [v.version, v.sha256]));
    for (const v of record.versions) await this.engine.unregisterDelta(deltaKey(record.owner, record.name, v), digests.get(v));
  }

  /** One stored version's files (verified against their SHA-256). */
  async readVersion(owner: string, name: string, version: number): Promise<DeltaFiles> {
    const stored = await this.store.get(owner, name, version);
    if (!stored) throw new Error(`delta ${owner}/${name}@${version} is no longer stored`);
    return this.store.read(stored);
  }

  read(version: DeltaVersion): Promise<DeltaFiles> {
    return this.store.read(version);
  }

  versions(record: DeltaRecord): Promise<DeltaVersion[]> {
    return this.store.versions(record.owner, record.name);
  }

  private remember(version: DeltaVersion): void {
    const known = this.catalog.get(version.owner, version.name);
    const isNew = !known?.versions.includes(version.version);
    const versions = [...new Set([...(known?.versions ?? []), version.version])].sort((a, b) => a - b);
    const latest = Math.max(...versions);
    this.catalog.add({
      name: version.name,
      owner: version.owner,
      public: latest === version.version ? version.public : (known?.public ?? version.public),
      kind: latest === version.version ? version.kind : known!.kind,
      summary: latest === version.version ? version.summary : known!.summary,
      virtualTokens: latest === version.version ? version.virtualTokens : known!.virtualTokens,
      createdAt: known?.createdAt ?? Date.parse(version.createdAt),
      version: latest,
      versions,
      bytes: (known?.bytes ?? 0) + (isNew ? version.size : 0),
    });
  }
}
