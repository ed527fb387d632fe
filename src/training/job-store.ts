import { jsonBytes, readJson, sequenceKey, type ObjectStore } from '../deltas/store/objects.js';
import { loadTrainerState, saveTrainerState } from './checkpoints.js';
import type { JobCheckpoints } from './job-runner.js';
import type { FineTuneSpec, FineTuningJob, JobEvent } from './job-types.js';

/** What is persisted per job: the public object and the request it came from. */
export interface JobRecord {
  job: FineTuningJob;
  spec: FineTuneSpec;
}

/** A replica's hold on a job: only the holder of the newest epoch writes the job, until `expiresAt` (ms since the epoch). */
export interface Lease {
  epoch: number;
  holder: string;
  expiresAt: number;
}

/**
 * Jobs in the store every replica shares (the `training` records of the delta store):
 * - `jobs/<id>.json`: the record, created once, then replaced only by the lease holder;
 * - `job-events/<id>/<seq>`: one event per object, each created exclusively at the next number,
 *   so the log only grows by appending (nothing holding every event is ever rewritten);
 * - `job-leases/<id>/<epoch>`: who runs the job. Taking a job is creating the next epoch, which
 *   exactly one replica can do, and only once the newest epoch has expired; the holder renews its
 *   epoch by rewriting its expiry, and gives the job up when it sees a newer epoch;
 * - `job-cancel/<id>`: a cancel request from any replica, which the holder sees;
 * - `job-checkpoints/<id>/trainer-state.safetensors`: the holder's last checkpoint.
 */
export class JobStore {
  /** id → the next event number to try (a hint: creation decides). */
  private readonly nextEvent = new Map<string, number>();

  constructor(readonly objects: ObjectStore) {}

  /** Stores a new job; false when the id exists (a retried create with the same idempotency key). */
  create(record: JobRecord): Promise<boolean> {
    return this.objects.create(`jobs/${record.job.id}.json`, jsonBytes(record));
  }

  save(record: JobRecord): Promise<void> {
    return this.objects.put(`jobs/${record.job.id}.json`, jsonBytes(record));
  }

  async load(id: string): Promise<JobRecord | null> {
    const record = await readJson<JobRecord>(this.objects, `jobs/${id}.json`);
    return record && upgradeRecord(record);
  }

  /** Every stored job id. */
  async ids(): Promise<string[]> {
    return (await this.objects.list('jobs/')).filter((k) => k.endsWith('.json')).map((k) => k.slice('jobs/'.length, -'.json'.length));
  }

  /** Appends `event` at the next free number (whoever else appends); returns its number. */
  async appendEvent(id: string, event: JobEvent): Promise<number> {
    let seq = this.nextEvent.get(id) ?? (await this.lastEvent(id)) + 1;
    while (!(await this.objects.create(`job-events/${id}/${sequenceKey(seq)}`, jsonBytes(event)))) seq++;
    this.nextEvent.set(id, seq + 1);
    return seq;
  }

  /** Events numbered above `after`, oldest first. */
  async events(id: string, after = 0): Promise<{ seq: number; event: JobEvent }[]> {
    const keys = await this.objects.list(`job-events/${id}/`, after > 0 ? { after: `job-events/${id}/${sequenceKey(after)}` } : {});
    const out: { seq: number; event: JobEvent }[] = [];
    for (const key of keys) {
      const event = await readJson<JobEvent>(this.objects, key);
      if (event) out.push({ seq: Number(key.slice(key.lastIndexOf('/') + 1)), event });
    }
    return out;
  }

  checkpoints(id: string): JobCheckpoints {
    const key = `job-checkpoints/${id}/trainer-state.safetensors`;
    return { load: () => loadTrainerState(this.objects, key), save: (state) => saveTrainerState(this.objects, key, state) };
  }

  async requestCancel(id: string): Promise<void> {
    await this.objects.create(`job-cancel/${id}`, jsonBytes({ at: new Date().toISOString() }));
  }

