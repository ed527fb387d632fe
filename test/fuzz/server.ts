/**
 * One real server for the HTTP fuzz suites, and the checks every fuzzed request gets: it
 * finishes (a guard turns a hang into a failure naming the request), its status is below 500,
 * and a refusal is OpenAI's error shape and nothing else. Plus the state checks the suites run
 * after refusals: deltas and versions as the test made them, no staging or spool leftovers.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { ConfigSchema } from '../../src/config.js';
import { hashKey } from '../../src/server/auth.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { FIXTURE, tempDir } from '../helpers.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

export const KEYS = { acme: 'sk-acme-1', globex: 'sk-globex-2', admin: 'sk-admin-3' } as const;
export const MODEL = 'tiny-llama';

/**
 * How long one request may take before it counts as hung. Far above any request here (the
 * slowest, a small generation, takes milliseconds); it only turns a hang into a message.
 */
const HANG_MS = 30_000;

export interface FuzzServer {
  server: RunningServer;
  url: string;
  dataDir: string;
}

/** The fixture model behind an auth file (acme, globex, an admin key), with no request rate limit and roomy quotas. */
export async function startFuzzServer(): Promise<FuzzServer> {
  const dir = tempDir('deltaserve-fuzz-');
  const auth = path.join(dir, 'keys.json');
  fs.writeFileSync(auth, JSON.stringify({ tenants: { acme: { keys: [hashKey(KEYS.acme)] }, globex: { keys: [hashKey(KEYS.globex)] } }, admin_keys: [hashKey(KEYS.admin)] }));
  const dataDir = path.join(dir, 'data');
  const config = ConfigSchema.parse({
    model: path.join(FIXTURE, 'base'), modelName: MODEL, port: 0, cacheDir: path.join(dir, 'cache'), dataDir, auth,
    maxRows: 4, maxContext: 64, threads: 1, maxRank: 8, maxDeltaBytes: 200_000, maxTrainingFileBytes: 200_000,
    // The fuzzer sends thousands of requests a minute; rate limits and quotas would refuse it, not the server.
    tenantRequestsPerSecond: 0, tenantMaxDeltas: 1000, tenantMaxJobs: 0, tenantMaxTrainingFiles: 1000,
  });
  const server = await startServer(config, { logger: createLogger({ level: 'silent' }) });
  await server.ready;
  return { server, url: server.url, dataDir };
}

export interface Reply {
  status: number;
  text: string;
  json: Json;
  headers: Headers;
}

export interface Probe {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array | FormData;
}

const label = (p: Probe) => `${p.method} ${p.path.length > 200 ? `${p.path.slice(0, 200)}…` : p.path}`;

const tallies = new Set<Map<number, number>>();

/**
 * The statuses of the replies `send` got while `run` ran, by status: a suite checks its
 * generators still reach past validation (a property that only ever sees 400s tests little).
 */
export async function statusesDuring(run: () => Promise<void>): Promise<Record<number, number>> {
  const tally = new Map<number, number>();
  tallies.add(tally);
  try {
    await run();
  } finally {
    tallies.delete(tally);
  }
  return Object.fromEntries(tally);
}

/** Each of `expected` was among the statuses seen. */
export function reached(seen: Record<number, number>, expected: number[]): void {
  for (const status of expected) assert.ok(seen[status], `no ${status} among ${JSON.stringify(seen)}: a generator no longer reaches that path`);
}

/** Sends one request and checks what every response must satisfy; returns the reply for more checks. */
export async function send(url: string, probe: Probe): Promise<Reply> {
  let res: Response;
  let text: string;
  try {
    res = await fetch(`${url}${probe.path}`, { method: probe.method, headers: probe.headers, body: probe.body as BodyInit | undefined, signal: AbortSignal.timeout(HANG_MS) });
    text = await res.text();
  } catch (err) {
    if ((err as Error).name === 'TimeoutError') assert.fail(`${label(probe)} did not finish within ${HANG_MS / 1000} s`);
    throw err;
  }
  let json: Json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  const reply = { status: res.status, text, json, headers: res.headers };
  for (const tally of tallies) tally.set(res.status, (tally.get(res.status) ?? 0) + 1);
  assert.ok(res.status < 500, `${label(probe)}: ${res.status} ${text.slice(0, 500)}`);
  if (res.status >= 400) assertErrorShape(reply, label(probe));
  else if (res.headers.get('content-type')?.startsWith('application/json')) assert.notEqual(json, undefined, `${label(probe)}: ${res.status} with a body that is not JSON`);
  return reply;
}

