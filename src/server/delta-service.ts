import fs from 'node:fs';
import path from 'node:path';
import type { DeltaCatalog, DeltaRecord } from '../deltas/catalog.js';
import { adapterWeightsPath } from '../deltas/parse.js';
import { deltaKey } from '../deltas/ref.js';
import { digestFiles } from '../deltas/store/common.js';
import type { DeltaFiles, DeltaStore, DeltaVersion } from '../deltas/store/types.js';
import { StoreUnavailableError } from '../deltas/store/unavailable.js';
import type { Engine } from '../engine/client.js';

/**
 * Deltas flow upload → validate (by the engine, against the backbone) → store (a new immutable
 * version) → register (warm in the engine's host-memory tier) → catalog (what the HTTP side
 * resolves). Nothing is stored before validation passes; the engine loads any catalogued version
 * it does not hold from the same store on demand.
 */
export class DeltaService {
  constructor(
    private readonly store: DeltaStore,
    private readonly engine: Engine,
    private readonly catalog: DeltaCatalog,
  ) {}

  /**
   * Validates and stores a new version, then makes it servable; throws the engine's invalid_delta
   * error untouched. `warnings` lists what validation ignored (tensors PEFT would ignore too).
   */
  async upload(owner: string, name: string, files: DeltaFiles, options: { public: boolean }): Promise<{ version: DeltaVersion; warnings: string[] }> {
    const summary = await this.engine.registerPeft(`${owner}/${name}`, files, { dryRun: true });
    const version = await this.store.put({ owner, name, public: options.public, kind: summary.kind, summary: summary.summary, virtualTokens: summary.virtualTokens }, files);
    await this.engine.registerPeft(deltaKey(owner, name, version.version), files, { sha256: version.sha256 });
    this.remember(version);
    return { version, warnings: summary.warnings };
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
    for (const latest of await this.store.list()) {
      try {
        for (const version of await this.store.versions(latest.owner, latest.name)) this.remember(version);
      } catch (err) {
        // An outage is not a bad delta: skipping would drop every delta from the catalog.
        if (err instanceof StoreUnavailableError) throw err;
        warn(`skipping stored delta ${latest.owner}/${latest.name}: ${(err as Error).message.slice(0, 300)}`);
      }
    }
  }

  /** Deletes every version; the engine forgets them, and their files leave its disk cache. */
  async remove(record: DeltaRecord): Promise<void> {
    const stored = await this.store.versions(record.owner, record.name);
    await this.store.delete(record.owner, record.name);
    this.catalog.remove(record.owner, record.name);
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
