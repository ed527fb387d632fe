/**
 * Generators shared by the fuzz suites: adapter_config.json texts built from the fixture adapter's
 * config with PEFT LoraConfig fields replaced, added, dropped or repeated, and the regex-looking
 * strings and number spellings that reach the parser's edge cases. Configs are assembled as raw
 * JSON text, not JSON.stringify output, so numbers that only text can carry (1e400 is Infinity
 * once parsed, -0, 2^53 + 1) and duplicate keys reach the parser too.
 */
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { FIXTURE } from '../helpers.js';

export const LORA_DIR = path.join(FIXTURE, 'lora_all_r8');
export const FIXTURE_CONFIG_TEXT = fs.readFileSync(path.join(LORA_DIR, 'adapter_config.json'), 'utf8');
export const FIXTURE_CONFIG: Record<string, unknown> = JSON.parse(FIXTURE_CONFIG_TEXT);
export const FIXTURE_WEIGHTS: Uint8Array = fs.readFileSync(path.join(LORA_DIR, 'adapter_model.safetensors'));

/** Every LoraConfig field the parser reads or refuses, plus ones it should ignore. */
export const LORA_FIELDS = [
  'peft_type', 'r', 'lora_alpha', 'use_rslora', 'use_dora', 'fan_in_fan_out', 'bias', 'lora_dropout', 'init_lora_weights',
  'target_modules', 'exclude_modules', 'layers_to_transform', 'layers_pattern', 'rank_pattern', 'alpha_pattern',
  'modules_to_save', 'layer_replication', 'target_parameters', 'trainable_token_indices', 'alora_invocation_tokens',
  'megatron_config', 'use_qalora', 'lora_bias', 'use_bdlora', 'task_type', 'inference_mode', 'base_model_name_or_path',
  'loftq_config', 'qalora_group_size', 'revision', '__proto__', 'constructor',
] as const;

const SHORT_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', 'lm_head', 'embed_tokens', 'norm', 'mlp', 'self_attn'];
const FULL_MODULES = ['model.layers.0.self_attn.q_proj', 'model.layers.1.mlp.down_proj', 'lm_head', 'model.embed_tokens', 'model.norm', 'model.layers.0.input_layernorm'];

/** Patterns on which a backtracking engine takes exponential time (or which a careless counter would expand). */
export const PATHOLOGICAL_PATTERNS = [
  '(a+)+b', String.raw`(\w|.)*Z`, '(a|a)*c', '(.*a){12}', '((a*)*)*b', '(x+x+)+y', String.raw`(\w+\.?)*\d$`,
  '(.*.*)*q_proj!', '(.|.|.)*X', String.raw`^(([a-z])+.)+[A-Z]([a-z])+$`, '((a{1,4}){1,4}){1,4}', '(.{0,4}){0,4}Z',
  '(((.*)*)*)*', String.raw`(\.|[^.])*$x`, '((((((((((a))))))))))*', 'a{1000}{1000}', '(?:a?){30}a{30}',
];

const REGEX_TOKENS = ['(', ')', '(?:', '(?P<g>', '(?=', '(?<=x)', '(?i)', '|', '*', '+', '?', '*?', '{2}', '{0,3}', '{1,}', '{1000}', '{999999}', '.', '\\.', '\\w', '\\d', '\\s', '\\b', '\\1', '\\', '[', ']', '[a-z]', '[^.]', '^', '$', '\\Z', 'q_proj', 'layers', '.*', '0', 'é', '\u0000'];

/** Strings that look like Python regexes: pathological ones, PEFT-style ones, and token soup. */
export const regexLike: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...PATHOLOGICAL_PATTERNS),
  fc.constantFrom('.*q_proj', String.raw`.*\.(q|v)_proj`, String.raw`model\.layers\.\d+\.self_attn\..*`, 'all-linear', 'ALL-Linear', '.*', '', 'q_proj'),
  fc.array(fc.constantFrom(...REGEX_TOKENS), { maxLength: 16 }).map((t) => t.join('')),
  fc.string({ maxLength: 24 }),
  fc.constantFrom('a'.repeat(257), `(${'('.repeat(120)}a${')'.repeat(120)})`),
);

