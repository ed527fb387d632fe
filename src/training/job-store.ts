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
        const record = JSON.parse(fs.readFileSync(path.join(this.jobDir(id), 'job.json'), 'utf8')) as JobRecord;
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
