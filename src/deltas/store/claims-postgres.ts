import { PostgresConnection, PostgresError, parsePostgresUrl } from './postgres.js';
import type { Claims } from './objects-s3.js';

/**
 * Claims in a PostgreSQL table, `deltaserve_claims (key text PRIMARY KEY)`: an INSERT … ON
 * CONFLICT DO NOTHING inserts a row for exactly one of any number of concurrent callers, so
 * replicas sharing an S3 store whose server ignores conditional writes still agree on who created
 * a key. Only the claims live here; every record stays in the store.
 *
 * @example
 * const claims = await PostgresClaims.open('postgres://deltaserve:pw@db:5432/deltaserve');
 * await claims.claim('s3://bucket/deltas/acme/sql/v3/adapter_config.json'); // true once
 */
export class PostgresClaims implements Claims {
  readonly location: string;

  private constructor(private readonly pg: PostgresConnection, url: string) {
    this.location = url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
  }

  /** Connects and creates the table if needed; throws naming --control-db when the database cannot be reached. */
  static async open(url: string): Promise<PostgresClaims> {
    const claims = new PostgresClaims(new PostgresConnection(parsePostgresUrl(url)), url);
    try {
      await claims.pg.query('CREATE TABLE IF NOT EXISTS deltaserve_claims (key text PRIMARY KEY, claimed_at timestamptz NOT NULL DEFAULT now())');
    } catch (error) {
      // Two replicas creating the table at once: one of them sees the other's catalog row.
      const sqlstate = (error as PostgresError).sqlstate;
      if (sqlstate !== '23505' && sqlstate !== '42P07') {
        await claims.close();
        throw new Error(`--control-db ${claims.location}: ${(error as Error).message}`, { cause: error });
      }
    }
    return claims;
  }

  async claim(key: string): Promise<boolean> {
    const { command } = await this.pg.query('INSERT INTO deltaserve_claims (key) VALUES ($1) ON CONFLICT DO NOTHING', [key]);
    return command === 'INSERT 0 1';
  }

  /** Frees keys whose objects were deleted, so that they may be created again. */
  async release(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return;
    await this.pg.query('DELETE FROM deltaserve_claims WHERE key = ANY($1::text[])', [`{${keys.map((k) => `"${k.replace(/["\\]/g, '\\$&')}"`).join(',')}}`]);
  }

  close(): Promise<void> {
    return this.pg.close();
  }
}
