import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { DEFAULT_TENANT, parseDeltaRef } from './deltas/ref.js';
import { deltaKinds } from './deltas/kind.js';
import './deltas/kinds/index.js';


/** `[TENANT/]NAME` (no version): a startup delta's owner and name, or the reason it is not one. */
function startupRef(text: string): { owner?: string; name: string } | string {
  const parsed = parseDeltaRef(text);
  if (!parsed.ok) return `expected [TENANT/]NAME, got '${text}' (it ${parsed.problem})`;
  if (parsed.ref.version !== undefined) return `expected [TENANT/]NAME, got '${text}' (a startup delta takes no @version)`;
  return parsed.ref;
}

const DeltaArg = z.string().transform((value, ctx) => {
  const eq = value.indexOf('=');
  const ref = eq > 0 ? startupRef(value.slice(0, eq)) : `expected [TENANT/]NAME=PEFT_DIR, got '${value}'`;
  if (typeof ref === 'string' || eq === value.length - 1) {
    ctx.addIssue({ code: 'custom', message: typeof ref === 'string' ? ref : `expected [TENANT/]NAME=PEFT_DIR, got '${value}'` });
    return z.NEVER;
  }
  return { tenant: ref.owner, name: ref.name, dir: value.slice(eq + 1) };
});

/** `[TENANT/]NAME` of a startup delta to mark public; no prefix means the default tenant, as for --delta. */
const PublicDeltaArg = z.string().transform((value, ctx) => {
  const ref = startupRef(value);
  if (typeof ref === 'string') {
    ctx.addIssue({ code: 'custom', message: ref });
    return z.NEVER;
  }
  return { owner: ref.owner ?? DEFAULT_TENANT, name: ref.name };
});

const positiveInt = z.coerce.number().int().positive();
/** A limit where 0 means unlimited. */
const limit = z.coerce.number().int().min(0);

