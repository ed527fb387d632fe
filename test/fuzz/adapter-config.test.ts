/**
 * adapter_config.json as a tenant can write it, against the fixture adapter's weights: every
 * outcome is a delta whose modules all have a finite scale and finite A, B and scale · B (what a
 * slot holds), or a DeltaValidationError listing non-empty problems — never another exception or
 * a hang. Patterns that explode backtracking engines go through the same path, and the matcher's
 * work on them is counted (state visits, not time) against its linear bound.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DeltaValidationError } from '../../src/deltas/errors.js';
import { deltaKinds } from '../../src/deltas/kind.js';
import { parseDelta } from '../../src/deltas/parse.js';
import { compilePattern, PatternError } from '../../src/deltas/peft/regex.js';
import { MAX_PATTERN_LENGTH } from '../../src/deltas/peft/targets.js';
import { firstNonFinite, parsePeftLora } from '../../src/deltas/peft-lora.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { FIXTURE } from '../helpers.js';
import { adapterConfigText, FIXTURE_CONFIG, FIXTURE_CONFIG_TEXT, FIXTURE_WEIGHTS, PATHOLOGICAL_PATTERNS, weightBytes } from './generators.js';

const RUNS = 3000;
const ARCH = openCheckpoint(path.join(FIXTURE, 'base')).arch;
const LIMITS = { maxRank: 8, maxVirtualTokens: 64, maxBottleneck: 256 };

function checkRefusal(err: unknown): 'refused' {
  if (!(err instanceof DeltaValidationError)) throw err;
  assert.ok(err.problems.length > 0, 'a refusal names at least one problem');
  for (const p of err.problems) assert.ok(typeof p === 'string' && p.length > 0, `problem ${JSON.stringify(p)}`);
  return 'refused';
}

function maxAbs(data: Float32Array): number {
  let max = 0;
  for (const v of data) max = Math.max(max, Math.abs(v));
  return max;
}

/** Parses with parsePeftLora and checks whichever outcome it is; any other exception fails the property. */
function loraOutcome(config: string, weights: Uint8Array = FIXTURE_WEIGHTS): 'ok' | 'refused' {
  try {
    const delta = parsePeftLora('fuzz', config, weights, ARCH, LIMITS.maxRank);
    assert.ok(delta.modules.size > 0);
    assert.ok(delta.maxRank >= 1 && delta.maxRank <= LIMITS.maxRank, `maxRank ${delta.maxRank}`);
    for (const [module, m] of delta.modules) {
      assert.ok(Number.isFinite(m.scale), `${module}: scale ${m.scale}`);
      assert.equal(firstNonFinite(m.a), -1, `${module}: A`);
      assert.equal(firstNonFinite(m.b), -1, `${module}: B`);
      assert.ok(Number.isFinite(Math.fround(m.scale * maxAbs(m.b))), `${module}: scale · B overflows float32`);
    }
    return 'ok';
  } catch (err) {
    return checkRefusal(err);
  }
}

/** Parses through the kind registry (what the loader runs) and checks the slot-layout tensors. */
function kindOutcome(config: string, weights: Uint8Array): 'ok' | 'refused' {
  try {
    const delta = parseDelta('fuzz', { config, weights }, ARCH, LIMITS);
    assert.ok(deltaKinds().some((k) => k.name === delta.kind), `kind ${delta.kind}`);
    for (const [name, data] of delta.tensors) assert.equal(firstNonFinite(data), -1, `${name} holds a non-finite value`);
    for (const [key, value] of Object.entries(delta.summary)) assert.ok(typeof value !== 'number' || Number.isFinite(value), `summary.${key} ${value}`);
    assert.ok(Number.isInteger(delta.virtualTokens) && delta.virtualTokens >= 0 && delta.virtualTokens <= LIMITS.maxVirtualTokens);
    return 'ok';
  } catch (err) {
    return checkRefusal(err);
  }
}

/** Counts outcomes, so a property that never reaches one side is noticed (a generator gone stale). */
function tally() {
  const seen = { ok: 0, refused: 0 };
  return { seen, count: (o: 'ok' | 'refused') => void seen[o]++ };
}

