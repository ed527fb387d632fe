// Like worker-entry.mjs: the parser thread registers tsx before loading its TypeScript.
import { register } from 'tsx/esm/api';

register();
await import('./delta-parser-worker.ts');
