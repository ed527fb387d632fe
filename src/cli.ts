import { parseArgs } from 'node:util';
import { ConfigSchema, configFromEnv, isLoopback, type Config } from './config.js';
import { startServer } from './server/serve.js';

const USAGE = `usage: deltaserve [--model DIR] [--model-name NAME] [--delta [TENANT/]NAME=PEFT_DIR]... [--port N] [--host H]
                  [--device cpu|webgpu|cuda] [--cache-dir DIR] [--max-rows N] [--max-context N] [--delta-slots N]
                  [--max-rank N] [--prefill-chunk N] [--max-queue N] [--max-body-bytes N] [--threads N]
Every flag can also be set as DELTASERVE_<FLAG> (e.g. DELTASERVE_MAX_ROWS); flags win.`;

const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** Parses flags and DELTASERVE_* variables into one validated config. */
export function parseConfig(argv: string[], env: NodeJS.ProcessEnv): Config {
  const keys = Object.keys(ConfigSchema.shape);
  const options = Object.fromEntries(keys.map((k) => [kebab(k), { type: 'string' as const, multiple: k === 'delta' }]));
  const { values } = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean' } }, allowPositionals: false });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const flags = values as Record<string, unknown>;
  const fromFlags = Object.fromEntries(keys.filter((k) => flags[kebab(k)] !== undefined).map((k) => [k, flags[kebab(k)]]));
  const parsed = ConfigSchema.safeParse({ ...configFromEnv(env), ...fromFlags });
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `--${kebab(String(i.path[0]))}: ${i.message}`);
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
  if (!isLoopback(config.host)) {
    console.error(`refusing to bind ${config.host}: without an auth file the server runs in open single-tenant mode and binds loopback addresses only`);
    process.exit(2);
  }
  const started = performance.now();
  const server = await startServer(config);
  console.log(`deltaserve listening on ${server.url} (model loading)`);
  try {
    const engine = await server.ready;
    console.log(`ready in ${((performance.now() - started) / 1000).toFixed(2)} s: ${server.state.modelName} (${engine.info.family}) on ${engine.info.device}, ${server.state.deltas.list().length} deltas`);
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
