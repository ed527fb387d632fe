// Worker threads do not inherit the main thread's module hooks on every Node version,
// so the worker registers tsx itself before loading the TypeScript engine.
import { register } from 'tsx/esm/api';

register();
await import('./worker.ts');
