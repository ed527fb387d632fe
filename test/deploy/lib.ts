// Helpers for the deployment-artifact tests: a small Dockerfile parser, a .dockerignore matcher, a
// YAML loader for deploy/, and a strict field check driven by kubernetes-models' type declarations.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { ConfigSchema, envName } from '../../src/config.js';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const DEPLOY = path.join(REPO, 'deploy');

/**
 * DELTASERVE_* variables the deployment files may set beyond the ConfigSchema settings, for
 * settings that are being added to src/ but are not in ConfigSchema yet (name → why). Empty now:
 * DELTASERVE_SHUTDOWN_GRACE_MS (shutdownGraceMs) and DELTASERVE_LOG_PROMPTS (logPrompts), which the
 * deployment work assumed, have become settings. Add an entry only with a reason.
 */
export const EXTRA_DELTASERVE_ENV: ReadonlySet<string> = new Set<string>([]);

/** Every DELTASERVE_* variable the server reads. */
export function knownDeltaserveEnv(): Set<string> {
  return new Set([...Object.keys(ConfigSchema.shape).map(envName), ...EXTRA_DELTASERVE_ENV]);
}

/** The DELTASERVE_* names in `names` that are no setting. */
export function unknownDeltaserveEnv(names: Iterable<string>): string[] {
  const known = knownDeltaserveEnv();
  return [...names].filter((n) => n.startsWith('DELTASERVE_') && !known.has(n));
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

export interface Instruction {
  /** Upper-case instruction keyword. */
  cmd: string;
  /** Everything after the keyword, continuation lines joined. */
  args: string;
  /** 1-based line of the keyword. */
  line: number;
}

export interface Stage {
  index: number;
  /** `AS name` (lower-cased, as BuildKit compares them), or null. */
  name: string | null;
  /** The FROM reference as written (variables unexpanded). */
  from: string;
  instructions: Instruction[];
}

export interface Dockerfile {
  /** ARGs before the first FROM: name → default (undefined without one). */
  globalArgs: Map<string, string | undefined>;
  stages: Stage[];
}

/** Splits a Dockerfile into logical lines (comments dropped, `\` continuations joined) and stages. */
export function parseDockerfile(text: string): Dockerfile {
  const lines = text.split(/\r?\n/);
  const logical: { text: string; line: number }[] = [];
  let current: { text: string; line: number } | null = null;
  lines.forEach((raw, i) => {
    const trimmed = raw.trim();
    // Comment lines (parser directives included) vanish, also in the middle of a continuation.
    if (trimmed.startsWith('#')) return;
    if (!current && trimmed === '') return;
    const continued = /\\\s*$/.test(raw);
    const part = continued ? raw.replace(/\\\s*$/, '') : raw;
    if (current) current.text += ' ' + part.trim();
    else current = { text: part.trim(), line: i + 1 };
    if (!continued) {
      logical.push(current);
      current = null;
    }
  });
  if (current) throw new Error(`Dockerfile ends inside a continuation (line ${(current as { line: number }).line})`);

  const globalArgs = new Map<string, string | undefined>();
  const stages: Stage[] = [];
  for (const { text: l, line } of logical) {
    const m = /^(\S+)\s*(.*)$/.exec(l);
    if (!m) continue;
    const cmd = m[1]!.toUpperCase();
    const args = m[2]!.trim();
    if (cmd === 'FROM') {
      const words = args.split(/\s+/).filter((w) => !w.startsWith('--'));
      const as = words.length >= 3 && words[1]!.toUpperCase() === 'AS' ? words[2]!.toLowerCase() : null;
      stages.push({ index: stages.length, name: as, from: words[0]!, instructions: [] });
      continue;
    }
    if (stages.length === 0) {
      if (cmd !== 'ARG') throw new Error(`line ${line}: only ARG may precede the first FROM, found ${cmd}`);
      for (const [k, v] of parseKeyValues(args)) globalArgs.set(k, v);
      continue;
    }
    stages.at(-1)!.instructions.push({ cmd, args, line });
  }
  return { globalArgs, stages };
}

/** `K=V K2="V 2"` (ENV/ARG/LABEL); also the legacy `ENV K V` form. A bare `K` has no value. */
export function parseKeyValues(args: string): Map<string, string | undefined> {
  const out = new Map<string, string | undefined>();
  if (!args.includes('=')) {
    const [k, ...rest] = args.split(/\s+/);
    out.set(k!, rest.length ? rest.join(' ') : undefined);
    return out;
  }
  const re = /([A-Za-z_][A-Za-z0-9_.-]*)(?:=("(?:[^"\\]|\\.)*"|'[^']*'|\S*))?/g;
  for (const m of args.matchAll(re)) {
    let v = m[2];
    if (v !== undefined && /^(["']).*\1$/.test(v)) v = v.slice(1, -1);
    out.set(m[1]!, v);
  }
  return out;
}

/** Expands `$X`, `${X}`, `${X:-default}` from `vars`. */
export function expand(value: string, vars: ReadonlyMap<string, string | undefined>): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_, a, def, b) => {
    const v = vars.get(a ?? b);
    return v !== undefined && v !== '' ? v : (def ?? '');
  });
}

/** JSON (exec) form of CMD/ENTRYPOINT/RUN/HEALTHCHECK CMD, or null for shell form. */
export function execForm(args: string): string[] | null {
  if (!args.startsWith('[')) return null;
  try {
    const v: unknown = JSON.parse(args);
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : null;
  } catch {
    return null;
  }
}

/** `--flag=value` options at the start of COPY/ADD/HEALTHCHECK args, and the rest. */
export function splitFlags(args: string): { flags: Map<string, string>; rest: string } {
  const flags = new Map<string, string>();
  let rest = args;
  for (;;) {
    const m = /^--([a-z-]+)(?:=(\S*))?\s*/.exec(rest);
    if (!m) break;
    flags.set(m[1]!, m[2] ?? '');
    rest = rest.slice(m[0].length);
  }
  return { flags, rest };
}

/** Sources and destination of a COPY/ADD (shell or JSON form). */
export function copyOperands(rest: string): { sources: string[]; dest: string } {
  const parts = execForm(rest) ?? rest.split(/\s+/).filter(Boolean);
  if (parts.length < 2) throw new Error(`COPY needs a source and a destination: ${rest}`);
  return { sources: parts.slice(0, -1), dest: parts.at(-1)! };
}

/** Finds the stage a FROM (or COPY --from) reference names, among the stages before `before`. */
export function stageByRef(df: Dockerfile, ref: string, before: number): Stage | undefined {
  const lower = ref.toLowerCase();
  if (/^\d+$/.test(ref)) {
    const i = Number(ref);
    return i < before ? df.stages[i] : undefined;
  }
  return df.stages.slice(0, before).find((s) => s.name === lower);
}

/**
 * The chain of stages the build of `target` (default: the last stage) runs through for the given
 * build arguments, base first, and the external image at its root.
 */
export function stageChain(df: Dockerfile, buildArgs: Record<string, string>, target = df.stages.length - 1): { chain: Stage[]; baseImage: string } {
  const vars = new Map(df.globalArgs);
  for (const [k, v] of Object.entries(buildArgs)) if (vars.has(k)) vars.set(k, v);
  const chain: Stage[] = [];
  let stage: Stage | undefined = df.stages[target];
  while (stage) {
    chain.unshift(stage);
    const ref = expand(stage.from, vars);
    const parent = stageByRef(df, ref, stage.index);
    if (!parent) return { chain, baseImage: ref };
    stage = parent;
  }
  throw new Error('unreachable');
}

/** ENV of a stage chain, base first (later stages override). */
export function chainEnv(chain: Stage[]): Map<string, string> {
  const env = new Map<string, string>();
  for (const s of chain) {
    for (const i of s.instructions) {
      if (i.cmd !== 'ENV') continue;
      for (const [k, v] of parseKeyValues(i.args)) env.set(k, expand(v ?? '', env));
    }
  }
  return env;
}

/** Instructions of a stage chain, base first. */
export function chainInstructions(chain: Stage[]): Instruction[] {
  return chain.flatMap((s) => s.instructions);
}

// ---------------------------------------------------------------------------------------------
// .dockerignore

function globToRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') {
      if (pattern[i + 1] === '*') {
        // `**` matches any number of directories (including none).
        re += '.*';
        i++;
        if (pattern[i + 1] === '/') i++;
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** Docker's .dockerignore rules: patterns in order, the last match wins, a match on a parent directory counts. */
export function dockerignore(text: string): (file: string) => boolean {
  const rules = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const p = path.posix.normalize((negate ? l.slice(1) : l).trim()).replace(/^\/+|\/+$/g, '');
      return { negate, re: globToRegExp(p) };
    });
  return (file: string) => {
    const parts = path.posix.normalize(file).replace(/^\.\/|\/+$/g, '').split('/');
    const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
    let excluded = false;
    for (const { negate, re } of rules) if (prefixes.some((p) => re.test(p))) excluded = !negate;
    return excluded;
  };
}

