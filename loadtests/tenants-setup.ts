/**
 * node --import tsx loadtests/tenants-setup.ts [--tenants loadtests/k6/tenants.example.json] [--cache-dir DIR]
 *
 * Prepares a multi-tenant server for loadtests/k6/tenants.js from the same tenants file: writes a
 * random rank-16 all-linear PEFT adapter for every (tenant, delta), an auth file holding the
 * SHA-256 of every tenant's api_key, and prints the `npm start` command that serves them on
 * 127.0.0.1 (the SmolLM2-135M-shaped bench checkpoint). It starts nothing itself.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { writeRandomPeftAdapter } from '../bench/peft-adapter.js';
import { ensureSyntheticCheckpoint, SMOLLM2_135M_CONFIG } from '../bench/synthetic.js';
import { ConfigSchema } from '../src/config.js';
import { hashKey } from '../src/server/auth.js';

const { values } = parseArgs({ options: { tenants: { type: 'string', default: 'loadtests/k6/tenants.example.json' }, 'cache-dir': { type: 'string' }, port: { type: 'string', default: '8000' } } });
const cacheDir = values['cache-dir'] ?? ConfigSchema.parse({}).cacheDir;
const file = JSON.parse(fs.readFileSync(values.tenants, 'utf8')) as { tenants: { name: string; api_key: string; deltas: string[] }[] };

const modelDir = ensureSyntheticCheckpoint(path.join(cacheDir, 'bench', 'smollm2-135m-shape'), SMOLLM2_135M_CONFIG);
const root = path.join(cacheDir, 'loadtest', 'tenants');
const auth: { tenants: Record<string, { keys: string[] }> } = { tenants: {} };
const deltaFlags: string[] = [];
let seed = 2000;
for (const tenant of file.tenants) {
  (auth.tenants[tenant.name] ??= { keys: [] }).keys.push(hashKey(tenant.api_key));
  for (const delta of tenant.deltas) {
    const dir = writeRandomPeftAdapter(path.join(root, tenant.name, `${delta}-r16-seed${seed}`), SMOLLM2_135M_CONFIG, { rank: 16, alpha: 32, seed });
    seed++;
    deltaFlags.push(`--delta ${tenant.name}/${delta}=${dir}`);
  }
}
const authFile = path.join(root, 'auth.json');
fs.mkdirSync(root, { recursive: true });
fs.writeFileSync(authFile, `${JSON.stringify(auth, null, 2)}\n`);
console.error(`wrote ${deltaFlags.length} adapters under ${root} and ${authFile}; serve them with:\n`);
console.log(
  `npm start -- --host 127.0.0.1 --port ${values.port} --model ${modelDir} --auth ${authFile} --max-rows 32 --delta-slots ${Math.min(deltaFlags.length, 16)} --max-context 512 ${deltaFlags.join(' ')}`,
);
