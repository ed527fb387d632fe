/**
 * Real processes for the fault tests: deltaserve replicas (bin/deltaserve.mjs), an S3 endpoint
 * (s3rver) in a process that can be killed and started again on the same port, and a TCP proxy
 * that can slow or hold a replica's traffic to it. Every process started here is killed when the
 * test process exits, whatever happened.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FIXTURE, tempDir } from '../helpers.js';

// The SDK warns once per process that its 2027 releases will need Node 22; keep test output clean.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BUCKET = 'faults';
/** s3rver checks signatures against its fixed key pair. */
export const S3_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
export const LORA_DIR = path.join(FIXTURE, 'lora_all_r8');

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/** Kills every process this file started (for `after`). */
export function killAll(): void {
  for (const child of children) child.kill('SIGKILL');
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Replica {
  child: ChildProcess;
  url: string;
  /** Everything it wrote to stdout and stderr so far (JSON log lines and the CLI's own lines). */
  output(): string;
  /** Its JSON log lines so far. */
  logs(): Record<string, unknown>[];
  exited: Promise<Exit>;
}

export interface ReplicaOptions {
  cacheDir: string;
  dataDir: string;
  /** More flags (--store, --shutdown-grace-ms, ...). */
  args?: string[];
  env?: Record<string, string>;
  /** Resolve once /health/ready is 200 (default), or as soon as it listens. */
  waitReady?: boolean;
  /** A command that runs the server in turn, e.g. ['prlimit', '--fsize=60000'] (it must exec it: same pid). */
  wrap?: string[];
}

/** Starts `deltaserve` on the tiny fixture model (one thread, NODE_ENV=test) and waits for it. */
export async function startReplica(o: ReplicaOptions): Promise<Replica> {
  const args = ['--model', path.join(FIXTURE, 'base'), '--model-name', 'tiny', '--port', '0', '--threads', '1', '--max-context', '256', '--cache-dir', o.cacheDir, '--data-dir', o.dataDir, ...(o.args ?? [])];
  const command = [...(o.wrap ?? []), process.execPath, path.join(ROOT, 'bin', 'deltaserve.mjs'), ...args];
  const child = spawn(command[0]!, command.slice(1), { env: { ...process.env, NODE_ENV: 'test', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', ...o.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<Exit>((resolve) => child.once('exit', (code, signal) => (children.delete(child), resolve({ code, signal }))));
  let gone: Exit | undefined;
  void exited.then((exit) => (gone = exit));
  await waitFor(() => gone !== undefined || /listening on http/.test(output), 60_000, () => `deltaserve did not listen within 60 s:\n${output}`);
  if (gone) throw new Error(`deltaserve exited (${JSON.stringify(gone)}) before listening:\n${output}`);
  const url = /listening on (http:\/\/\S+)/.exec(output)![1]!;
  const replica: Replica = {
    child,
    url,
    output: () => output,
    logs: () => output.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>),
    exited,
  };
  if (o.waitReady ?? true) {
    await waitFor(async () => gone !== undefined || (await fetch(`${url}/health/ready`)).status === 200, 60_000, () => `not ready within 60 s:\n${output}`);
    if (gone) throw new Error(`deltaserve exited (${JSON.stringify(gone)}) before it was ready:\n${output}`);
  }
  return replica;
}

/** Polls `check` every 25 ms until it is true; throws `message()` after `timeoutMs`. */
export async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs: number, message: () => string): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await Promise.resolve().then(check).catch(() => false)) return;
    if (Date.now() > until) throw new Error(message());
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** s3rver in a child process; stop() is a SIGKILL (an endpoint that vanishes), start() brings it back on the same port. */
export class S3Process {
  readonly directory = tempDir('deltaserve-faults-s3-');
  port = 0;
  private child?: ChildProcess;

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The AWS_* variables a replica needs to reach it (directly, or through `endpoint`). */
  env(endpoint = this.endpoint): Record<string, string> {
    return { AWS_ENDPOINT_URL_S3: endpoint, AWS_S3_FORCE_PATH_STYLE: 'true', AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: S3_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: S3_CREDENTIALS.secretAccessKey };
  }

  async start(): Promise<void> {
    const child = spawn(process.execPath, [path.join(ROOT, 'test', 'faults', 's3rver-process.mjs'), String(this.port), this.directory, BUCKET], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.add(child);
    child.once('exit', () => children.delete(child));
    this.child = child;
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes('\n')) resolve(out.split('\n')[0]!);
      });
      child.once('exit', (code) => reject(new Error(`s3rver exited with ${code}`)));
    });
    this.port = (JSON.parse(line) as { port: number }).port;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await gone;
  }
}

