import type { Context } from 'hono';
import type { ServerState } from './context.js';

/** What an audit line records: state-changing operations on deltas, training files and jobs. */
export type AuditAction = 'delta.create' | 'delta.delete' | 'delta.pin' | 'delta.unpin' | 'delta.prefetch' | 'file.create' | 'file.delete' | 'job.create' | 'job.cancel';

/**
 * One `audit` log line per state-changing operation: who (tenant acted as, whether by an admin
 * key, the key's id — never the key), what, and on which object. Written after the operation
 * succeeded, so the log lists what happened rather than what was attempted.
 *
 * @example audit(state, c, 'delta.delete', { delta: 'acme/sql' });
 */
export function audit(state: ServerState, c: Context, action: AuditAction, target: Record<string, unknown>): void {
  state.logger.info({ audit: action, requestId: c.get('requestId'), tenant: c.get('tenant'), admin: c.get('isAdmin'), keyId: c.get('keyId') ?? null, ...target }, 'audit');
}
