/**
 * The default model's recipe: a Llama of a chosen size, initialised as transformers does, trained
 * from scratch on the KJV with the project's own trainer (full-parameter training, `init:
 * 'random'`, through the engine exactly as a fine-tuning job runs), evaluated on the held-out
 * chapters in bits per byte, and written as a Hugging Face directory in F16.
 *
 * Deterministic for a given machine: the weights' seed, the step order (a seeded shuffle per
 * epoch) and the step count are fixed; only timings vary.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startEngine, type Engine } from '../engine/client.js';
import { freshTrainerState, type AdamWHyperparameters } from '../engine/trainer-state.js';
import '../deltas/kinds/index.js';
import { backboneParams, fullTraining } from '../deltas/kinds/full-training.js';
import '../model/families/index.js';
import type { ArchitectureSpec } from '../model/architecture.js';
import { openCheckpoint } from '../model/checkpoint.js';
import { describeArchitecture } from '../model/families/registry.js';
import { generationConfig, llamaConfig, type ModelShape, type SpecialIds } from '../model/llama-config.js';
import { encodeSafetensors, float32ToF16 } from '../model/safetensors.js';
import { TextTokenizer } from '../model/tokenizer.js';
import { readCheckpointRows, readCheckpointWeight } from '../model/weight-data.js';
import { microBatches, stepExamples } from '../training/batches.js';
import type { TrainingExample } from '../training/dataset.js';
import { learningRate } from '../training/schedule.js';
import { bitsPerByte, utf8Bytes } from './bits-per-byte.js';
import { parameterCount } from './model-shapes.js';
import { lineUnits, packUnits, targetTokens } from './windows.js';

export interface PretrainOptions {
  /** A prepared corpus (`npm run corpus`): kjv/train.txt, kjv/heldout.txt, tokenizer/. */
  corpusDir: string;
  /** The model directory to write (replaced whole). */
  outDir: string;
  size: string;
  shape: ModelShape;
  steps: number;
  /** Rows per optimiser step, run as micro-batches of `microRows`. */
  rowsPerStep: number;
  microRows: number;
  seqLen: number;
  lr: number;
  warmup: number;
  weightDecay: number;
  seed: number;
  /** Held-out evaluation every this many steps (and at the end). */
  evalEvery: number;
  threads?: number;
  log?: (line: string) => void;
}

export interface CurvePoint {
  step: number;
  seconds: number;
  trainLoss: number;
  heldoutBitsPerByte?: number;
}

export interface PretrainReport {
  size: string;
  shape: ModelShape;
  parameters: number;
  vocab: number;
  seqLen: number;
  steps: number;
  rowsPerStep: number;
  lr: number;
  warmup: number;
  weightDecay: number;
  seed: number;
  trainTokensPerEpoch: number;
  tokensSeen: number;
  epochs: number;
  trainSeconds: number;
  tokensPerSecond: number;
  heldoutBytes: number;
  /** The trainer's float32 weights, and the F16 weights written. */
  heldoutBitsPerByte: number;
  heldoutBitsPerByteF16: number;
  weightsBytes: number;
  machine: string;
  curve: CurvePoint[];
}

/** Text and tokenizer read from the corpus, as training rows. */
interface Prepared {
  tokenizer: TextTokenizer;
  ids: SpecialIds;
  train: TrainingExample[];
  heldout: TrainingExample[];
  heldoutBytes: number;
}

function prepare(o: PretrainOptions): Prepared {
  const tokenizer = TextTokenizer.fromDirectory(path.join(o.corpusDir, 'tokenizer'));
  const id = (token: string) => {
    const value = tokenizer.tokenId(token);
    if (value === undefined) throw new Error(`${o.corpusDir}/tokenizer: no token ${token}`);
    return value;
  };
  const ids = { endOfText: id('<|endoftext|>'), imEnd: id('<|im_end|>') };
  const rows = (file: string) => {
    const text = fs.readFileSync(path.join(o.corpusDir, 'kjv', file), 'utf8');
    const units = lineUnits(text).map((u) => tokenizer.encode(u, { addSpecialTokens: false }));
    return { rows: packUnits(units, o.seqLen, ids.endOfText), bytes: utf8Bytes(text) };
  };
  const train = rows('train.txt');
  const heldout = rows('heldout.txt');
  return { tokenizer, ids, train: train.rows, heldout: heldout.rows, heldoutBytes: heldout.bytes };
}