/**
 * A TCP proxy in front of the S3 endpoint. `delayMs` holds every chunk that long in each
 * direction (a slow store); `holdWhen(pattern)` resolves when a request whose bytes match
 * `pattern` starts, and from then on forwards nothing more of that connection (a stalled upload).
 */
export class StoreProxy {
  delayMs = 0;
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private hold?: { pattern: RegExp; seen: () => void };

  constructor(private readonly target: () => number) {
    this.server = net.createServer((client) => this.connect(client));
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  holdWhen(pattern: RegExp): Promise<void> {
    return new Promise((seen) => (this.hold = { pattern, seen }));
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private connect(client: net.Socket): void {
    const upstream = net.connect(this.target(), '127.0.0.1');
    let held = false;
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => (client.destroy(), upstream.destroy()));
    }
    const forward = (from: net.Socket, to: net.Socket, inspect: boolean) =>
      from.on('data', (chunk: Buffer) => {
        if (inspect && this.hold && this.hold.pattern.test(chunk.toString('latin1'))) {
          held = true;
          this.hold.seen();
          this.hold = undefined;
        }
        if (held) return;
        if (this.delayMs > 0) setTimeout(() => to.writable && to.write(chunk), this.delayMs);
        else to.write(chunk);
      });
    forward(client, upstream, true);
    forward(upstream, client, false);
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
  }
}

/**
 * The fixture LoRA's weights with the lowest byte of its first float XORed with `n` (1..255):
 * the same shapes, a different digest, so that deltas uploaded with different `n` share no
 * disk-tier entry (that tier is keyed by digest).
 */
export function variantWeights(n: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(fs.readFileSync(path.join(LORA_DIR, 'adapter_model.safetensors')));
  const dataStart = 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true));
  bytes[dataStart] = bytes[dataStart]! ^ n;
  return bytes;
}

/** A multipart upload of the fixture LoRA (or other weights) as `name`. */
export function deltaForm(name: string, weights?: Uint8Array<ArrayBuffer>): FormData {
  const form = new FormData();
  form.set('name', name);
  form.set('adapter_config', new Blob([fs.readFileSync(path.join(LORA_DIR, 'adapter_config.json'))]), 'adapter_config.json');
  form.set('adapter_model', new Blob([weights ?? fs.readFileSync(path.join(LORA_DIR, 'adapter_model.safetensors'))]), 'adapter_model.safetensors');
  return form;
}

export type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

/** One HTTP call to a replica, its JSON (or text) and headers. */
export async function call(url: string, method: string, route: string, body?: unknown): Promise<{ status: number; json: Json; headers: Headers; ms: number }> {
  const init: RequestInit = { method };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) Object.assign(init, { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const started = performance.now();
  const res = await fetch(`${url}${route}`, init);
  const text = await res.text();
  let json: Json = text;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON (an SSE stream, a file)
  }
  return { status: res.status, json, headers: res.headers, ms: performance.now() - started };
}

/** A short greedy completion of `model`. */
export function complete(url: string, model: string, maxTokens = 4): ReturnType<typeof call> {
  return call(url, 'POST', '/v1/completions', { model, prompt: [1, 2, 3, 4], max_tokens: maxTokens, temperature: 0 });
}

/** A streamed completion as it arrives: its `data:` payloads, and when the first one came. */
export interface OpenStream {
  status: number;
  /** Every `data:` payload so far (`[DONE]` included). */
  events: string[];
  /** Resolves with the first payload. */
  first: Promise<string>;
  /** Resolves when the response ends (or the connection is cut: `cut` then says so). */
  ended: Promise<{ cut: boolean }>;
}

/**
 * Starts a streamed greedy completion of `maxTokens` (greedy on this prompt never meets EOS, so
 * it runs to the end) and reads it in the background.
 */
export async function openStream(url: string, model: string, maxTokens: number): Promise<OpenStream> {
  const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, prompt: [1, 2, 3, 4], max_tokens: maxTokens, temperature: 0, stream: true }) });
  const events: string[] = [];
  let gotFirst: (payload: string) => void = () => undefined;
  const first = new Promise<string>((resolve) => (gotFirst = resolve));
  const ended = (async () => {
    let buffer = '';
    try {
      for await (const chunk of res.body!.pipeThrough(new TextDecoderStream())) {
        buffer += chunk;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const data = buffer.slice(0, end).split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
          buffer = buffer.slice(end + 2);
          if (!data) continue;
          events.push(data);
          if (events.length === 1) gotFirst(data);
        }
      }
      return { cut: false };
    } catch {
      return { cut: true };
    }
  })();
  return { status: res.status, events, first, ended };
}
