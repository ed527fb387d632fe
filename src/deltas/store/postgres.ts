/**
 * Just enough of the PostgreSQL frontend/backend protocol (version 3) for the claims table: one
 * connection, the extended query protocol with text parameters and text results, and the
 * password methods a server may ask for (trust, cleartext, MD5, SCRAM-SHA-256). No npm client is
 * a dependency of this project, and the claims need three statements.
 * Protocol: https://www.postgresql.org/docs/current/protocol-message-formats.html
 */
import crypto from 'node:crypto';
import net from 'node:net';

export interface PostgresOptions {
  host: string;
  port: number;
  user: string;
  password?: string;
  database: string;
}

/** An ErrorResponse from the server, with its SQLSTATE. */
export class PostgresError extends Error {
  constructor(message: string, readonly sqlstate: string | undefined) {
    super(message);
    this.name = 'PostgresError';
  }
}

/** `postgres://user:password@host:port/database` → options (TLS is not spoken: use a trusted network or a local proxy). */
export function parsePostgresUrl(url: string): PostgresOptions {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`--control-db: not a URL: ${JSON.stringify(url.slice(0, 200))}`);
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') throw new Error(`--control-db: expected postgres://user:password@host:port/database, got scheme '${parsed.protocol}'`);
  const sslmode = parsed.searchParams.get('sslmode');
  if (sslmode && sslmode !== 'disable' && sslmode !== 'prefer' && sslmode !== 'allow') throw new Error(`--control-db: sslmode=${sslmode} is not supported (this client does not speak TLS)`);
  const user = decodeURIComponent(parsed.username);
  if (!user) throw new Error('--control-db: the URL names no user');
  return {
    host: parsed.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
    port: parsed.port ? Number(parsed.port) : 5432,
    user,
    ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
    database: decodeURIComponent(parsed.pathname.slice(1)) || user,
  };
}

/**
 * One connection; queries run one at a time in the order they were made. A broken connection
 * fails the queries on it, and the next query opens a new one.
 *
 * @example
 * const pg = new PostgresConnection(parsePostgresUrl('postgres://deltaserve:pw@db:5432/deltaserve'));
 * const { rows, command } = await pg.query('INSERT INTO t(k) VALUES ($1) ON CONFLICT DO NOTHING', ['a']);
 */
export class PostgresConnection {
  private socket: net.Socket | undefined;
  private buffer = Buffer.alloc(0);
  private waiting: ((message: { type: string; body: Buffer } | Error) => void) | undefined;
  private readonly inbox: ({ type: string; body: Buffer } | Error)[] = [];
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: PostgresOptions) {}

  /** Runs one statement with text parameters; rows as arrays of text (null for NULL), and the command tag ('INSERT 0 1'). */
  query(sql: string, params: readonly (string | null)[] = []): Promise<{ rows: (string | null)[][]; command: string }> {
    const run = this.chain.then(() => this.run(sql, params));
    this.chain = run.catch(() => undefined);
    return run;
  }

  async close(): Promise<void> {
    await this.chain;
    if (this.socket && !this.socket.destroyed) {
      this.socket.end(frame('X', Buffer.alloc(0)));
      this.socket.destroy();
    }
    this.socket = undefined;
  }

  private async run(sql: string, params: readonly (string | null)[]): Promise<{ rows: (string | null)[][]; command: string }> {
    if (!this.socket || this.socket.destroyed) await this.connect();
    const values = params.map((p) => (p === null ? int32(-1) : Buffer.concat([int32(Buffer.byteLength(p)), Buffer.from(p)])));
    this.socket!.write(
      Buffer.concat([
        frame('P', Buffer.concat([cstring(''), cstring(sql), int16(0)])),
        frame('B', Buffer.concat([cstring(''), cstring(''), int16(0), int16(params.length), ...values, int16(0)])),
        frame('E', Buffer.concat([cstring(''), int32(0)])),
        frame('S', Buffer.alloc(0)),
      ]),
    );
    const rows: (string | null)[][] = [];
    let command = '';
    let failure: PostgresError | undefined;
    for (;;) {
      const { type, body } = await this.next();
      if (type === 'D') rows.push(dataRow(body));
      else if (type === 'C') command = body.toString('utf8', 0, body.length - 1);
      else if (type === 'E') failure = errorOf(body);
      else if (type === 'Z') break;
    }
    if (failure) throw failure;
    return { rows, command };
  }

  private async connect(): Promise<void> {
    const { host, port, user, database } = this.options;
    this.buffer = Buffer.alloc(0);
    this.inbox.length = 0;
    const socket = net.connect({ host, port });
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (error) => this.deliver(new Error(`PostgreSQL ${host}:${port}: ${error.message}`, { cause: error })));
    socket.on('close', () => this.deliver(new Error(`PostgreSQL ${host}:${port}: connection closed`)));
    const params = Buffer.concat([cstring('user'), cstring(user), cstring('database'), cstring(database), cstring('client_encoding'), cstring('UTF8'), Buffer.from([0])]);
    socket.write(Buffer.concat([int32(8 + params.length), int32(196608), params]));
    let scram: Scram | undefined;
    for (;;) {
      const { type, body } = await this.next();
      if (type === 'E') throw errorOf(body);
      if (type === 'Z') return;
      if (type !== 'R') continue;
      const code = body.readInt32BE(0);
      if (code === 0) continue;
      if (code === 3) this.sendPassword(this.password());
      else if (code === 5) this.sendPassword(`md5${md5(md5(this.password() + user) + body.subarray(4, 8).toString('latin1'))}`);
      else if (code === 10) {
        scram = new Scram(this.password());
        const first = Buffer.from(scram.clientFirst());
        socket.write(frame('p', Buffer.concat([cstring('SCRAM-SHA-256'), int32(first.length), first])));
      } else if (code === 11) socket.write(frame('p', Buffer.from(scram!.clientFinal(body.subarray(4).toString()))));
      else if (code === 12) scram!.verifyServer(body.subarray(4).toString());
      else throw new Error(`PostgreSQL ${host}:${port}: unsupported authentication method ${code}`);
    }
  }

  private password(): string {
    if (this.options.password === undefined) throw new Error(`PostgreSQL asks for a password; put one in --control-db (postgres://user:password@…)`);
    return this.options.password;
  }

  private sendPassword(password: string): void {
    this.socket!.write(frame('p', cstring(password)));
  }

  private receive(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    while (this.buffer.length >= 5) {
      const length = this.buffer.readInt32BE(1);
      if (this.buffer.length < 1 + length) break;
      const message = { type: String.fromCharCode(this.buffer[0]!), body: this.buffer.subarray(5, 1 + length) };
      this.buffer = this.buffer.subarray(1 + length);
      this.deliver(message);
    }
  }

  private deliver(message: { type: string; body: Buffer } | Error): void {
    const waiting = this.waiting;
    this.waiting = undefined;
    if (waiting) waiting(message);
    else this.inbox.push(message);
  }

  private async next(): Promise<{ type: string; body: Buffer }> {
    const message = this.inbox.shift() ?? (await new Promise<{ type: string; body: Buffer } | Error>((resolve) => (this.waiting = resolve)));
    if (message instanceof Error) {
      this.socket?.destroy();
      throw message;
    }
    return message;
  }
}

/** SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL uses it: no channel binding, the user name left to the startup message. */
class Scram {
  private readonly nonce = crypto.randomBytes(18).toString('base64');
  private expected = '';

  constructor(private readonly password: string) {}

  clientFirst(): string {
    return `n,,n=,r=${this.nonce}`;
  }

  clientFinal(serverFirst: string): string {
    const fields = Object.fromEntries(serverFirst.split(',').map((f) => [f[0], f.slice(2)]));
    if (!fields['r']?.startsWith(this.nonce) || !fields['s'] || !fields['i']) throw new Error('PostgreSQL SCRAM: malformed server-first message');
    const salted = crypto.pbkdf2Sync(this.password.normalize('NFKC'), Buffer.from(fields['s'], 'base64'), Number(fields['i']), 32, 'sha256');
    const clientKey = hmac(salted, 'Client Key');
    const withoutProof = `c=biws,r=${fields['r']}`;
    const authMessage = `n=,r=${this.nonce},${serverFirst},${withoutProof}`;
    const signature = hmac(crypto.createHash('sha256').update(clientKey).digest(), authMessage);
    const proof = Buffer.from(clientKey.map((byte, i) => byte ^ signature[i]!));
    this.expected = hmac(hmac(salted, 'Server Key'), authMessage).toString('base64');
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  verifyServer(serverFinal: string): void {
    if (serverFinal.trim() !== `v=${this.expected}`) throw new Error('PostgreSQL SCRAM: the server did not prove it knows the password');
  }
}

function frame(type: string, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from(type), int32(body.length + 4), body]);
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}

function int16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
}

function cstring(text: string): Buffer {
  return Buffer.concat([Buffer.from(text, 'utf8'), Buffer.from([0])]);
}

function dataRow(body: Buffer): (string | null)[] {
  const row: (string | null)[] = [];
  let offset = 2;
  for (let i = 0; i < body.readInt16BE(0); i++) {
    const length = body.readInt32BE(offset);
    offset += 4;
    row.push(length < 0 ? null : body.toString('utf8', offset, offset + length));
    if (length > 0) offset += length;
  }
  return row;
}

function errorOf(body: Buffer): PostgresError {
  const fields: Record<string, string> = {};
  for (let offset = 0; offset < body.length && body[offset] !== 0; ) {
    const end = body.indexOf(0, offset + 1);
    fields[String.fromCharCode(body[offset]!)] = body.toString('utf8', offset + 1, end);
    offset = end + 1;
  }
  return new PostgresError(`PostgreSQL: ${fields['M'] ?? 'error'}${fields['C'] ? ` (SQLSTATE ${fields['C']})` : ''}`, fields['C']);
}

const md5 = (text: string) => crypto.createHash('md5').update(text, 'latin1').digest('hex');
const hmac = (key: Buffer, text: string) => crypto.createHmac('sha256', key).update(text).digest();
