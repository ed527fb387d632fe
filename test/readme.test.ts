import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { ConfigSchema, flagName } from '../src/config.js';

test('the README configuration table lists every setting', () => {
  const readme = fs.readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const table = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('## API'));
  const missing = Object.keys(ConfigSchema.shape).filter((key) => !table.includes(`| \`--${flagName(key)}`));
  assert.deepEqual(missing, [], `settings missing from the README: ${missing.join(', ')}`);
});