/** Files under `dir` (relative to REPO), recursively. */
export function walkFiles(dir: string): string[] {
  const abs = path.join(REPO, dir);
  if (!fs.statSync(abs).isDirectory()) return [dir];
  return fs.readdirSync(abs, { withFileTypes: true }).flatMap((e) => {
    const rel = path.posix.join(dir, e.name);
    return e.isDirectory() ? walkFiles(rel) : [rel];
  });
}

// ---------------------------------------------------------------------------------------------
// YAML under deploy/

export interface YamlDoc {
  /** Path relative to the repository, e.g. deploy/kubernetes/deployment.yaml. */
  file: string;
  /** Index of the document in its file. */
  index: number;
  value: any;
}

/** Every *.yaml / *.yml file under deploy/, relative to the repository. */
export function deployYamlFiles(): string[] {
  return walkFiles('deploy').filter((f) => /\.ya?ml$/.test(f)).sort();
}

/** Parses every document of every YAML file under deploy/; throws on any parse error or warning. */
export function loadDeployYaml(): YamlDoc[] {
  const out: YamlDoc[] = [];
  for (const file of deployYamlFiles()) {
    const docs = parseAllDocuments(fs.readFileSync(path.join(REPO, file), 'utf8'), { prettyErrors: true, uniqueKeys: true });
    const list = Array.isArray(docs) ? docs : [docs];
    list.forEach((doc, index) => {
      const problems = [...doc.errors, ...doc.warnings];
      if (problems.length) throw new Error(`${file} document ${index}: ${problems.map((e) => e.message).join('; ')}`);
      const value = doc.toJS();
      if (value !== null && value !== undefined) out.push({ file, index, value });
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Strict fields from kubernetes-models' declarations. Its validate() follows the OpenAPI schemas,
// which allow unknown fields; a misspelt `readinessprobe` would pass there, so every object is
// also walked against the interface declarations (.d.ts) and unknown keys reported.

const MODELS = path.join(REPO, 'node_modules');

interface Field {
  type: string;
}
interface Iface {
  fields: Map<string, Field>;
  imports: Map<string, string>;
}
const ifaceCache = new Map<string, Iface | null>();

function resolveModule(fromFile: string, spec: string): string {
  const base = spec.startsWith('.') ? path.resolve(path.dirname(fromFile), spec) : path.join(MODELS, spec);
  return `${base}.d.ts`;
}

/** The first exported interface of a kubernetes-models .d.ts file, or null for a type alias (a leaf). */
function readIface(file: string): Iface | null {
  if (ifaceCache.has(file)) return ifaceCache.get(file)!;
  const text = fs.readFileSync(file, 'utf8');
  const imports = new Map<string, string>();
  for (const m of text.matchAll(/^import \{ ([^}]+) \} from "([^"]+)";$/gm)) {
    for (const name of m[1]!.split(',').map((s) => s.trim())) imports.set(name, resolveModule(file, m[2]!));
  }
  const start = text.search(/^export interface \w+/m);
  if (start < 0) {
    ifaceCache.set(file, null);
    return null;
  }
  const end = text.indexOf('\n}', start);
  const body = text.slice(start, end).split('\n').slice(1);
  const fields = new Map<string, Field>();
  for (let i = 0; i < body.length; i++) {
    const m = /^ {4}"([^"]+)"\??: (.*)$/.exec(body[i]!);
    if (!m) continue;
    let type = m[2]!;
    // Multi-line object literal types ({ [key: string]: X; }).
    if (type === '{') {
      while (i + 1 < body.length && !/^ {4}\};?$/.test(body[i + 1]!)) type += ' ' + body[++i]!.trim();
      type += ' }';
    }
    fields.set(m[1]!, { type: type.replace(/;$/, '') });
  }
  const iface = { fields, imports };
  ifaceCache.set(file, iface);
  return iface;
}

/** The .d.ts of a kubernetes-models class, e.g. modelFile('apps/v1/Deployment'). */
export function modelFile(spec: string): string {
  return path.join(MODELS, 'kubernetes-models', `${spec}.d.ts`);
}

/** Unknown fields of `value` against the interface in `file`, as JSON-ish paths. */
export function unknownFields(value: unknown, file: string, at = ''): string[] {
  const iface = readIface(file);
  if (!iface || value === null || typeof value !== 'object' || Array.isArray(value)) return [];
  const out: string[] = [];
  for (const [key, child] of Object.entries(value)) {
    const field = iface.fields.get(key);
    if (!field) {
      out.push(`${at}.${key}`);
      continue;
    }
    let type = field.type.trim();
    const arr = /^Array<(.+)>$/.exec(type);
    if (arr) type = arr[1]!;
    const ref = /^(\w+)$/.exec(type);
    const target = ref && iface.imports.get(ref[1]!);
    if (!target) continue; // primitive, literal union, map or model-base type: a leaf here
    if (arr && Array.isArray(child)) child.forEach((c, i) => out.push(...unknownFields(c, target, `${at}.${key}[${i}]`)));
    else out.push(...unknownFields(child, target, `${at}.${key}`));
  }
  return out;
}
