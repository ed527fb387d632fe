// Like worker-entry.mjs: the loader thread registers tsx before loading its TypeScript.
import { register } from 'tsx/esm/api';

register();
await import('./delta-loader-worker.ts');
