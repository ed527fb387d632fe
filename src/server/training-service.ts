import path from 'node:path';
import type { ObjectStore } from '../deltas/store/objects.js';
import type { DeltaService } from './delta-service.js';
import type { DeltaLimits } from '../deltas/kind.js';
import type { TrainingBackbone } from '../deltas/training.js';
import type { Engine } from '../engine/client.js';
import type { ArchitectureSpec } from '../model/architecture.js';
import type { Checkpoint } from '../model/checkpoint.js';
import { readCheckpointRows, readCheckpointWeight } from '../model/weight-data.js';
import { ChatTemplate, DEFAULT_CHAT_TEMPLATE } from '../model/chat-template.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { parseTrainingJsonl, type DatasetOptions } from '../training/dataset.js';
import { TrainingFileStore } from '../training/file-store.js';
import { JobManager } from '../training/jobs.js';
import { writeModelDirectory } from '../training/model-result.js';

export interface TrainingSettings {
  maxLength: number;
  microBatchRows: number;
  checkpointEvery: number;
  /** The server's delta limits (and served kinds): a trained delta must fit them to be served. */
  limits: DeltaLimits;
  /** How long a job's lease lasts unrenewed (--job-lease-ms). */
  leaseMs: number;
  /** How long the index of training files is trusted before the store is read again (--catalog-ttl-ms). */
  ttlMs: number;
  /** Where fully fine-tuned models are written, one directory per job (<data-dir>/models). */
  modelsDir: string;
}

/**
 * The training side of the server: uploaded JSONL files (validated by tokenizing every line
 * before anything is stored) and the job manager, whose finished adapters go through the same
 * delta service as uploads, so they are validated, versioned and servable at once. Files, jobs,
 * their events and checkpoints live in `records` (the store's `training` namespace), which every
 * replica shares.
 */
export class TrainingService {
  private constructor(
    readonly files: TrainingFileStore,
    readonly jobs: JobManager,
    private readonly dataset: DatasetOptions,
    readonly arch: ArchitectureSpec,
    readonly settings: TrainingSettings,
    /** The tokenizer and frozen weights kinds initialise from (see TrainingBackbone). */
    readonly backbone: TrainingBackbone,
    /** Positions a sequence may take (the engine's context): virtual tokens plus a training row must fit. */
    readonly context: number,
  ) {}

  static async open(o: { engine: Engine; deltas: DeltaService; records: ObjectStore; checkpoint: Checkpoint; tokenizer: TextTokenizer; chatTemplate: ChatTemplate | null; settings: TrainingSettings; warn?: (message: string) => void }): Promise<TrainingService> {
    const { settings } = o;
    const arch = o.checkpoint.arch;
    const backbone: TrainingBackbone = {
      tokenizer: o.tokenizer,
      weight: (name) => readCheckpointWeight(o.checkpoint, name),
      weightRows: (name, rows) => readCheckpointRows(o.checkpoint, name, rows),
    };
    const context = o.engine.info.maxContext;
    const files = await TrainingFileStore.open(o.records, settings.ttlMs);
    const dataset = { tokenizer: o.tokenizer, chatTemplate: o.chatTemplate ?? new ChatTemplate(DEFAULT_CHAT_TEMPLATE), vocabSize: arch.vocabSize, maxLength: settings.maxLength };
    const jobs = await JobManager.open(o.records, {
      engine: o.engine,
      arch,
      backbone,
      context,
      limits: settings.limits,
      dataset,
      files,
      readDelta: (owner, name, version) => o.deltas.readVersion(owner, name, version),
      publish: async (tenant, name, deltaFiles) => {
        const { version } = await o.deltas.upload(tenant, name, deltaFiles, { public: false });
        return `${tenant}/${name}@${version.version}`;
      },
      publishModel: async (id, modelFiles) => {
        const dir = path.resolve(settings.modelsDir, id);
        writeModelDirectory(o.checkpoint.dir, dir, modelFiles);
        return dir;
      },
      padId: o.tokenizer.padTokenId ?? o.tokenizer.eosTokenIds[0] ?? 0,
      maxLength: settings.maxLength,
      microBatchRows: settings.microBatchRows,
      checkpointEvery: settings.checkpointEvery,
    }, { leaseMs: settings.leaseMs, ...(o.warn ? { warn: o.warn } : {}) });
    return new TrainingService(files, jobs, dataset, arch, settings, backbone, context);
  }

  /** Tokenizes every line; throws the DatasetError of the first bad one. Returns the example count. */
  validate(text: string): number {
    return parseTrainingJsonl(text, this.dataset).length;
  }

  /**
   * The first example of a stored file longer than `room` tokens as it trains (after truncation
   * to --train-max-length): its 1-based line and length; undefined when every row fits.
   *
   * @example await training.firstRowBeyond(fileId, training.context - 20) // { line: 3, tokens: 61 }
   */
  async firstRowBeyond(fileId: string, room: number): Promise<{ line: number; tokens: number } | undefined> {
    const lines = new TextDecoder().decode(await this.files.read(fileId)).replace(/^\uFEFF/, '').split(/\r?\n/);
    for (const [index, source] of lines.entries()) {
      if (source.trim() === '') continue;
      const tokens = parseTrainingJsonl(source, this.dataset)[0]!.inputIds.length;
      if (tokens > room) return { line: index + 1, tokens };
    }
    return undefined;
  }
}