// Compositions of the shapes that make backtracking engines explode: nested and alternated
// quantifiers over overlapping atoms, with a suffix that fails only at the end.
const ATOMS = ['a', '.', String.raw`\w`, 'a|a', String.raw`.|\w`, 'a*', '.*', '[a-z_.]', 'q_proj', String.raw`\d+`, String.raw`[^.]*\.`, 'layers'];
const QUANTIFIERS = ['*', '+', '?', '{0,5}', '{1,}', '{3}', '*?', '{2,4}'];
const blowup = fc
  .tuple(fc.constantFrom(...ATOMS), fc.constantFrom(...QUANTIFIERS), fc.constantFrom(...QUANTIFIERS), fc.integer({ min: 1, max: 4 }), fc.constantFrom('Z', '!', '$x', '', 'q_proj', String.raw`\.q_proj`))
  .map(([atom, inner, outer, depth, suffix]) => {
    let p = atom;
    for (let i = 0; i < depth; i++) p = `(${p})${i % 2 ? outer : inner}`;
    return `${p}${suffix}`;
  });
const pattern = fc.oneof(fc.constantFrom(...PATHOLOGICAL_PATTERNS), blowup);
const ADVERSARIAL_TEXTS = ['model.layers.1.self_attn.q_proj', 'model.layers.0.mlp.down_proj', 'lm_head', 'a'.repeat(60), `${'model.layers.0.'.repeat(8)}q_proj!`, 'a.'.repeat(30)];

/** Every place a config carries a pattern, holding `p`. */
const PATTERN_SLOTS: ((p: string) => Record<string, unknown>)[] = [
  (p) => ({ target_modules: p }),
  (p) => ({ exclude_modules: p }),
  (p) => ({ rank_pattern: { [p]: 8 } }),
  (p) => ({ alpha_pattern: { [p]: 4 } }),
  (p) => ({ layers_to_transform: [0], layers_pattern: p }),
  (p) => ({ layers_to_transform: [1], layers_pattern: ['layers', p] }),
];

/** The matcher's state visits for one full match stay within (len + 1) × states, whatever the pattern. */
function assertLinear(source: string): void {
  let compiled;
  try {
    compiled = compilePattern(source, { maxLength: MAX_PATTERN_LENGTH + 16 });
  } catch (err) {
    if (err instanceof PatternError) return;
    throw err;
  }
  for (const text of ADVERSARIAL_TEXTS) {
    compiled.fullMatch(text);
    assert.ok(compiled.lastCost <= (text.length + 1) * compiled.stateCount, `${source} on ${text}: ${compiled.lastCost} visits for ${compiled.stateCount} states`);
  }
}

describe('fuzz: adapter_config.json (PEFT LoRA)', () => {
  it('the fixture adapter parses (the baseline every mutation starts from)', () => {
    assert.equal(loraOutcome(FIXTURE_CONFIG_TEXT), 'ok');
  });

  it(`mutated and arbitrary configs with the fixture weights (${RUNS} cases): a valid delta or a DeltaValidationError`, () => {
    const { seen, count } = tally();
    fc.assert(fc.property(adapterConfigText, (config) => count(loraOutcome(config))), { numRuns: RUNS });
    assert.ok(seen.ok > 0 && seen.refused > 0, JSON.stringify(seen));
  });

  it(`backtracking-bomb patterns in every pattern field (${RUNS} cases): decided within the linear bound`, () => {
    const { seen, count } = tally();
    fc.assert(
      fc.property(pattern, fc.constantFrom(...PATTERN_SLOTS), (p, slot) => {
        count(loraOutcome(JSON.stringify({ ...FIXTURE_CONFIG, ...slot(p) })));
        assertLinear(p);
        // rank_pattern / alpha_pattern keys are matched as PEFT does, inside `(.*\.)?(K)`.
        assertLinear(String.raw`(.*\.)?(${p})`);
      }),
      { numRuns: RUNS },
    );
    assert.ok(seen.ok > 0 && seen.refused > 0, JSON.stringify(seen));
  });

  it(`every registered kind through parseDelta, with mutated weights too (${RUNS} cases)`, () => {
    const { seen, count } = tally();
    fc.assert(fc.property(adapterConfigText, weightBytes, (config, weights) => count(kindOutcome(config, weights))), { numRuns: RUNS });
    assert.ok(seen.ok > 0 && seen.refused > 0, JSON.stringify(seen));
  });
});
