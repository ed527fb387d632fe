import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { ConfigSchema, flagName } from '../src/config.js';

const read = (file: string) => fs.readFileSync(new URL(`../${file}`, import.meta.url), 'utf8');

test('docs/configuration.md lists every setting with its real default', () => {
  const table = read('docs/configuration.md');
  const defaults = ConfigSchema.parse({}) as Record<string, unknown>;
  for (const key of Object.keys(ConfigSchema.shape)) {
    const row = table.split('\n').find((line) => line.startsWith(`| \`--${flagName(key)}`));
    assert.ok(row, `--${flagName(key)} is missing from docs/configuration.md`);
    const value = defaults[key];
    if (typeof value === 'number' || typeof value === 'boolean') assert.ok(row.split('|')[2]!.includes(String(value)), `--${flagName(key)}: the table's default (${row.split('|')[2]!.trim()}) is not ${value}`);
  }
});

test('the README stays short and every docs page it maps exists and links back', () => {
  const readme = read('README.md');
  assert.ok(readme.length < 10 * 1024, `README.md is ${readme.length} bytes`);
  for (const [, page] of readme.matchAll(/\]\((docs\/[a-z-]+\.md)\)/g)) {
    assert.ok(fs.existsSync(new URL(`../${page}`, import.meta.url)), `${page} exists`);
    assert.match(read(page!), /\[← README\]\(\.\.\/README\.md\)/, `${page} links back to the README`);
  }
});

test('every setting has a description for --help', () => {
  const missing = Object.entries(ConfigSchema.shape).filter(([, schema]) => !(schema as { description?: string }).description).map(([key]) => flagName(key));
  assert.deepEqual(missing, []);
});