/** JSON spellings of numbers, including ones that parse to ±Infinity, -0, subnormals, unsafe integers. */
export const numberText: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('0', '-0', '1', '8', '16', '-1', '0.5', '1e400', '-1e400', '1e-400', '5e-324', '1e308', '1e38', '1e6', '1000001', '65536', '65537', '9007199254740993', '8.0', '8.000000000000001', '1E1', '4294967296'),
  fc.integer({ min: -4, max: 40 }).map(String),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => JSON.stringify(d)),
);

/** Not JSON at all: a value text that makes the whole config invalid JSON. */
const brokenText = fc.constantFrom('NaN', 'Infinity', '-Infinity', 'undefined', "'LORA'", '[1,', '{', '01', '+1', '.5', '0x10', '"\\u12"', '"\\uD800"', 'tru', '');

const json = (v: unknown) => JSON.stringify(v) ?? 'null';
const anyJson = fc.jsonValue({ maxDepth: 3 }).map(json);
const stringList = (items: fc.Arbitrary<string>) => fc.array(items, { maxLength: 8 }).map(json);
const moduleName = fc.oneof(fc.constantFrom(...SHORT_MODULES, ...FULL_MODULES), regexLike);
const patternMap = (value: fc.Arbitrary<string>) =>
  fc.array(fc.tuple(fc.oneof(moduleName, fc.string({ maxLength: 8 })), value), { maxLength: 6 }).map((entries) => `{${entries.map(([k, v]) => `${json(k)}:${v}`).join(',')}}`);

/** Values PEFT would plausibly hold for `field` (raw JSON text), near the validation boundaries. */
function plausible(field: string): fc.Arbitrary<string> {
  switch (field) {
    case 'peft_type': return fc.constantFrom('LORA', 'lora', 'LoRA', 'IA3', 'PROMPT_TUNING', 'ADALORA', 'LORA ', '', 'BOFT').map(json);
    case 'r': case 'lora_alpha': case 'lora_dropout': case 'qalora_group_size': return numberText;
    case 'bias': return fc.constantFrom('none', 'all', 'lora_only', 'None', '').map(json);
    case 'init_lora_weights': return fc.constantFrom(true, false, 'gaussian', 'pissa', 'loftq', 'olora', 'eva', 0, 1).map(json);
    case 'target_modules': case 'exclude_modules': case 'modules_to_save': return fc.oneof(regexLike.map(json), stringList(moduleName));
    case 'layers_to_transform': return fc.oneof(numberText, fc.array(fc.oneof(numberText, anyJson), { maxLength: 5 }).map((xs) => `[${xs.join(',')}]`));
    case 'layers_pattern': return fc.oneof(fc.constantFrom('layers', 'h', 'blocks', 'model.layers').map(json), regexLike.map(json), stringList(regexLike));
    case 'rank_pattern': return patternMap(fc.oneof(numberText, anyJson));
    case 'alpha_pattern': return patternMap(fc.oneof(numberText, anyJson));
    case 'layer_replication': return fc.constantFrom('[]', '[[0,1]]', '[[0,2],[1,2]]', 'null');
    case 'target_parameters': case 'trainable_token_indices': case 'alora_invocation_tokens': return fc.oneof(fc.constantFrom('[]', '{}', '["mlp.experts.gate_up_proj"]', '[0,1]', '{"embed_tokens":[1]}'), anyJson);
    default: return fc.oneof(fc.boolean().map(json), fc.constant('null'));
  }
}

/** A value text for `field`: plausible for it, any JSON, a number spelling, a regex-like string, or not JSON. */
export function fieldValueText(field: string): fc.Arbitrary<string> {
  return fc.oneof(
    { arbitrary: plausible(field), weight: 6 },
    { arbitrary: anyJson, weight: 2 },
    { arbitrary: numberText, weight: 1 },
    { arbitrary: regexLike.map(json), weight: 1 },
    { arbitrary: fc.array(anyJson, { maxLength: 4 }).map((xs) => `[${xs.join(',')}]`), weight: 1 },
    { arbitrary: brokenText, weight: 1 },
  );
}