/** Full training ignores the delta limits (they bound a delta's rank and length, not a model). */
const NO_DELTA_LIMITS = { maxRank: 0, maxVirtualTokens: 0, maxBottleneck: 0 };

function jsonText(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** A model directory: config, generation config, the corpus's tokenizer files and the weights. */
function writeModelDir(dir: string, o: PretrainOptions, p: Prepared, config: Record<string, unknown>, weights: Uint8Array): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), jsonText(config));
  fs.writeFileSync(path.join(dir, 'generation_config.json'), jsonText(generationConfig(p.ids)));
  for (const file of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(o.corpusDir, 'tokenizer', file), path.join(dir, file));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), weights);
}

/** The weights as safetensors under the checkpoint's names: F32 for the trainer's start, F16 as committed. */
function encodeWeights(params: Map<string, Float32Array>, arch: ArchitectureSpec, dtype: 'F32' | 'F16'): Uint8Array {
  const tensors = backboneParams(arch).map(({ name, shape }) => {
    const data = params.get(name)!;
    return [name, { dtype, shape, data: dtype === 'F16' ? float32ToF16(data) : data }] as const;
  });
  return encodeSafetensors(Object.fromEntries(tensors), { format: 'pt' });
}

/** An engine over `modelDir` for training only: one serving row, nothing stored. */
function trainingEngine(modelDir: string, scratch: string, o: PretrainOptions): Promise<Engine> {
  return startEngine({
    modelDir,
    cacheDir: path.join(scratch, 'cache'),
    device: 'cpu',
    maxRows: 1,
    maxContext: o.seqLen,
    deltaSlots: 1,
    maxRank: 8,
    maxVirtualTokens: 8,
    maxBottleneck: 8,
    prefillChunk: o.seqLen,
    maxQueue: 1,
    threads: o.threads,
    store: path.join(scratch, 'store'),
    hostCacheBytes: 2 ** 20,
    diskCacheDir: path.join(scratch, 'disk'),
    diskCacheMaxBytes: 2 ** 30,
    trainingShare: 1,
  });
}

/** Held-out bits per byte of the job's current weights. */
async function heldoutBitsPerByte(engine: Engine, jobId: string, p: Prepared, o: PretrainOptions): Promise<number> {
  const { batches } = microBatches(p.heldout, o.microRows, o.seqLen, p.ids.endOfText);
  const meanNats = await engine.trainEvaluate(jobId, batches);
  return bitsPerByte(meanNats * targetTokens(p.heldout), p.heldoutBytes);
}

/**
 * Trains and writes the model; returns what the run measured (also written as pretrain.json
 * beside the weights).
 */
