import path from 'node:path';
import type { DeltaService } from './delta-service.js';
import type { DeltaLimits } from '../deltas/kind.js';
import type { Engine } from '../engine/client.js';
import type { ArchitectureSpec } from '../model/architecture.js';
import { ChatTemplate, DEFAULT_CHAT_TEMPLATE } from '../model/chat-template.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { parseTrainingJsonl, type DatasetOptions } from '../training/dataset.js';
import { TrainingFileStore } from '../training/file-store.js';
import { JobManager } from '../training/jobs.js';

export interface TrainingSettings {
  dataDir: string;
  maxLength: number;
  microBatchRows: number;
  checkpointEvery: number;
  /** The server's delta limits (and served kinds): a trained delta must fit them to be served. */
  limits: DeltaLimits;
}

/**
 * The training side of the server: uploaded JSONL files (validated by tokenizing every line
 * before anything is stored) and the job manager, whose finished adapters go through the same
 * delta service as uploads, so they are validated, versioned and servable at once.
 */
export class TrainingService {
  private constructor(
    readonly files: TrainingFileStore,
    readonly jobs: JobManager,
    private readonly dataset: DatasetOptions,
    readonly arch: ArchitectureSpec,
    readonly settings: TrainingSettings,
  ) {}

  static async open(o: { engine: Engine; deltas: DeltaService; arch: ArchitectureSpec; tokenizer: TextTokenizer; chatTemplate: ChatTemplate | null; settings: TrainingSettings }): Promise<TrainingService> {
    const { settings } = o;
    const files = await TrainingFileStore.open(path.join(settings.dataDir, 'training', 'files'));
    const dataset = { tokenizer: o.tokenizer, chatTemplate: o.chatTemplate ?? new ChatTemplate(DEFAULT_CHAT_TEMPLATE), vocabSize: o.arch.vocabSize, maxLength: settings.maxLength };
    const jobs = JobManager.open(path.join(settings.dataDir, 'training', 'jobs'), {
      engine: o.engine,
      arch: o.arch,
      limits: settings.limits,
      dataset,
      files,
      readDelta: (owner, name, version) => o.deltas.readVersion(owner, name, version),
      publish: async (tenant, name, deltaFiles) => {
        const { version } = await o.deltas.upload(tenant, name, deltaFiles, { public: false });
        return `${tenant}/${name}@${version.version}`;
      },
      padId: o.tokenizer.padTokenId ?? o.tokenizer.eosTokenIds[0] ?? 0,
      maxLength: settings.maxLength,
      microBatchRows: settings.microBatchRows,
      checkpointEvery: settings.checkpointEvery,
    });
    return new TrainingService(files, jobs, dataset, o.arch, settings);
  }

  /** Tokenizes every line; throws the DatasetError of the first bad one. Returns the example count. */
  validate(text: string): number {
    return parseTrainingJsonl(text, this.dataset).length;
  }
}