  async cancelRequested(id: string): Promise<boolean> {
    return (await this.objects.get(`job-cancel/${id}`)) !== null;
  }

  /** The newest lease epoch, or null when the job was never taken. */
  async latestLease(id: string): Promise<Lease | null> {
    const keys = await this.objects.list(`job-leases/${id}/`);
    for (let i = keys.length - 1; i >= 0; i--) {
      const lease = await readJson<Lease>(this.objects, keys[i]!);
      if (lease) return lease;
    }
    return null;
  }

  /**
   * Takes the job for `holder` for `ttlMs` if nobody holds it (never taken, released, or the
   * newest lease expired unrenewed); null when another replica holds it or won the race.
   */
  async acquire(id: string, holder: string, ttlMs: number): Promise<Lease | null> {
    const latest = await this.latestLease(id);
    if (latest && latest.expiresAt > Date.now()) return null;
    let epoch = (latest?.epoch ?? 0) + 1;
    for (let attempt = 0; attempt < 5; attempt++, epoch++) {
      const lease: Lease = { epoch, holder, expiresAt: Date.now() + ttlMs };
      if (await this.objects.create(this.leaseKey(id, epoch), jsonBytes(lease))) return lease;
      // Another replica created this epoch (it holds the job now), unless its write never landed.
      if ((await this.objects.get(this.leaseKey(id, epoch))) !== null) return null;
    }
    return null;
  }

  /** Extends the holder's lease; false (and nothing written) when a newer epoch exists: the job was taken over. */
  async renew(id: string, lease: Lease, ttlMs: number): Promise<boolean> {
    const latest = await this.latestLease(id);
    if (!latest || latest.epoch !== lease.epoch || latest.holder !== lease.holder) return false;
    const renewed = { ...lease, expiresAt: Date.now() + ttlMs };
    await this.objects.put(this.leaseKey(id, lease.epoch), jsonBytes(renewed));
    lease.expiresAt = renewed.expiresAt;
    return true;
  }

  /** Gives the job up at once (graceful stop), so that another replica, or this one restarted, need not wait for the expiry. */
  async release(id: string, lease: Lease): Promise<void> {
    const latest = await this.latestLease(id);
    if (latest?.epoch === lease.epoch && latest.holder === lease.holder) await this.objects.put(this.leaseKey(id, lease.epoch), jsonBytes({ ...lease, expiresAt: 0 }));
  }

  private leaseKey(id: string, epoch: number): string {
    return `job-leases/${id}/${sequenceKey(epoch)}`;
  }

  private async lastEvent(id: string): Promise<number> {
    const keys = await this.objects.list(`job-events/${id}/`);
    return keys.length ? Number(keys[keys.length - 1]!.slice(keys[keys.length - 1]!.lastIndexOf('/') + 1)) : 0;
  }
}

/** How jobs stored before trainable kinds carried their (LoRA) options: `spec.lora`, camelCase. */
interface LegacyLoraSpec {
  lora?: { r: number; alpha: number; targetModules: string[] | 'all-linear'; useRslora: boolean };
}

/**
 * A stored record in today's shape: a job stored before trainable kinds has `spec.lora` instead of
 * `spec.method`, and becomes the `lora` method with the same options (its job object already
 * showed them so), so it still loads and resumes.
 *
 * @example upgradeRecord(JSON.parse(text)).spec.method // { type: 'lora', lora: { r: 8, alpha: 16, ... } }
 */
export function upgradeRecord(record: JobRecord): JobRecord {
  const legacy = record.spec as FineTuneSpec & LegacyLoraSpec;
  if (legacy.method || !legacy.lora) return record;
  const { lora, ...spec } = legacy;
  const options = { r: lora.r, alpha: lora.alpha, target_modules: lora.targetModules, use_rslora: lora.useRslora };
  return { ...record, spec: { ...spec, method: { type: 'lora', lora: options } } };
}