/** OpenAI's error body, exactly: `{error: {message, type, param, code}}`. */
export function assertErrorShape(reply: Reply, what: string): void {
  const show = `${what}: ${reply.status} ${reply.text.slice(0, 300)}`;
  assert.ok(reply.json && typeof reply.json === 'object', `${show} (not a JSON object)`);
  assert.deepEqual(Object.keys(reply.json), ['error'], show);
  const { error } = reply.json;
  assert.deepEqual(Object.keys(error).sort(), ['code', 'message', 'param', 'type'], show);
  assert.ok(typeof error.message === 'string' && error.message.length > 0, show);
  assert.ok(typeof error.type === 'string' && error.type.length > 0, show);
  assert.ok(error.param === null || typeof error.param === 'string', show);
  assert.ok(error.code === null || typeof error.code === 'string', show);
}

export const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

/** What GET /v1/deltas and GET /v1/deltas/{id} show a tenant: id → its versions. */
export async function deltaVersions(url: string, key: string): Promise<Record<string, number[]>> {
  const list = await send(url, { method: 'GET', path: '/v1/deltas', headers: bearer(key) });
  assert.equal(list.status, 200);
  const out: Record<string, number[]> = {};
  for (const d of list.json.data as { id: string }[]) {
    const one = await send(url, { method: 'GET', path: `/v1/deltas/${d.id}`, headers: bearer(key) });
    assert.equal(one.status, 200, one.text);
    out[d.id] = (one.json.versions as { version: number }[]).map((v) => v.version);
  }
  return out;
}

/** Files under `dir` (recursively), or [] when it does not exist. */
export function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => !e.isDirectory()).map((e) => path.join(e.parentPath, e.name));
}

/** What must hold after refused requests: no delta store staging entries, no spooled uploads. */
export function assertNoLeftovers(dataDir: string): void {
  const staging = path.join(dataDir, 'deltas', '.staging');
  assert.deepEqual(fs.existsSync(staging) ? fs.readdirSync(staging) : [], [], 'delta store staging leftovers');
  assert.deepEqual(filesUnder(path.join(dataDir, 'uploads')), [], 'spooled upload leftovers');
}

/** Header values fetch can send: printable Latin-1, as a client may put anything there. */
export const headerText = (maxLength = 40) =>
  fc.string({ unit: fc.integer({ min: 0x20, max: 0xff }).filter((c) => c !== 0x7f).map((c) => String.fromCharCode(c)), maxLength });

/** Authorization values: the real keys mostly, else near misses and junk. */
export const authorization = fc.oneof(
  { arbitrary: fc.constantFrom(...Object.values(KEYS)).map((k) => `Bearer ${k}`), weight: 6 },
  { arbitrary: fc.constantFrom(`bearer  ${KEYS.acme} `, `Bearer ${KEYS.acme}x`, `Basic ${KEYS.acme}`, `Bearer`, 'Bearer ', KEYS.acme, 'Bearer sk-metrics-4'), weight: 2 },
  { arbitrary: headerText(), weight: 1 },
  { arbitrary: headerText().map((s) => `Bearer ${s}`), weight: 1 },
);

/** X-Deltaserve-Tenant values: the tenants, reserved and invalid names, junk. */
export const tenantHeader = fc.oneof(fc.constantFrom('acme', 'globex', 'admin', 'default', 'nobody', '../acme', 'a'.repeat(65), ''), headerText(20));
