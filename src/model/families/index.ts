// Importing a family registers it.
import './llama.js';
import './gpt2.js';

export { describeArchitecture } from './registry.js';
export type { HfConfig } from './registry.js';
