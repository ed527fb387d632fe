/**
 * LN tuning through the real engine against its oracle (test/oracle/kinds/ln-tuning.ts, from
 * PEFT's source) on Llama and Qwen2 (RMSNorm weights) and GPT-2 (LayerNorm weight and bias),
 * the final norm included; see specification-harness.ts for the checks.
 */
import { lnTuningOracle, writeTinyLnTuning } from '../oracle/kinds/ln-tuning.js';
import { describeKindAgainstOracle } from './specification-harness.js';

describeKindAgainstOracle({
  kind: 'ln_tuning',
  // 'full' tunes every norm (Qwen2's PEFT default is post_attention_layernorm only); 'partial' the
  // final norm and one per block, so rows with the delta keep the base for the others.
  write: (dir, family, baseDir, variant) => void writeTinyLnTuning(dir, family, { baseDir, seed: variant === 'full' ? 9 : 10, targetModules: targets(family, variant) }),
  oracle: (dir, config, weights) => lnTuningOracle(dir, config, weights),
});

function targets(family: string, variant: 'full' | 'partial'): string[] {
  if (family === 'gpt2') return variant === 'full' ? ['ln_1', 'ln_2', 'ln_f'] : ['ln_2', 'ln_f'];
  return variant === 'full' ? ['input_layernorm', 'post_attention_layernorm', 'norm'] : ['input_layernorm', 'norm'];
}
