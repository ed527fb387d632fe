import { destination, pino, stdTimeFunctions, type DestinationStream, type Logger } from 'pino';

export type { Logger };

export interface LoggerOptions {
  level?: string;
  /** Where JSON lines go; stdout by default (tests pass a stream they read). */
  destination?: DestinationStream;
}

/**
 * JSON-lines logs (pino): one line per HTTP request and one per generation, with the request id,
 * tenant, model/delta and outcome. Prompt and completion text never appear unless the server
 * runs with `--log-prompts` (then at debug level).
 *
 * @example createLogger({ level: 'info' }).info({ requestId, tenant }, 'request');
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: { service: 'deltaserve' },
      timestamp: stdTimeFunctions.isoTime,
      // Keys are hashed in the auth table and never passed to the logger; redact headers anyway.
      redact: ['req.headers.authorization', 'headers.authorization'],
    },
    options.destination ?? destination({ dest: 1, sync: true }),
  );
}
