import { fileURLToPath } from 'node:url';
import { FilesystemDeltaStore } from './filesystem.js';
import { S3DeltaStore, s3OptionsFromEnv, type S3DeltaStoreOptions } from './s3.js';
import type { DeltaStore } from './types.js';

export { DeltaNotFoundError, InvalidDeltaNameError } from './common.js';
export { PostgresClaims } from './claims-postgres.js';
export type { ObjectStore } from './objects.js';
export { FilesystemDeltaStore } from './filesystem.js';
export { S3DeltaStore, parseS3Url, s3OptionsFromEnv, type S3DeltaStoreOptions } from './s3.js';
export * from './types.js';

export interface OpenDeltaStoreOptions {
  /** Where S3 settings are read from (default `process.env`), see `s3OptionsFromEnv`. */
  env?: NodeJS.ProcessEnv;
  /** Explicit S3 settings (a claims table among them); they win over the environment's. */
  s3?: S3DeltaStoreOptions;
}

/**
 * `s3://bucket/prefix` → an S3DeltaStore (endpoint, path style and region from the environment);
 * a `file://` URL or anything else → a FilesystemDeltaStore rooted at that path.
 */
export function openDeltaStore(spec: string, options: OpenDeltaStoreOptions = {}): DeltaStore {
  if (spec.startsWith('s3://')) {
    return new S3DeltaStore(spec, { ...s3OptionsFromEnv(options.env ?? process.env), ...options.s3 });
  }
  if (spec.trim() === '') throw new Error('delta store location is empty');
  return new FilesystemDeltaStore(spec.startsWith('file:') ? fileURLToPath(spec) : spec);
}
