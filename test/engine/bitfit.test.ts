/**
 * BitFit through the real engine against its oracle (test/oracle/kinds/bitfit.ts) on Llama (no
 * biases: the tuned bias is added), Qwen2 (q/k/v biases replaced, the others added) and GPT-2
 * (every Conv1D bias replaced); see specification-harness.ts for the checks.
 */
import { writeTinyBitfit, bitfitOracle } from '../oracle/kinds/bitfit.js';
import { describeKindAgainstOracle } from './specification-harness.js';

describeKindAgainstOracle({
  kind: 'bitfit',
  // The partial delta leaves biased layers (Qwen2's k/v, GPT-2's c_attn and c_proj) at the base bias.
  write: (dir, family, baseDir, variant) => void writeTinyBitfit(dir, family, { baseDir, seed: variant === 'full' ? 7 : 8, targetModules: variant === 'full' ? null : family === 'gpt2' ? ['c_fc'] : ['q_proj', 'down_proj'] }),
  oracle: (dir, _config, weights) => bitfitOracle(dir, weights),
});