/** Every setting, with its default. Flags override DELTASERVE_* variables. */
export const ConfigSchema = z.object({
  model: z.string().optional().describe('Hugging Face model directory; the pretrained default (models/deltaserve-kjv) when absent'),
  modelName: z.string().min(1).optional().describe("name clients use for the base model; the model directory's basename"),
  delta: z.array(DeltaArg).default([]).describe('[TENANT/]NAME=PEFT_DIR, repeatable; no TENANT/ means the default tenant'),
  publicDeltas: z.array(PublicDeltaArg).default([]).describe('[TENANT/]NAME of a --delta every tenant may use (flag --public-delta, repeatable)'),
  auth: z
    .string()
    .min(1)
    .optional()
    .describe('API keys file (JSON, or YAML for .yaml/.yml) mapping SHA-256 key hashes to tenants, plus admin keys; without it the server runs open (single tenant, loopback only)'),
  publicMetrics: z.stringbool().default(false).describe('with --auth, serve GET /metrics without a key, listing only public deltas (otherwise it needs a metrics or admin key)'),
  port: z.coerce.number().int().min(0).max(65535).default(8000).describe('HTTP port (0 picks a free one)'),
  host: z.string().default('127.0.0.1').describe('bind address; only loopback addresses without an auth file'),
  device: z.enum(['cpu', 'webgpu', 'cuda']).default('cpu').describe('ONNX Runtime execution provider: cpu, webgpu (Vulkan) or cuda (installed with ONNXRUNTIME_NODE_INSTALL=cuda12)'),
  cacheDir: z.string().default(path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'deltaserve')).describe('built graphs'),
  maxRows: positiveInt.default(16).describe('sequences decoded together (KV-cache rows)'),
  maxContext: positiveInt.default(2048).describe('tokens per sequence, prompt + completion'),
  deltaSlots: positiveInt.default(8).describe('deltas resident on the device at once'),
  maxRank: positiveInt.default(16).describe('largest LoRA rank accepted'),
  maxVirtualTokens: positiveInt.default(64).describe('most virtual tokens a prompt- or prefix-tuning delta may add'),
  maxBottleneck: positiveInt.default(64).describe('widest bottleneck (down-projection size) an adapter may have'),
  deltaKinds: z.string().optional().transform((v, ctx) => {
    if (v === undefined) return undefined;
    const names = v.split(',').map((s) => s.trim()).filter(Boolean);
    const known = deltaKinds().map((k) => k.name);
    const unknown = names.filter((n) => !known.includes(n));
    if (unknown.length || !names.length) ctx.addIssue({ code: 'custom', message: `expected a comma-separated list of ${known.join(', ')}; got '${v}'` });
    return names;
  }).describe('delta kinds to serve, comma-separated (default: all); each enabled kind adds its graph hooks to every pass'),
  prefillChunk: positiveInt.default(256).describe('prompt tokens prefilled per scheduler step'),
  maxQueue: positiveInt.default(256).describe('requests waiting before 429'),
  maxBodyBytes: positiveInt.default(4 * 1024 * 1024).describe('largest JSON request body (413 above it)'),
  dataDir: z.string().default(path.join(process.env.XDG_DATA_HOME ?? path.join(os.homedir(), '.local', 'share'), 'deltaserve')).describe('persistent data: the filesystem delta store'),
  store: z.string().optional().describe("where deltas are stored: a directory, or s3://bucket/prefix; '<data-dir>/deltas' when absent"),
  controlDb: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'expected postgres://user:password@host:port/database')
    .optional()
    .describe('PostgreSQL URL of a claims table that lets several replicas share an s3:// store whose server ignores conditional writes (If-None-Match); not needed for a directory store or for AWS S3, MinIO or R2'),
  catalogTtlMs: z.coerce.number().int().min(0).default(1000).describe("how long this replica trusts its cached view of a delta before reading the store again: the bound on how stale 'name' (latest) and deletes made through other replicas can be (0: read the store on every request)"),
  jobLeaseMs: z.coerce.number().int().min(200).default(15_000).describe('a running fine-tuning job is leased to one replica for this long, renewed by it; another replica takes the job over from its last checkpoint once a lease expires unrenewed'),
  hostCacheBytes: positiveInt.default(2 * 1024 ** 3).describe('host-memory cache of parsed deltas, in bytes (least recently used dropped first)'),
  storeTimeoutMs: positiveInt.default(10_000).describe('deadline of each request to an s3:// delta store, its body included; past it the call fails as unavailable (503 with Retry-After)'),
  diskCacheDir: z.string().optional().describe("local disk cache of delta files fetched from an object store; '<cache-dir>/deltas' when absent"),
  diskCacheMaxBytes: positiveInt.default(10 * 1024 ** 3).describe('bound of the disk cache of delta files, in bytes (least recently used versions removed first; the one just fetched is kept even if larger)'),
  maxDeltaBytes: positiveInt.default(256 * 1024 * 1024).describe('largest delta upload (both files together)'),
  maxTrainingFileBytes: positiveInt.default(64 * 1024 * 1024).describe('largest training file upload (JSONL)'),
  requestTimeoutMs: z.coerce.number().int().min(0).default(300_000).describe('a generation still running this long after it arrived is abandoned (0: never)'),
  threads: positiveInt.optional().describe('ORT intra-op threads; all cores when absent'),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('JSON log level (pino)'),
  logPrompts: z.stringbool().default(false).describe("add the prompt text to each request's generation log line (off by default)"),
  shutdownGraceMs: z.coerce.number().int().min(0).default(30_000).describe('on SIGTERM, how long in-flight requests may finish (readiness turns 503 at once; a training job checkpoints)'),
  trainingShare: z.coerce.number().gt(0).lt(1).default(0.25).describe('largest share of device time a training job takes while requests are being served'),
  trainMicroBatch: positiveInt.default(1).describe('training rows per micro-batch (a step of batch_size rows runs as several, between inference steps)'),
  trainMaxLength: positiveInt.default(512).describe('training rows are truncated to this many tokens'),
  fullTrainingMaxBytes: positiveInt.optional().describe("largest training state a full fine-tuning job (method.type 'full') may need, estimated as parameters × 80 bytes (as measured: weights, gradients and two AdamW moments in float32 are 16 of them; the step's outputs and activations the rest); larger models are refused at job creation (default: half this machine's memory)"),
  trainCheckpointEvery: positiveInt.default(25).describe('training jobs save a resumable checkpoint every this many steps'),
  tenantRequestsPerSecond: z.coerce.number().min(0).default(20).describe('generation requests per second per tenant (token bucket; 0: unlimited); over it 429 with Retry-After'),
  tenantRequestBurst: positiveInt.default(40).describe('requests a tenant may make at once before --tenant-requests-per-second applies'),
  tenantTokensPerSecond: z.coerce.number().min(0).default(0).describe('generated tokens per second per tenant (token bucket; 0: unlimited)'),
  tenantTokenBurst: positiveInt.default(4096).describe('tokens a tenant may generate at once before --tenant-tokens-per-second applies'),
  tenantMaxConcurrent: limit.default(64).describe('generation choices (prompts × n) one tenant may have queued or running at once (0: unlimited)'),
  tenantMaxDeltas: limit.default(100).describe('deltas one tenant may store (0: unlimited)'),
  tenantMaxDeltaBytes: limit.default(2 * 1024 ** 3).describe('bytes of delta files (all versions) one tenant may store (0: unlimited)'),
  tenantMaxJobs: limit.default(4).describe('fine-tuning jobs one tenant may have queued or running (0: unlimited)'),
  tenantMaxTrainingFiles: limit.default(100).describe('training files one tenant may store (0: unlimited)'),
  tenantMaxTrainingFileBytes: limit.default(1024 ** 3).describe('bytes of training files one tenant may store (0: unlimited)'),
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
