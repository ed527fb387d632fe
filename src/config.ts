import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';

/** Tenant names and delta names: letters, digits, `_`, `.`, `-` (never `/` or `@`, which model references use). */
export const NAME_PATTERN = /^[A-Za-z0-9_.-]+$/;

/** Delta names clients give: 1-64 of those characters, not starting with '.'. */
export const DELTA_NAME_PATTERN = /^(?!\.)[A-Za-z0-9_.-]{1,64}$/;

/** The tenant that owns startup deltas named without a TENANT/ prefix, and every request in open mode. */
export const DEFAULT_TENANT = 'default';

const DeltaArg = z.string().transform((value, ctx) => {
  const match = /^(?:([A-Za-z0-9_.-]+)\/)?([A-Za-z0-9_.-]+)=(.+)$/.exec(value);
  if (!match) {
    ctx.addIssue({ code: 'custom', message: `expected [TENANT/]NAME=PEFT_DIR, got '${value}'` });
    return z.NEVER;
  }
  return { tenant: match[1], name: match[2]!, dir: match[3]! };
});

/** `[TENANT/]NAME` of a startup delta to mark public; no prefix means the default tenant, as for --delta. */
const PublicDeltaArg = z.string().transform((value, ctx) => {
  const match = /^(?:([A-Za-z0-9_.-]+)\/)?([A-Za-z0-9_.-]+)$/.exec(value);
  if (!match) {
    ctx.addIssue({ code: 'custom', message: `expected [TENANT/]NAME, got '${value}'` });
    return z.NEVER;
  }
  return { owner: match[1] ?? DEFAULT_TENANT, name: match[2]! };
});

const positiveInt = z.coerce.number().int().positive();

/** Every setting, with its default. Flags override DELTASERVE_* variables. */
export const ConfigSchema = z.object({
  model: z.string().optional().describe('Hugging Face model directory; the embedded default model when absent'),
  modelName: z.string().min(1).optional().describe("name clients use for the base model; the model directory's basename"),
  delta: z.array(DeltaArg).default([]).describe('[TENANT/]NAME=PEFT_DIR, repeatable; no TENANT/ means the default tenant'),
  publicDeltas: z.array(PublicDeltaArg).default([]).describe('[TENANT/]NAME of a --delta every tenant may use (flag --public-delta, repeatable)'),
  auth: z
    .string()
    .min(1)
    .optional()
    .describe('API keys file (JSON, or YAML for .yaml/.yml) mapping SHA-256 key hashes to tenants, plus admin keys; without it the server runs open (single tenant, loopback only)'),
  port: z.coerce.number().int().min(0).max(65535).default(8000),
  host: z.string().default('127.0.0.1'),
  device: z.enum(['cpu', 'webgpu', 'cuda']).default('cpu'),
  cacheDir: z.string().default(path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'deltaserve')).describe('built graphs and the embedded model'),
  maxRows: positiveInt.default(16).describe('sequences decoded together (KV-cache rows)'),
  maxContext: positiveInt.default(2048).describe('tokens per sequence, prompt + completion'),
  deltaSlots: positiveInt.default(8).describe('deltas resident on the device at once'),
  maxRank: positiveInt.default(16).describe('largest LoRA rank accepted'),
  prefillChunk: positiveInt.default(256).describe('prompt tokens prefilled per scheduler step'),
  maxQueue: positiveInt.default(256).describe('requests waiting before 429'),
  maxBodyBytes: positiveInt.default(4 * 1024 * 1024),
  dataDir: z.string().default(path.join(process.env.XDG_DATA_HOME ?? path.join(os.homedir(), '.local', 'share'), 'deltaserve')).describe('persistent data: the filesystem delta store'),
  store: z.string().optional().describe("where deltas are stored: a directory, or s3://bucket/prefix; '<data-dir>/deltas' when absent"),
  hostCacheBytes: positiveInt.default(2 * 1024 ** 3).describe('host-memory cache of parsed deltas, in bytes (least recently used dropped first)'),
  diskCacheDir: z.string().optional().describe("local disk cache of delta files fetched from an object store; '<cache-dir>/deltas' when absent"),
  maxDeltaBytes: positiveInt.default(256 * 1024 * 1024).describe('largest delta upload (both files together)'),
  maxTrainingFileBytes: positiveInt.default(64 * 1024 * 1024).describe('largest training file upload (JSONL)'),
  requestTimeoutMs: z.coerce.number().int().min(0).default(300_000).describe('a generation still running this long after it arrived is abandoned (0: never)'),
  threads: positiveInt.optional().describe('ORT intra-op threads; all cores when absent'),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('JSON log level (pino)'),
  logPrompts: z.stringbool().default(false).describe('log prompt and completion text at debug level (never by default)'),
  shutdownGraceMs: z.coerce.number().int().min(0).default(30_000).describe('on SIGTERM, how long in-flight requests may finish (readiness turns 503 at once; a training job checkpoints)'),
  trainingShare: z.coerce.number().gt(0).lt(1).default(0.25).describe('largest share of device time a training job takes while requests are being served'),
  trainMicroBatch: positiveInt.default(1).describe('training rows per micro-batch (a step of batch_size rows runs as several, between inference steps)'),
  trainMaxLength: positiveInt.default(512).describe('training rows are truncated to this many tokens'),
  trainCheckpointEvery: positiveInt.default(25).describe('training jobs save a resumable checkpoint every this many steps'),
}).superRefine((config, ctx) => {
  const seen = new Set<string>();
  config.delta.forEach((d, i) => {
    const key = `${d.tenant ?? DEFAULT_TENANT}/${d.name}`;
    if (seen.has(key)) ctx.addIssue({ code: 'custom', path: ['delta', i], message: `delta '${key}' is given twice` });
    seen.add(key);
  });
  config.publicDeltas.forEach((p, i) => {
    const key = `${p.owner}/${p.name}`;
    if (!seen.has(key)) ctx.addIssue({ code: 'custom', path: ['publicDeltas', i], message: `'${key}' is not a --delta (expected [TENANT/]NAME of one)` });
  });
});

export type Config = z.infer<typeof ConfigSchema>;

/** Settings given repeatedly on the command line (and comma-separated in the environment). */
export const LIST_KEYS: ReadonlySet<string> = new Set(['delta', 'publicDeltas']);

/** Flags whose name is not the kebab-case key: a repeatable flag names one item. */
const FLAG_NAMES: Record<string, string> = { publicDeltas: 'public-delta' };

/** Setting → command-line flag (without `--`), e.g. maxRows → max-rows, publicDeltas → public-delta. */
export function flagName(key: string): string {
  return FLAG_NAMES[key] ?? key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** Setting → environment variable, DELTASERVE_<FLAG>: maxRows → DELTASERVE_MAX_ROWS, publicDeltas → DELTASERVE_PUBLIC_DELTA. */
export function envName(key: string): string {
  return `DELTASERVE_${flagName(key).replace(/-/g, '_').toUpperCase()}`;
}

/** Reads DELTASERVE_* variables for every setting; list settings (DELTASERVE_DELTA, DELTASERVE_PUBLIC_DELTA) are comma-separated. */
export function configFromEnv(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(ConfigSchema.shape)) {
    const value = env[envName(key)];
    if (value === undefined || value === '') continue;
    out[key] = LIST_KEYS.has(key) ? value.split(',').map((s) => s.trim()).filter(Boolean) : value;
  }
  return out;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
