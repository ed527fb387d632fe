import { parseArgs } from 'node:util';
import { ConfigSchema, LIST_KEYS, configFromEnv, envName, flagName, isLoopback, type Config } from './config.js';
import { DEFAULT_TENANT } from './deltas/ref.js';
import { loadAuthFile, type AuthTable } from './server/auth.js';
import { startServer } from './server/serve.js';

/** Usage text generated from the config schema, so every flag and its variable are listed. */
function usage(): string {
  const defaults = ConfigSchema.parse({}) as Record<string, unknown>;
  const lines = Object.entries(ConfigSchema.shape).flatMap(([key, schema]) => {
    const description = (schema as { description?: string }).description ?? '';
    const value = defaults[key];
    const shown = value === undefined || (Array.isArray(value) && value.length === 0) ? 'none' : String(value);
    return [`  --${flagName(key)}  (${envName(key)}; default: ${shown})`, `      ${description}`];
  });
  return [
    'usage: deltaserve [flags]   (every flag is also a DELTASERVE_* variable; flags win; repeatable flags take a',
    '                             comma-separated list in the variable)',
    ...lines,
    `  --delta [TENANT/]NAME=DIR is owned by TENANT ('${DEFAULT_TENANT}' without a prefix); --auth FILE holds API keys as`,
    '  SHA-256 hashes: {"tenants": {"acme": {"keys": ["sha256:<hex>"]}}, "admin_keys": ["sha256:<hex>"]} (JSON, or YAML).',
  ].join('\n');
}

/** Parses flags and DELTASERVE_* variables into one validated config. */
export function parseConfig(argv: string[], env: NodeJS.ProcessEnv): Config {
  const keys = Object.keys(ConfigSchema.shape);
  const options = Object.fromEntries(keys.map((k) => [flagName(k), { type: 'string' as const, multiple: LIST_KEYS.has(k) }]));
  const { values } = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean' } }, allowPositionals: false });
  if (values.help) {
    console.log(usage());
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
    console.error(usage());
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
  // Lifecycle lines are JSON log lines like the rest, logged at info even under --log-level warn
  // (orchestrators and operators wait for them); only 'silent' hides them.
  const lifecycle = server.state.logger.child({}, { level: config.logLevel === 'silent' ? 'silent' : 'info' });
  lifecycle.info({ url: server.url }, `deltaserve listening on ${server.url} (model loading)`);
  try {
    const engine = await server.ready;
    const seconds = (performance.now() - started) / 1000;
    const tenancy = auth ? `${auth.tenants.size} tenants (keys from ${auth.source})` : 'open single-tenant mode';
    lifecycle.info({ readySeconds: Number(seconds.toFixed(2)), model: server.state.modelName, family: engine.info.family, device: engine.info.device, deltas: server.state.deltas.list().length }, `ready in ${seconds.toFixed(2)} s: ${server.state.modelName} (${engine.info.family}) on ${engine.info.device}, ${server.state.deltas.list().length} deltas, ${tenancy}`);
  } catch (err) {
    lifecycle.error({ error: (err as Error).message }, `startup failed: ${(err as Error).message}`);
    await server.close();
    process.exit(1);
  }
  // SIGTERM: readiness turns 503 at once, in-flight requests get the grace period, a training
  // job checkpoints; then the engine closes, all by the end of the grace period (what is still
  // running then is cut). A second signal does not wait.
  let stopping = false;
  const shutdown = async () => {
    if (stopping) process.exit(1);
    stopping = true;
    const deadline = Date.now() + config.shutdownGraceMs;
    // A last resort: whatever still holds the event loop a little past the grace, the process goes.
    setTimeout(() => {
      lifecycle.error({ graceMs: config.shutdownGraceMs }, `shutdown did not finish within --shutdown-grace-ms ${config.shutdownGraceMs}; exiting`);
      process.exit(1);
    }, config.shutdownGraceMs + 250).unref();
    await server.drain(config.shutdownGraceMs);
    await server.close({ deadline });
    process.exit(0);
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  // Tests of the restart path crash the engine thread from outside; nothing else can.
  if (process.env.NODE_ENV === 'test') process.on('SIGUSR2', () => server.state.engine?.injectCrash());
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
