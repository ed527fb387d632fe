/**
 * LN tuning training (src/deltas/kinds/ln-tuning-training.ts) against PEFT's LN_TUNING (ported
 * independently in test/oracle/kinds/ln-tuning.ts), on each family: the norms PEFT wraps (the
 * model type's defaults or a list) and their start (LNTuningLayer's deepcopy: the base's weight,
 * and bias for GPT-2's LayerNorm), the first AdamW step equal to the float64 oracle, 20 steps
 * lowering the loss, non-norm targets refused naming the field, and written files in PEFT's
 * save format that the oracle and a continuing job read back.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { trainableKind } from '../../src/deltas/training.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { loadWeightsF32, readConfig, type TinyFamily } from '../oracle/checkpoints.js';
import { lnTuningOracle, lnTuningOracleFromParams } from '../oracle/kinds/ln-tuning.js';
import { checkFirstStep } from '../oracle/training-step.js';
import { oracleForward } from '../oracle/transformer.js';
import { adapterDir, backboneOf, EXAMPLES, initialise, LIMITS, perturbed, refusalOf, tinyModel, trainSteps } from './train-steps.js';

const CASES: { family: TinyFamily; options: { target_modules?: string | string[] } }[] = [
  { family: 'llama', options: {} }, // PEFT's default: input_layernorm, post_attention_layernorm, norm (RMSNorm)
  { family: 'qwen2', options: { target_modules: ['input_layernorm', 'norm'] } }, // the default is post_attention_layernorm alone
  { family: 'gpt2', options: {} }, // ln_1, ln_2, ln_f: LayerNorm, weight and bias
];

describe('LN tuning training', () => {
  for (const { family, options } of CASES) {
    it(`${family} ${JSON.stringify(options)}: the copies start as the base norms, and the first AdamW step equals the float64 oracle`, async () => {
      const modelDir = tinyModel(family);
      const { params } = initialise('ln_tuning', modelDir, options);
      const oracle = lnTuningOracleFromParams(options.target_modules ?? null, readConfig(modelDir), loadWeightsF32(modelDir));
      assert.deepEqual([...params.keys()].sort(), [...oracle.initial.keys()].sort());
      for (const [name, v] of oracle.initial) assert.deepEqual(params.get(name), v, name);
      const report = await checkFirstStep({ kind: 'ln_tuning', options, modelDir, params: perturbed(params, 5, 0.2), examples: EXAMPLES, oracleDeltas: (_o, p) => [oracle.delta(p)], limits: LIMITS, samples: 3 });
      console.log(`ln_tuning ${family}`, report);
    });
  }

  it('20 steps lower the loss (llama)', async () => {
    const losses = await trainSteps('ln_tuning', tinyModel('llama'), {}, 20);
    assert.ok(losses[19]! < losses[0]! - 0.05, `loss ${losses[0]} → ${losses[19]}`);
  });

  it('refuses modules that are not norms, naming the field', () => {
    const { arch } = openCheckpoint(tinyModel('gpt2'));
    const ln = trainableKind('ln_tuning');
    const refusal = refusalOf('ln_tuning', arch);
    assert.match(refusal({ target_modules: ['ln_1', 'c_fc'] }), /^target_modules: .*transformer\.h\.0\.mlp\.c_fc', a linear module, not a norm/);
    assert.match(refusal({ target_modules: 'all-linear' }), /^target_modules: .*not a norm/);
    assert.match(refusal({ target_modules: 'transformer\\.wte' }), /^target_modules: .*an embedding module, not a norm/);
    assert.match(refusal({ target_modules: ['input_layernorm'] }), /^target_modules: .*selects no module/);
    assert.equal(refusal({ target_modules: 'transformer\\.h\\.\\d+\\.ln_1' }), 'accepted');
    for (const bad of [{ modules_to_save: ['lm_head'] }, { layers_to_transform: [0] }, { target_modules: [] }]) assert.throws(() => ln.options.parse(bad), JSON.stringify(bad));
  });

  it("writes PEFT's LN_TUNING files, which the oracle reads as the trained norms and a job continues from", () => {
    const modelDir = tinyModel('gpt2');
    const { arch, resolved, params } = initialise('ln_tuning', modelDir, {});
    const trained = perturbed(params, 9, 0.2);
    const ln = trainableKind('ln_tuning');
    const files = ln.write(arch, resolved, trained, { baseModel: 'tiny-gpt2' });
    const dir = adapterDir(files);
    const config = JSON.parse(files.config);
    assert.deepEqual([config.peft_type, config.target_modules], ['LN_TUNING', ['ln_1', 'ln_2', 'ln_f']]);
    const [cfg, base] = [readConfig(modelDir), loadWeightsF32(modelDir)];
    const ids = [5, 17, 250, 9, 42];
    const vectors = new Map([...trained].map(([k, v]) => [k, Float64Array.from(v)]));
    assert.deepEqual(oracleForward(cfg, base, ids, undefined, [lnTuningOracle(dir, cfg, base)]), oracleForward(cfg, base, ids, undefined, [lnTuningOracleFromParams(null, cfg, base).delta(vectors)]));
    const again = ln.fromDelta(files, arch, backboneOf(modelDir));
    assert.deepEqual(again.options, resolved);
    assert.deepEqual([...again.params], [...trained]);
  });
});
