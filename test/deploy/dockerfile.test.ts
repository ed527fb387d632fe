// Static checks of the Dockerfile and .dockerignore (no Docker daemon needed): stages, variants,
// the runtime user, health check, signal handling, and that everything copied exists.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  REPO,
  chainEnv,
  chainInstructions,
  copyOperands,
  dockerignore,
  execForm,
  parseDockerfile,
  splitFlags,
  stageByRef,
  stageChain,
  unknownDeltaserveEnv,
  walkFiles,
  type Dockerfile,
} from './lib.js';

const text = fs.readFileSync(path.join(REPO, 'Dockerfile'), 'utf8');
const df: Dockerfile = parseDockerfile(text);
const ignored = dockerignore(fs.existsSync(path.join(REPO, '.dockerignore')) ? fs.readFileSync(path.join(REPO, '.dockerignore'), 'utf8') : '');
const VARIANTS = ['cpu', 'cuda'] as const;
const finalStage = df.stages.at(-1)!;

describe('Dockerfile parser', () => {
  test('joins continuations, drops comments, reads stages and global ARGs', () => {
    const d = parseDockerfile(['# syntax=docker/dockerfile:1', 'ARG A=1', 'ARG B', 'FROM x:${A} AS One', 'RUN a \\', '  # inside', '  && b', 'from one', 'ENV K=v \\', '    L="w x"'].join('\n'));
    assert.deepEqual([...d.globalArgs], [['A', '1'], ['B', undefined]]);
    assert.deepEqual(d.stages.map((s) => [s.name, s.from]), [['one', 'x:${A}'], [null, 'one']]);
    assert.equal(d.stages[0]!.instructions[0]!.args, 'a && b');
    assert.deepEqual([...chainEnv(stageChain(d, {}).chain)], [['K', 'v'], ['L', 'w x']]);
    assert.equal(stageChain(d, {}).baseImage, 'x:1');
  });

  test('.dockerignore matching: last rule wins, parents count', () => {
    const m = dockerignore('*\n!src/\n**/*.test.ts\n');
    assert.equal(m('src/a/b.ts'), false);
    assert.equal(m('src/a/b.test.ts'), true);
    assert.equal(m('node_modules/x'), true);
    assert.equal(m('README.md'), true);
  });
});

