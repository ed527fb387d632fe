import { parseArgs } from 'node:util';
import { ConfigSchema, DEFAULT_TENANT, LIST_KEYS, configFromEnv, flagName, isLoopback, type Config } from './config.js';
import { loadAuthFile, type AuthTable } from './server/auth.js';
import { startServer } from './server/serve.js';

const USAGE = `usage: deltaserve [--model DIR] [--model-name NAME] [--delta [TENANT/]NAME=PEFT_DIR]... [--public-delta [TENANT/]NAME]...
                  [--auth FILE] [--port N] [--host H] [--device cpu|webgpu|cuda] [--cache-dir DIR] [--max-rows N]
                  [--max-context N] [--delta-slots N] [--max-rank N] [--prefill-chunk N] [--max-queue N]
                  [--max-body-bytes N] [--threads N] [--request-timeout-ms N]
  --delta [TENANT/]NAME=DIR   a PEFT LoRA adapter owned by TENANT ('${DEFAULT_TENANT}' without a prefix)
  --public-delta [TENANT/]NAME  let every tenant use that --delta (others name it TENANT/NAME, or NAME when unambiguous)
  --auth FILE                 API keys as SHA-256 hashes: {"tenants": {"acme": {"keys": ["sha256:<hex>"]}},
                              "admin_keys": ["sha256:<hex>"]} in JSON, or YAML for .yaml/.yml; admin keys act as
                              tenant 'admin', or as the tenant named by an X-Deltaserve-Tenant header. Without
                              it the server is open and single-tenant ('${DEFAULT_TENANT}') and binds loopback only.
Every flag can also be set as DELTASERVE_<FLAG> (e.g. DELTASERVE_MAX_ROWS, DELTASERVE_PUBLIC_DELTA); repeatable
flags take a comma-separated list there; flags win.`;

/** Parses flags and DELTASERVE_* variables into one validated config. */
export function parseConfig(argv: string[], env: NodeJS.ProcessEnv): Config {
  const keys = Object.keys(ConfigSchema.shape);
  const options = Object.fromEntries(keys.map((k) => [flagName(k), { type: 'string' as const, multiple: LIST_KEYS.has(k) }]));
  const { values } = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean' } }, allowPositionals: false });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const flags = values as Record<string, unknown>;
  const fromFlags = Object.fromEntries(keys.filter((k) => flags[flagName(k)] !== undefined).map((k) => [k, flags[flagName(k)]]));
  const parsed = ConfigSchema.safeParse({ ...configFromEnv(env), ...fromFlags });
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `--${flagName(String(i.path[0]))}: ${i.message}`);
    throw new Error(`invalid configuration:\n  ${problems.join('\n  ')}`);
  }
  return parsed.data;
}

/** Runs the server until SIGTERM/SIGINT; exits 2 on a bad configuration, 1 when startup fails. */
export async function main(): Promise<void> {
  let config: Config;
  try {
    config = parseConfig(process.argv.slice(2), process.env);
  } catch (err) {
    console.error((err as Error).message);
    console.error(USAGE);
    process.exit(2);
  }
  let auth: AuthTable | null = null;
  if (config.auth) {
    try {
      auth = loadAuthFile(config.auth);
    } catch (err) {
      console.error((err as Error).message);
      process.exit(2);
    }
  } else {
    if (!isLoopback(config.host)) {
      console.error(`refusing to bind ${config.host}: without an auth file (--auth) the server runs in open single-tenant mode and binds loopback addresses only`);
      process.exit(2);
    }
    for (const d of config.delta) {
      const owner = d.tenant ?? DEFAULT_TENANT;
      if (owner !== DEFAULT_TENANT && !config.publicDeltas.some((p) => p.owner === owner && p.name === d.name)) {
        console.warn(`note: delta ${owner}/${d.name} belongs to tenant '${owner}'; without --auth every request is tenant '${DEFAULT_TENANT}', so it is unusable unless --public-delta ${owner}/${d.name}`);
      }
    }
  }
  const started = performance.now();
  const server = await startServer(config, { auth });
  console.log(`deltaserve listening on ${server.url} (model loading)`);
  try {
    const engine = await server.ready;
    console.log(`ready in ${((performance.now() - started) / 1000).toFixed(2)} s: ${server.state.modelName} (${engine.info.family}) on ${engine.info.device}, ${server.state.deltas.list().length} deltas, ${auth ? `${auth.tenants.size} tenants (keys from ${auth.source})` : 'open single-tenant mode'}`);
  } catch (err) {
    console.error(`startup failed: ${(err as Error).message}`);
    await server.close();
    process.exit(1);
  }
  const shutdown = async () => {
    await server.close();
    process.exit(0);
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
