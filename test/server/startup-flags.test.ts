/**
 * Startup errors name the flag they came from: a `--delta` directory that is missing or holds a
 * broken adapter fails readiness with `--delta NAME=DIR: …`, not a bare ENOENT.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { startServer } from '../../src/server/serve.js';
import { FIXTURE, tempDir } from '../helpers.js';

describe('startup errors name their flag', () => {
  const start = (delta: string[]) =>
    startServer(ConfigSchema.parse({ port: 0, cacheDir: tempDir(), dataDir: tempDir(), model: path.join(FIXTURE, 'base'), modelName: 'tiny-llama', maxContext: 64, threads: 1, logLevel: 'silent', delta }));

  it('a --delta directory that does not exist', async () => {
    const dir = path.join(tempDir(), 'nowhere');
    const server = await start([`sql=${dir}`]);
    try {
      await assert.rejects(server.ready, (err: Error) => {
        assert.match(err.message, new RegExp(`^--delta sql=${dir.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: no such file: .*adapter_config\\.json`));
        return true;
      });
    } finally {
      await server.close();
    }
  });

  it('a --delta directory whose adapter is broken', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 4, lora_alpha: 'abc', target_modules: ['q_proj'] }));
    fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), Buffer.from('not safetensors'));
    const server = await start([`acme/broken=${dir}`]);
    try {
      await assert.rejects(server.ready, (err: Error) => {
        assert.match(err.message, /^--delta acme\/broken=\S+: /);
        assert.match(err.message, /lora_alpha|safetensors/);
        return true;
      });
    } finally {
      await server.close();
    }
  });
});
