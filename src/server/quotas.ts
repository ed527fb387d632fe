import type { DeltaCatalog } from '../deltas/catalog.js';
import type { FineTuningJob } from '../training/job-types.js';
import type { TrainingFile } from '../training/file-store.js';
import { ApiError } from './errors.js';

/** What one tenant may keep on the server; 0 means unlimited. */
export interface QuotaLimits {
  /** Deltas (names; every version of one counts once). */
  maxDeltas: number;
  /** Bytes of every version of every delta together. */
  maxDeltaBytes: number;
  /** Fine-tuning jobs queued or running at once. */
  maxJobs: number;
  /** Training files stored. */
  maxTrainingFiles: number;
  /** Bytes of every training file together. */
  maxTrainingFileBytes: number;
}

/**
 * Per-tenant quotas, checked before anything is written: one tenant must not fill the store or
 * the job queue for everyone (215 deltas, 1 GB, were stored in seconds before). A refusal is 429
 * `quota_exceeded` naming the quota, the flag that sets it, and the tenant's usage; it clears
 * when the tenant deletes something (or a job ends), not with time, so it carries no Retry-After.
 *
 * @example quotas.checkDeltaUpload('acme', 'sql', 20_000_000);
 */
export class TenantQuotas {
  constructor(
    private readonly limits: QuotaLimits,
    private readonly sources: { catalog: DeltaCatalog; jobs?: () => FineTuningJob[]; files?: () => TrainingFile[] },
  ) {
    for (const [key, value] of Object.entries(limits)) {
      if (!Number.isSafeInteger(value) || value < 0) throw new Error(`quota ${key} must be a non-negative integer, got ${value}`);
    }
  }

  /** A new version of `owner/name` of `bytes` bytes (a new delta when the name is new). */
  checkDeltaUpload(owner: string, name: string, bytes: number): void {
    const usage = this.sources.catalog.usage(owner);
    const isNew = !this.sources.catalog.get(owner, name);
    if (isNew) refuse(usage.deltas + 1, this.limits.maxDeltas, `tenant '${owner}' has ${usage.deltas} deltas; the quota is ${this.limits.maxDeltas} (--tenant-max-deltas)`);
    refuse(usage.bytes + bytes, this.limits.maxDeltaBytes, `tenant '${owner}' stores ${usage.bytes} bytes of deltas; ${bytes} more would pass the quota of ${this.limits.maxDeltaBytes} (--tenant-max-delta-bytes)`);
  }

  /** A fine-tuning job for `tenant`, whose result will be a delta called `name`. */
  checkJob(tenant: string, name: string): void {
    const active = (this.sources.jobs?.() ?? []).filter((j) => j.organization_id === tenant && (j.status === 'queued' || j.status === 'running')).length;
    refuse(active + 1, this.limits.maxJobs, `tenant '${tenant}' has ${active} fine-tuning jobs queued or running; the quota is ${this.limits.maxJobs} (--tenant-max-jobs)`);
    const usage = this.sources.catalog.usage(tenant);
    if (!this.sources.catalog.get(tenant, name)) refuse(usage.deltas + 1, this.limits.maxDeltas, `tenant '${tenant}' has ${usage.deltas} deltas, so the job's result '${name}' would pass the quota of ${this.limits.maxDeltas} (--tenant-max-deltas)`);
  }

  /** A training file of `bytes` bytes for `tenant`. */
  checkTrainingFile(tenant: string, bytes: number): void {
    const files = (this.sources.files?.() ?? []).filter((f) => f.tenant === tenant);
    refuse(files.length + 1, this.limits.maxTrainingFiles, `tenant '${tenant}' has ${files.length} training files; the quota is ${this.limits.maxTrainingFiles} (--tenant-max-training-files)`);
    const stored = files.reduce((sum, f) => sum + f.bytes, 0);
    refuse(stored + bytes, this.limits.maxTrainingFileBytes, `tenant '${tenant}' stores ${stored} bytes of training files; ${bytes} more would pass the quota of ${this.limits.maxTrainingFileBytes} (--tenant-max-training-file-bytes)`);
  }
}

function refuse(wouldBe: number, limit: number, message: string): void {
  if (limit > 0 && wouldBe > limit) throw new ApiError(429, message, null, 'quota_exceeded');
}
