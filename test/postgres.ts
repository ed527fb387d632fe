/**
 * A throwaway PostgreSQL server for tests (Debian's `postgresql` package, which .ci/run installs):
 * initdb into a temporary directory, `postgres` on a free loopback port with SCRAM passwords,
 * stopped and removed by `stop()`. initdb refuses to run as root, so as root the server runs as
 * the package's `postgres` user.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { PostgresConnection, parsePostgresUrl } from '../src/deltas/store/postgres.js';
import { tempDir } from './helpers.js';

export interface TestPostgres {
  url: string;
  stop(): Promise<void>;
}

/** The directory holding initdb and postgres, or undefined when PostgreSQL is not installed. */
export function postgresBinaries(): string | undefined {
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root) ? fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'postgres'))) : [];
  versions.sort((a, b) => Number(b) - Number(a));
  return versions[0] ? path.join(root, versions[0], 'bin') : undefined;
}

/** Why PostgreSQL tests cannot run here, or null. In CI its absence is a failure, not a skip (.ci/run installs it). */
export function postgresMissing(): string | null {
  if (postgresBinaries()) return null;
  if (process.env.CI) throw new Error('PostgreSQL is not installed (apt-get install postgresql); .ci/run should have installed it');
  return 'PostgreSQL is not installed here (apt-get install postgresql)';
}

export async function startPostgres(): Promise<TestPostgres> {
  const bin = postgresBinaries();
  if (!bin) throw new Error('PostgreSQL is not installed (apt-get install postgresql)');
  const dir = tempDir('deltaserve-pg-');
  const ids = process.getuid?.() === 0 ? postgresUser() : undefined;
  const password = crypto.randomBytes(12).toString('hex');
  fs.writeFileSync(path.join(dir, 'pw'), password);
  fs.mkdirSync(path.join(dir, 'sock'));
  if (ids) for (const p of [dir, path.join(dir, 'pw'), path.join(dir, 'sock')]) fs.chownSync(p, ids.uid, ids.gid);
  const init = spawnSync(path.join(bin, 'initdb'), ['-D', path.join(dir, 'data'), '-U', 'deltaserve', '--auth=scram-sha-256', `--pwfile=${path.join(dir, 'pw')}`, '-E', 'UTF8', '--no-sync', '--locale=C'], { ...ids, encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`initdb failed (${init.status}): ${init.stderr || init.error?.message}`);
  const port = await freePort();
  const child: ChildProcess = spawn(path.join(bin, 'postgres'), ['-D', path.join(dir, 'data'), '-p', String(port), '-k', path.join(dir, 'sock'), '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off'], { ...ids, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (chunk: Buffer) => (log += chunk.toString()));
  const url = `postgres://deltaserve:${password}@127.0.0.1:${port}/postgres`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const probe = new PostgresConnection(parsePostgresUrl(url));
    try {
      await probe.query('SELECT 1');
      break;
    } catch (error) {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`PostgreSQL did not start: ${(error as Error).message}\n${log}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      await probe.close();
    }
  }
  return {
    url,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGINT'); // fast shutdown: open connections are closed
        await exited;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

function postgresUser(): { uid: number; gid: number } {
  const line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'));
  if (!line) throw new Error('running as root, and there is no postgres user to run PostgreSQL as');
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