export async function pretrain(o: PretrainOptions): Promise<PretrainReport> {
  const log = o.log ?? (() => undefined);
  if (o.rowsPerStep % o.microRows) throw new RangeError(`rowsPerStep ${o.rowsPerStep} must be a multiple of microRows ${o.microRows}`);
  const p = prepare(o);
  const vocab = p.tokenizer.vocabSize;
  const config = llamaConfig(o.shape, vocab, p.ids, o.seqLen);
  const arch = describeArchitecture(config, new Set(['model.embed_tokens.weight']), 'config.json');
  const parameters = parameterCount(o.shape, vocab);
  const trainTokens = targetTokens(p.train);
  log(`size ${o.size}: ${parameters.toLocaleString('en')} parameters; ${p.train.length} training rows (${trainTokens.toLocaleString('en')} target tokens per epoch), ${p.heldout.length} held-out rows`);

  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-pretrain-'));
  try {
    const resolved = fullTraining.resolve(arch, { init: 'random' }, NO_DELTA_LIMITS);
    const start = fullTraining.init(arch, resolved, o.seed);
    const startDir = path.join(scratch, 'start');
    writeModelDir(startDir, o, p, config, encodeWeights(start, arch, 'F32'));

    const engine = await trainingEngine(startDir, scratch, o);
    const jobId = 'pretrain';
    let final: Map<string, Float32Array>;
    const curve: CurvePoint[] = [];
    let tokensSeen = 0;
    let trainMs = 0;
    try {
      await engine.trainBegin({ jobId, kind: 'full', options: resolved, rows: o.microRows, seqLen: o.seqLen, state: freshTrainerState(start) });
      for (let step = 0; step < o.steps; step++) {
        const examples = stepExamples(p.train.length, o.rowsPerStep, o.seed, step).map((i) => p.train[i]!);
        const { batches } = microBatches(examples, o.microRows, o.seqLen, p.ids.endOfText);
        const hyper: AdamWHyperparameters = { lr: learningRate({ base: o.lr, step, total: o.steps, warmup: o.warmup, kind: 'cosine' }), beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: o.weightDecay, maxGradNorm: 1 };
        const started = performance.now();
        const result = await engine.trainStep(jobId, batches, hyper);
        trainMs += performance.now() - started;
        tokensSeen += targetTokens(examples);
        const done = step + 1;
        if (done % o.evalEvery === 0 || done === o.steps || done === 1) {
          const point: CurvePoint = { step: done, seconds: trainMs / 1000, trainLoss: result.loss, heldoutBitsPerByte: await heldoutBitsPerByte(engine, jobId, p, o) };
          curve.push(point);
          log(`step ${done}/${o.steps}  loss ${result.loss.toFixed(3)}  held-out ${point.heldoutBitsPerByte!.toFixed(3)} bits/byte  ${(tokensSeen / (trainMs / 1000)).toFixed(0)} tokens/s  ${(trainMs / 1000).toFixed(0)} s`);
        }
      }
      final = (await engine.trainEnd(jobId)).params;
    } finally {
      await engine.close();
    }

    const weights = encodeWeights(final, arch, 'F16');
    const parent = path.dirname(path.resolve(o.outDir));
    fs.mkdirSync(parent, { recursive: true });
    const written = fs.mkdtempSync(path.join(parent, `.${path.basename(o.outDir)}.tmp-`));
    fs.chmodSync(written, 0o755); // mkdtemp's 0700 would keep the model from a server running as another user
    writeModelDir(written, o, p, { ...config, dtype: 'float16', torch_dtype: 'float16' }, weights);
    const f16 = await evaluateModel(written, scratch, o, p, arch);
    const report: PretrainReport = {
      size: o.size,
      shape: o.shape,
      parameters,
      vocab,
      seqLen: o.seqLen,
      steps: o.steps,
      rowsPerStep: o.rowsPerStep,
      lr: o.lr,
      warmup: o.warmup,
      weightDecay: o.weightDecay,
      seed: o.seed,
      trainTokensPerEpoch: trainTokens,
      tokensSeen,
      epochs: tokensSeen / trainTokens,
      trainSeconds: trainMs / 1000,
      tokensPerSecond: tokensSeen / (trainMs / 1000),
      heldoutBytes: p.heldoutBytes,
      heldoutBitsPerByte: curve[curve.length - 1]!.heldoutBitsPerByte!,
      heldoutBitsPerByteF16: f16,
      weightsBytes: weights.byteLength,
      machine: `${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown'}, node ${process.version}`,
      curve,
    };
    fs.writeFileSync(path.join(written, 'pretrain.json'), jsonText(report));
    fs.rmSync(o.outDir, { recursive: true, force: true });
    fs.renameSync(written, o.outDir);
    return report;
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** Held-out bits per byte of a written model, read back as the server reads it (F16 widened). */
async function evaluateModel(modelDir: string, scratch: string, o: PretrainOptions, p: Prepared, arch: ArchitectureSpec): Promise<number> {
  const engine = await trainingEngine(modelDir, path.join(scratch, 'eval'), o);
  try {
    const resolved = fullTraining.resolve(arch, { init: 'base' }, NO_DELTA_LIMITS);
    const ckpt = openCheckpoint(modelDir);
    const params = fullTraining.init(arch, resolved, o.seed, { weight: (name) => readCheckpointWeight(ckpt, name), weightRows: (name, rows) => readCheckpointRows(ckpt, name, rows) });
    await engine.trainBegin({ jobId: 'eval', kind: 'full', options: resolved, rows: o.microRows, seqLen: o.seqLen, state: freshTrainerState(params) });
    const bpb = await heldoutBitsPerByte(engine, 'eval', p, o);
    await engine.trainEnd('eval');
    return bpb;
  } finally {
    await engine.close();
  }
}