describe('Dockerfile', () => {
  test('is multi-stage', () => {
    assert.ok(df.stages.length >= 2, `expected at least 2 stages, found ${df.stages.length}`);
    const names = df.stages.map((s) => s.name).filter(Boolean);
    assert.equal(new Set(names).size, names.length, `duplicate stage names: ${names}`);
  });

  test('ARG VARIANT selects the variant and defaults to cpu', () => {
    assert.ok(df.globalArgs.has('VARIANT'), 'a global ARG VARIANT (before the first FROM), so FROM lines can use it');
    assert.equal(df.globalArgs.get('VARIANT'), 'cpu');
    assert.ok(df.stages.some((s) => /\$\{?VARIANT\b/.test(s.from)), 'some FROM depends on ${VARIANT}');
  });

  for (const variant of VARIANTS) {
    test(`every stage the VARIANT=${variant} build needs resolves to a stage or a concrete image`, () => {
      // From the final stage: its FROM chain, and the stages its COPY --from lines name, recursively.
      const seen = new Set<number>();
      const todo = [df.stages.length - 1];
      while (todo.length) {
        const index = todo.pop()!;
        if (seen.has(index)) continue;
        seen.add(index);
        const { chain, baseImage } = stageChain(df, { VARIANT: variant }, index);
        assert.ok(baseImage.length > 0 && !baseImage.includes('$'), `stage ${df.stages[index]!.name ?? index}: base image '${baseImage}'`);
        assert.ok(!/^(deps|base)-/.test(baseImage), `stage ${df.stages[index]!.name ?? index}: '${baseImage}' looks like a missing stage`);
        for (const s of chain) {
          for (const i of s.instructions.filter((x) => x.cmd === 'COPY' || x.cmd === 'ADD')) {
            const from = splitFlags(i.args).flags.get('from');
            if (from !== undefined) todo.push(stageByRef(df, from, s.index)!.index);
          }
        }
      }
    });
  }

  test('the final stage runs as a non-root user', () => {
    const users = finalStage.instructions.filter((i) => i.cmd === 'USER');
    assert.ok(users.length > 0, 'USER in the final stage');
    const user = users.at(-1)!.args.split(':')[0]!.trim();
    assert.ok(!['root', '0', ''].includes(user), `USER ${user}`);
    // Numeric, so Kubernetes runAsNonRoot can verify it without /etc/passwd.
    assert.match(user, /^\d+$/, 'numeric USER (Kubernetes runAsNonRoot cannot verify a user name)');
  });

  test('HEALTHCHECK probes /health/ready', () => {
    const hc = finalStage.instructions.filter((i) => i.cmd === 'HEALTHCHECK');
    assert.equal(hc.length, 1, 'one HEALTHCHECK in the final stage');
    const { flags, rest } = splitFlags(hc[0]!.args);
    assert.match(rest, /^CMD\s/);
    const argv = execForm(rest.replace(/^CMD\s+/, ''));
    assert.ok(argv, 'HEALTHCHECK CMD in exec form (valid JSON array)');
    assert.ok(argv.some((a) => a.includes('/health/ready')), argv.join(' '));
    assert.ok(argv.join(' ').includes('DELTASERVE_PORT'), 'follows DELTASERVE_PORT');
    for (const f of flags.keys()) assert.ok(['interval', 'timeout', 'start-period', 'retries', 'start-interval'].includes(f), `HEALTHCHECK --${f}`);
  });

  test('exec-form ENTRYPOINT runs the compiled CLI with node (built in the image), and SIGTERM is the stop signal', () => {
    const eps = finalStage.instructions.filter((i) => i.cmd === 'ENTRYPOINT');
    assert.equal(eps.length, 1);
    const argv = execForm(eps[0]!.args);
    assert.ok(argv, `ENTRYPOINT must be exec form (JSON array) so SIGTERM reaches node: ${eps[0]!.args}`);
    assert.equal(argv[0], 'node');
    assert.ok(argv.includes('dist/cli.js'), argv.join(' '));
    assert.ok(!argv.some((a) => ['sh', '/bin/sh', 'bash', '-c'].includes(a)), 'no shell in between');
    // dist/ comes from a stage that runs the package's build script over src/ and both tsconfigs.
    const copy = finalStage.instructions.find((i) => i.cmd === 'COPY' && /\bdist\b/.test(i.args));
    assert.ok(copy, 'the final stage copies dist/');
    const build = stageByRef(df, splitFlags(copy.args).flags.get('from')!, finalStage.index)!;
    assert.ok(build.instructions.some((i) => i.cmd === 'RUN' && /npm run build\b/.test(i.args)), 'the dist stage runs npm run build');
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8'));
    assert.match(pkg.scripts.build, /tsconfig\.build\.json/);
    const copied = build.instructions.filter((i) => i.cmd === 'COPY').flatMap((i) => copyOperands(splitFlags(i.args).rest).sources);
    for (const f of ['tsconfig.json', 'tsconfig.build.json', 'src']) assert.ok(copied.includes(f), `the build stage copies ${f}`);
    const stop = finalStage.instructions.filter((i) => i.cmd === 'STOPSIGNAL');
    assert.deepEqual(stop.map((i) => i.args), ['SIGTERM']);
    const cmds = finalStage.instructions.filter((i) => i.cmd === 'CMD');
    for (const c of cmds) assert.ok(execForm(c.args), 'CMD in exec form too');
  });

  test('EXPOSE 8000, the port the server listens on', () => {
    const exposed = finalStage.instructions.filter((i) => i.cmd === 'EXPOSE').flatMap((i) => i.args.split(/\s+/));
    assert.ok(exposed.includes('8000') || exposed.includes('8000/tcp'), `EXPOSE ${exposed}`);
    for (const variant of VARIANTS) {
      const env = chainEnv(stageChain(df, { VARIANT: variant }).chain);
      assert.equal(env.get('DELTASERVE_PORT') ?? '8000', '8000');
    }
  });

  test('dependencies are installed with npm ci, never npm install', () => {
    const runs = df.stages.flatMap((s) => s.instructions.filter((i) => i.cmd === 'RUN'));
    assert.ok(runs.some((r) => /\bnpm ci\b/.test(r.args)), 'npm ci');
    assert.ok(!runs.some((r) => /\bnpm (install|i)\b/.test(r.args)), 'no npm install');
    // The lockfile and .npmrc travel with package.json into every stage that runs npm ci.
    for (const s of df.stages) {
      if (!s.instructions.some((i) => i.cmd === 'RUN' && /\bnpm ci\b/.test(i.args))) continue;
      const copied = s.instructions.filter((i) => i.cmd === 'COPY' && !splitFlags(i.args).flags.has('from')).flatMap((i) => copyOperands(splitFlags(i.args).rest).sources);
      for (const f of ['package.json', 'package-lock.json', '.npmrc']) assert.ok(copied.includes(f), `stage ${s.name ?? s.index} copies ${f} before npm ci`);
    }
  });

  test('the CUDA variant installs the CUDA 12 execution provider on a CUDA 12 + cuDNN base and defaults to --device cuda', () => {
    const { chain, baseImage } = stageChain(df, { VARIANT: 'cuda' });
    assert.match(baseImage, /^nvidia\/cuda:12\.[\w.-]*cudnn[\w.-]*-runtime-/, `CUDA runtime base: ${baseImage}`);
    assert.equal(chainEnv(chain).get('DELTASERVE_DEVICE'), 'cuda');
    // node_modules come from a stage whose install sees ONNXRUNTIME_NODE_INSTALL=cuda12.
    const copies = chainInstructions(chain).filter((i) => i.cmd === 'COPY' && /node_modules/.test(i.args));
    assert.ok(copies.length > 0, 'node_modules copied into the image');
    for (const c of copies) {
      const from = splitFlags(c.args).flags.get('from')!;
      const src = stageByRef(df, from, df.stages.length)!;
      const depsChain = stageChain(df, { VARIANT: 'cuda' }, src.index).chain;
      const env = chainEnv(depsChain);
      const npmCi = chainInstructions(depsChain).find((i) => i.cmd === 'RUN' && /\bnpm ci\b/.test(i.args));
      assert.ok(npmCi, `stage ${from} runs npm ci`);
      const flag = env.get('ONNXRUNTIME_NODE_INSTALL') ?? /ONNXRUNTIME_NODE_INSTALL=(\S+)/.exec(npmCi.args)?.[1];
      // The install script reads ONNXRUNTIME_NODE_INSTALL before npm_config_onnxruntime_node_install
      // (which .npmrc sets to skip), so this is what decides.
      assert.equal(flag, 'cuda12', `ONNXRUNTIME_NODE_INSTALL for VARIANT=cuda (stage ${from})`);
    }
    const script = fs.readFileSync(path.join(REPO, 'node_modules/onnxruntime-node/script/install-utils.js'), 'utf8');
    assert.match(script, /process\.env\.ONNXRUNTIME_NODE_INSTALL \|\| process\.env\.npm_config_onnxruntime_node_install/, 'install-utils.js still prefers ONNXRUNTIME_NODE_INSTALL');
  });

  test('the CPU variant keeps the CPU behaviour: no CUDA download, default device', () => {
    const { chain, baseImage } = stageChain(df, { VARIANT: 'cpu' });
    assert.match(baseImage, /^node:/);
    assert.ok(!['cuda', 'webgpu'].includes(chainEnv(chain).get('DELTASERVE_DEVICE') ?? 'cpu'));
    for (const c of chainInstructions(chain).filter((i) => i.cmd === 'COPY' && /node_modules/.test(i.args))) {
      const from = splitFlags(c.args).flags.get('from')!;
      const depsChain = stageChain(df, { VARIANT: 'cpu' }, stageByRef(df, from, df.stages.length)!.index).chain;
      assert.equal(chainEnv(depsChain).get('ONNXRUNTIME_NODE_INSTALL'), undefined);
      assert.ok(!chainInstructions(depsChain).some((i) => /ONNXRUNTIME_NODE_INSTALL|onnxruntime.node.install/i.test(i.args)));
    }
    assert.match(fs.readFileSync(path.join(REPO, '.npmrc'), 'utf8'), /^onnxruntime-node-install=skip$/m);
  });

  test('every COPY --from names an earlier stage', () => {
    for (const s of df.stages) {
      for (const i of s.instructions.filter((x) => x.cmd === 'COPY' || x.cmd === 'ADD')) {
        const from = splitFlags(i.args).flags.get('from');
        if (from === undefined) continue;
        assert.ok(!from.includes('$'), `line ${i.line}: COPY --from does not expand variables (${from})`);
        assert.ok(stageByRef(df, from, s.index), `line ${i.line}: COPY --from=${from} names no earlier stage`);
      }
    }
  });

  test('every file copied from the build context exists and is not excluded by .dockerignore', () => {
    for (const s of df.stages) {
      for (const i of s.instructions.filter((x) => x.cmd === 'COPY' || x.cmd === 'ADD')) {
        const { flags, rest } = splitFlags(i.args);
        if (flags.has('from')) continue;
        for (const src of copyOperands(rest).sources) {
          assert.ok(!/[*?$]/.test(src), `line ${i.line}: plain paths only (${src})`);
          assert.ok(fs.existsSync(path.join(REPO, src)), `line ${i.line}: ${src} does not exist`);
          const files = walkFiles(src);
          const sent = files.filter((f) => !ignored(f));
          assert.ok(sent.length > 0, `line ${i.line}: ${src} is excluded by .dockerignore`);
        }
      }
    }
  });

  test('the build context leaves out what the image does not need', () => {
    for (const f of ['node_modules/yaml/package.json', '.git/HEAD', 'test/helpers.ts', 'bench-results/x.json', 'scratch/x', '.gpu/x']) {
      assert.ok(ignored(f), `${f} should be excluded from the build context`);
    }
    // What the runtime needs is sent: the CLI, every non-test source, the package files.
    for (const f of ['bin/deltaserve.mjs', 'package.json', 'package-lock.json', '.npmrc', ...walkFiles('src').filter((f) => !f.endsWith('.test.ts'))]) {
      assert.ok(!ignored(f), `${f} must reach the build context`);
    }
  });

  test('the image copies bin/ and the compiled dist/ under its WORKDIR, and no TypeScript sources', () => {
    const workdirs = finalStage.instructions.filter((i) => i.cmd === 'WORKDIR');
    assert.equal(workdirs.at(-1)?.args, '/app');
    const dests = finalStage.instructions.filter((i) => i.cmd === 'COPY').map((i) => copyOperands(splitFlags(i.args).rest));
    for (const dir of ['bin', 'dist']) assert.ok(dests.some((d) => d.sources.some((s) => s === dir || s.endsWith(`/${dir}`)) && ['./' + dir, dir, `/app/${dir}`, `./${dir}/`].includes(d.dest)), `COPY ${dir}`);
    assert.ok(!dests.some((d) => d.sources.includes('src')), 'the runtime image has no src/');
  });

  test('DELTASERVE_* variables set in the image are real settings', () => {
    for (const variant of VARIANTS) {
      const env = chainEnv(stageChain(df, { VARIANT: variant }).chain);
      assert.deepEqual(unknownDeltaserveEnv(env.keys()), [], `VARIANT=${variant}`);
    }
  });

  test('the writable directories the image configures are created for its user', () => {
    const env = chainEnv(stageChain(df, { VARIANT: 'cpu' }).chain);
    const runs = finalStage.instructions.filter((i) => i.cmd === 'RUN').map((i) => i.args).join('\n');
    for (const key of ['DELTASERVE_CACHE_DIR', 'DELTASERVE_DATA_DIR']) {
      const dir = env.get(key);
      assert.ok(dir, `${key} is set (the default under HOME=/app is not writable)`);
      assert.ok(runs.includes(`mkdir -p`) && runs.includes(dir), `${dir} created`);
      assert.match(runs, new RegExp(`chown [^\\n]*${dir.replace(/\//g, '\\/')}`), `${dir} owned by the runtime user`);
    }
  });
});
