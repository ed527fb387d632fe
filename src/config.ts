import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';

const DeltaArg = z.string().transform((value, ctx) => {
  const match = /^(?:([A-Za-z0-9_.-]+)\/)?([A-Za-z0-9_.-]+)=(.+)$/.exec(value);
  if (!match) {
    ctx.addIssue({ code: 'custom', message: `expected [TENANT/]NAME=PEFT_DIR, got '${value}'` });
    return z.NEVER;
  }
  return { tenant: match[1], name: match[2]!, dir: match[3]! };
});

const positiveInt = z.coerce.number().int().positive();

/** Every setting, with its default. Flags override DELTASERVE_* variables. */
export const ConfigSchema = z.object({
  model: z.string().optional().describe('Hugging Face model directory; the embedded default model when absent'),
  modelName: z.string().min(1).optional().describe("name clients use for the base model; the model directory's basename"),
  delta: z.array(DeltaArg).default([]).describe('[TENANT/]NAME=PEFT_DIR, repeatable'),
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
  requestTimeoutMs: z.coerce.number().int().min(0).default(300_000).describe('a generation still running this long after it arrived is abandoned (0: never)'),
  threads: positiveInt.optional().describe('ORT intra-op threads; all cores when absent'),
});

export type Config = z.infer<typeof ConfigSchema>;

/** Flag name → environment variable, e.g. maxRows → DELTASERVE_MAX_ROWS. */
export function envName(key: string): string {
  return `DELTASERVE_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/** Reads DELTASERVE_* variables for every setting; DELTASERVE_DELTA takes a comma-separated list. */
export function configFromEnv(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(ConfigSchema.shape)) {
    const value = env[envName(key)];
    if (value === undefined || value === '') continue;
    out[key] = key === 'delta' ? value.split(',').map((s) => s.trim()).filter(Boolean) : value;
  }
  return out;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