type Edit = { op: 'set'; field: string; value: string } | { op: 'delete'; field: string } | { op: 'repeat'; field: string; value: string };

const fieldName = fc.oneof({ arbitrary: fc.constantFrom(...LORA_FIELDS), weight: 8 }, { arbitrary: fc.string({ maxLength: 12 }), weight: 1 });
const edit: fc.Arbitrary<Edit> = fieldName.chain((field) =>
  fc.oneof(
    { arbitrary: fieldValueText(field).map((value): Edit => ({ op: 'set', field, value })), weight: 6 },
    { arbitrary: fc.constant<Edit>({ op: 'delete', field }), weight: 1 },
    { arbitrary: fieldValueText(field).map((value): Edit => ({ op: 'repeat', field, value })), weight: 1 },
  ),
);

/** Raw `{"k":v,...}` text; a key may repeat (JSON.parse keeps the last). */
function objectText(entries: [string, string][]): string {
  return `{${entries.map(([k, v]) => `${json(k)}:${v}`).join(',')}}`;
}

/** The fixture's config with 1-4 fields set, dropped or repeated (JSON text). */
export const mutatedConfigText: fc.Arbitrary<string> = fc.array(edit, { minLength: 1, maxLength: 4 }).map((edits) => {
  let entries: [string, string][] = Object.entries(FIXTURE_CONFIG).map(([k, v]) => [k, json(v)]);
  for (const e of edits) {
    if (e.op === 'delete') entries = entries.filter(([k]) => k !== e.field);
    else if (e.op === 'repeat') entries.push([e.field, e.value]);
    else {
      const at = entries.findIndex(([k]) => k === e.field);
      if (at >= 0) entries[at] = [e.field, e.value];
      else entries.push([e.field, e.value]);
    }
  }
  return objectText(entries);
});

/** Any adapter_config.json text: mostly mutated fixture configs, also arbitrary JSON, arbitrary text and truncations. */
export const adapterConfigText: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: mutatedConfigText, weight: 8 },
  { arbitrary: fc.json({ maxDepth: 4 }), weight: 1 },
  { arbitrary: fc.dictionary(fc.constantFrom(...LORA_FIELDS), fc.jsonValue({ maxDepth: 2 })).map(json), weight: 1 },
  { arbitrary: fc.string({ maxLength: 64, unit: 'binary' }), weight: 1 },
  { arbitrary: fc.nat({ max: FIXTURE_CONFIG_TEXT.length }).map((n) => FIXTURE_CONFIG_TEXT.slice(0, n)), weight: 1 },
);

/** Safetensors bytes: the fixture's, truncated, with bytes flipped, extended, or random. */
export const weightBytes: fc.Arbitrary<Uint8Array> = fc.oneof(
  { arbitrary: fc.constant(FIXTURE_WEIGHTS), weight: 4 },
  { arbitrary: fc.nat({ max: FIXTURE_WEIGHTS.length }).map((n) => FIXTURE_WEIGHTS.subarray(0, n)), weight: 2 },
  {
    arbitrary: fc.array(fc.tuple(fc.nat({ max: FIXTURE_WEIGHTS.length - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }).map((flips) => {
      const bytes = Uint8Array.from(FIXTURE_WEIGHTS);
      // Most flips land in the float data; biasing half of them into the header reaches its parser.
      for (const [at, value] of flips) bytes[at % 2 ? at : at % 1024] = value;
      return bytes;
    }),
    weight: 2,
  },
  { arbitrary: fc.uint8Array({ minLength: 1, maxLength: 64 }).map((extra) => Buffer.concat([FIXTURE_WEIGHTS, extra])), weight: 1 },
  { arbitrary: fc.uint8Array({ maxLength: 256 }), weight: 1 },
);
