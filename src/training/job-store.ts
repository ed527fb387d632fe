import fs from 'node:fs';
import path from 'node:path';
import type { FineTuneSpec, FineTuningJob, JobEvent } from './job-types.js';

/** What is persisted per job: the public object and the request it came from. */
export interface JobRecord {
  job: FineTuningJob;
  spec: FineTuneSpec;
}

/**
 * Jobs on disk, one directory each: `job.json` (rewritten atomically on every change),
 * `events.jsonl` (appended) and `checkpoint/` (the trainer state). A restart reads them back.
 */
export class JobStore {
  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
  }

  jobDir(id: string): string {
    return path.join(this.dir, id);
  }

  checkpointDir(id: string): string {
    return path.join(this.jobDir(id), 'checkpoint');
  }

  save(record: JobRecord): void {
    const dir = this.jobDir(record.job.id);
    fs.mkdirSync(dir, { recursive: true });
    const target = path.join(dir, 'job.json');
    const temp = `${target}.tmp-${process.pid}`;
    fs.writeFileSync(temp, JSON.stringify(record, null, 2));
    fs.renameSync(temp, target);
  }

  appendEvent(id: string, event: JobEvent): void {
    fs.appendFileSync(path.join(this.jobDir(id), 'events.jsonl'), `${JSON.stringify(event)}\n`);
  }

  /** Every stored job with its events, oldest first; unreadable entries are skipped with a warning. */
  loadAll(warn: (message: string) => void): { record: JobRecord; events: JobEvent[] }[] {
    const out: { record: JobRecord; events: JobEvent[] }[] = [];
    for (const id of fs.readdirSync(this.dir)) {
      try {
        const record = upgradeRecord(JSON.parse(fs.readFileSync(path.join(this.jobDir(id), 'job.json'), 'utf8')) as JobRecord);
        const eventsFile = path.join(this.jobDir(id), 'events.jsonl');
        const lines = fs.existsSync(eventsFile) ? fs.readFileSync(eventsFile, 'utf8').split('\n').filter(Boolean) : [];
        // A crash can cut the last line short; the events before it are still good.
        const events = lines.flatMap((line) => {
          try {
            return [JSON.parse(line) as JobEvent];
          } catch {
            return [];
          }
        });
        out.push({ record, events });
      } catch (err) {
        warn(`skipping training job ${id}: ${(err as Error).message.slice(0, 200)}`);
      }
    }
    return out.sort((a, b) => a.record.job.created_at - b.record.job.created_at || a.record.job.id.localeCompare(b.record.job.id));
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
