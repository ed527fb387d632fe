/**
 * Plain-TypeScript reference ("oracle") forward pass for small causal LMs.
 *
 * Deliberately naive: one position at a time, float64 accumulation, no KV
 * cache, no vectorisation. It exists only so tests can check the real ONNX
 * Runtime engine on model families for which we have no PyTorch reference.
 *
 * Families (config.model_type): llama, mistral, qwen2, gpt2.
 */

export interface OracleTensor {
  shape: number[];
  data: Float32Array;
}

export type OracleWeights = Map<string, OracleTensor>;

/**
 * What the forward reads of the weights: OracleWeights, or float64 values where a test
 * differentiates the weights themselves (full fine-tuning's first step), whose central
 * differences float32 storage would round.
 */
export interface ForwardTensor {
  shape: number[];
  data: ArrayLike<number>;
}
export type ForwardWeights = ReadonlyMap<string, ForwardTensor>;

export interface OracleLoraModule {
  /** lora_A.weight, row-major [r, in] */
  A: Float32Array;
  /** lora_B.weight, row-major [out, r] */
  B: Float32Array;
  r: number;
  /** lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora */
  scale: number;
  /**
   * Informational: true for GPT-2 Conv1D targets. PEFT keeps lora_A [r,in] and
   * lora_B [out,r] for Conv1D too (in/out taken from the Conv1D weight shape
   * [in,out]), and its forward is lora_B(lora_A(x)) either way, so this flag
   * does not change the LoRA math; the base weight layout is decided by the
   * family (GPT-2 Conv1D weights are always [in,out]).
   */
  fanInFanOut?: boolean;
}

/** module path like 'model.layers.0.self_attn.q_proj' (GPT-2: 'transformer.h.0.attn.c_attn') */
export interface OracleLora {
  [module: string]: OracleLoraModule;
}

/**
 * A delta as the oracle applies it, at the places the reference implementation (PEFT, or the
 * `adapters` library) changes the model. Each kind's oracle (test/oracle/kinds/) builds one from
 * the adapter files, following that library's source; none of this looks at deltaserve's lowering.
 * Vectors are float64; module paths are PEFT's (`model.layers.0.self_attn.q_proj`,
 * `transformer.h.0.attn.c_attn`); norm paths are module paths too (`model.layers.0.input_layernorm`).
 */
export interface OracleDelta {
  /** Virtual token embeddings placed before the prompt at positions 0..n-1 (prompt tuning); no logits are returned for them. */
  virtualEmbeddings?: Vec[];
  /** Per layer, keys and values of n virtual positions prepended to the cache (prefix tuning); the prompt starts at position n. */
  prefix?: { key: Vec[]; value: Vec[] }[];
  /** A linear layer's input, before its weight. */
  projectionInput?(module: string, x: Vec): Vec;
  /** A linear layer's output, after weight and bias (x is the input the weight saw). */
  projectionOutput?(module: string, x: Vec, y: Vec): Vec;
  /** A norm's output: given the norm's input and the base output, return the output to use. */
  norm?(module: string, x: Vec, base: Vec): Vec;
  /** A sub-block's output added to its residual (the hook owns the residual add). */
  blockOutput?(layer: number, location: 'attention' | 'mlp', output: Vec, residual: Vec): Vec;
}

// ---------------------------------------------------------------------------
// small helpers

export type Vec = Float64Array;

function getTensor(weights: ForwardWeights, names: string[]): ForwardTensor {
  for (const n of names) {
    const t = weights.get(n);
    if (t) return t;
  }
  throw new Error(`oracle: missing tensor ${names.join(' | ')}`);
}

function maybeTensor(weights: ForwardWeights, names: string[]): ForwardTensor | undefined {
  for (const n of names) {
    const t = weights.get(n);
    if (t) return t;
  }
  return undefined;
}

function findLora(lora: OracleLora | undefined, names: string[]): OracleLoraModule | undefined {
  if (!lora) return undefined;
  for (const n of names) {
    const m = lora[n];
    if (m) return m;
  }
  return undefined;
}

/**
 * y = x W^T + b + scale * (x A^T) B^T.
 * W is [out, in] (nn.Linear) unless `conv1d`, in which case it is [in, out]
 * (transformers Conv1D: y = x W + b).
 */
function linear(
  x: Vec,
  W: ForwardTensor,
  bias: ForwardTensor | undefined,
  lora: OracleLoraModule | undefined,
  conv1d = false,
): Vec {
  const [d0, d1] = W.shape as [number, number];
  const inF = conv1d ? d0 : d1;
  const outF = conv1d ? d1 : d0;
  if (x.length !== inF) throw new Error(`oracle: linear input ${x.length} != ${inF}`);
  const w = W.data;
  const y = new Float64Array(outF);
  for (let o = 0; o < outF; o++) {
    let acc = bias ? bias.data[o]! : 0;
    if (conv1d) {
      for (let i = 0; i < inF; i++) acc += x[i]! * w[i * outF + o]!;
    } else {
      const row = o * inF;
      for (let i = 0; i < inF; i++) acc += x[i]! * w[row + i]!;
    }
    y[o] = acc;
  }
  if (lora) {
    const r = lora.r;
    if (lora.A.length !== r * inF) throw new Error(`oracle: lora_A size ${lora.A.length} != ${r}x${inF}`);
    if (lora.B.length !== outF * r) throw new Error(`oracle: lora_B size ${lora.B.length} != ${outF}x${r}`);
    const h = new Float64Array(r);
    for (let k = 0; k < r; k++) {
      let acc = 0;
      for (let i = 0; i < inF; i++) acc += x[i]! * lora.A[k * inF + i]!;
      h[k] = acc;
    }
    for (let o = 0; o < outF; o++) {
      let acc = 0;
      for (let k = 0; k < r; k++) acc += h[k]! * lora.B[o * r + k]!;
      y[o] = y[o]! + lora.scale * acc;
    }
  }
  return y;
}

function rmsNorm(x: Vec, w: ForwardTensor, eps: number): Vec {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i]! * x[i]!;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = x[i]! * inv * w.data[i]!;
  return y;
}

function layerNorm(x: Vec, w: ForwardTensor, b: ForwardTensor, eps: number): Vec {
  const n = x.length;
  let mean = 0;
  for (let i = 0; i < n; i++) mean += x[i]!;
  mean /= n;
  let v = 0;
  for (let i = 0; i < n; i++) v += (x[i]! - mean) ** 2;
  v /= n;
  const inv = 1 / Math.sqrt(v + eps);
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) y[i] = (x[i]! - mean) * inv * w.data[i]! + b.data[i]!;
  return y;
}

function addInPlace(a: Vec, b: Vec): void {
  for (let i = 0; i < a.length; i++) a[i] = a[i]! + b[i]!;
}

function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** erf via the Numerical Recipes erfc Chebyshev fit (fractional error < 1.2e-7). */
function erf(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t *
                  (0.09678418 +
                    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? 1 - r : r - 1;
}

function activation(name: string, x: number): number {
  switch (name) {
    case 'silu':
    case 'swish':
      return silu(x);
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
    case 'gelu_fast':
      return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
    case 'gelu':
      return 0.5 * x * (1 + erf(x / Math.SQRT2));
    case 'relu':
      return x > 0 ? x : 0;
    default:
      throw new Error(`oracle: unsupported activation ${name}`);
  }
}

function softmaxInPlace(s: Float64Array): void {
  let m = -Infinity;
  for (const v of s) if (v > m) m = v;
  let sum = 0;
  for (let i = 0; i < s.length; i++) {
    s[i] = Math.exp(s[i]! - m);
    sum += s[i]!;
  }
  for (let i = 0; i < s.length; i++) s[i] = s[i]! / sum;
}

/**
 * Causal attention. q[t] is [numHeads*headDim], k[t]/v[t] are
 * [numKvHeads*headDim]. Query head h uses kv head floor(h / (numHeads/numKvHeads)).
 */
function causalAttention(q: Vec[], k: Vec[], v: Vec[], numHeads: number, numKvHeads: number, headDim: number, scale: number, prefix?: { key: Vec[]; value: Vec[] }): Vec[] {
  const T = q.length;
  const groups = numHeads / numKvHeads;
  if (!Number.isInteger(groups)) throw new Error('oracle: num_attention_heads must be a multiple of num_key_value_heads');
  // Prefix keys/values (prefix tuning) come first and every token sees them.
  const keys = [...(prefix?.key ?? []), ...k];
  const values = [...(prefix?.value ?? []), ...v];
  const P = prefix?.key.length ?? 0;
  const out: Vec[] = [];
  for (let t = 0; t < T; t++) {
    const o = new Float64Array(numHeads * headDim);
    for (let h = 0; h < numHeads; h++) {
      const kh = Math.floor(h / groups);
      const scores = new Float64Array(P + t + 1);
      for (let s = 0; s <= P + t; s++) {
        let acc = 0;
        for (let d = 0; d < headDim; d++) acc += q[t]![h * headDim + d]! * keys[s]![kh * headDim + d]!;
        scores[s] = acc * scale;
      }
      softmaxInPlace(scores);
      for (let d = 0; d < headDim; d++) {
        let acc = 0;
        for (let s = 0; s <= P + t; s++) acc += scores[s]! * values[s]![kh * headDim + d]!;
        o[h * headDim + d] = acc;
      }
    }
    out.push(o);
  }
  return out;
}

function embedRow(table: ForwardTensor, id: number): Vec {
  const [rows, dim] = table.shape as [number, number];
  if (!Number.isInteger(id) || id < 0 || id >= rows) throw new Error(`oracle: token id ${id} out of range [0,${rows})`);
  const v = new Float64Array(dim);
  for (let i = 0; i < dim; i++) v[i] = table.data[id * dim + i]!;
  return v;
}

function toF32(v: Vec): Float32Array {
  return Float32Array.from(v);
}

// ---------------------------------------------------------------------------
// rotary embeddings

/** Inverse frequencies exactly as transformers' default / llama3 rope init (computed in float64). */
export function ropeInvFreq(config: any): Float64Array {
  const params: Record<string, any> = { ...(config.rope_scaling ?? {}), ...(config.rope_parameters ?? {}) };
  const theta: number = params.rope_theta ?? config.rope_theta ?? 10000;
  const ropeType: string = params.rope_type ?? params.type ?? 'default';
  const headDim: number = config.head_dim ?? config.hidden_size / config.num_attention_heads;
  const partial: number = params.partial_rotary_factor ?? config.partial_rotary_factor ?? 1;
  if (partial !== 1) throw new Error('oracle: partial_rotary_factor != 1 not supported');
  const dim = headDim;
  const inv = new Float64Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) inv[i] = 1 / Math.pow(theta, (2 * i) / dim);
  if (ropeType === 'default') return inv;
  if (ropeType === 'llama3') {
    const factor: number = params.factor;
    const low: number = params.low_freq_factor;
    const high: number = params.high_freq_factor;
    const oldCtx: number = params.original_max_position_embeddings;
    const lowWavelen = oldCtx / low;
    const highWavelen = oldCtx / high;
    for (let i = 0; i < inv.length; i++) {
      const f = inv[i]!;
      const wavelen = (2 * Math.PI) / f;
      let g = wavelen > lowWavelen ? f / factor : f;
      const isMedium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
      if (isMedium) {
        const smooth = (oldCtx / wavelen - low) / (high - low);
        g = ((1 - smooth) * g) / factor + smooth * g;
      }
      inv[i] = g;
    }
    return inv;
  }
  throw new Error(`oracle: unsupported rope_type ${ropeType}`);
}

/** HF rotate_half convention: pairs (d, d + headDim/2). Applied per head, in place. */
function applyRope(x: Vec, numHeads: number, headDim: number, pos: number, invFreq: Float64Array): void {
  const half = headDim / 2;
  for (let h = 0; h < numHeads; h++) {
    const base = h * headDim;
    for (let d = 0; d < half; d++) {
      const ang = pos * invFreq[d]!;
      const c = Math.cos(ang);
      const s = Math.sin(ang);
      const x1 = x[base + d]!;
      const x2 = x[base + d + half]!;
      x[base + d] = x1 * c - x2 * s;
      x[base + d + half] = x2 * c + x1 * s;
    }
  }
}

// ---------------------------------------------------------------------------
// families

/** Applies the deltas' hooks around one linear layer (LoRA through the classic path). */
function hookedLinear(deltas: OracleDelta[], module: string, x: Vec, run: (x: Vec) => Vec): Vec {
  let input = x;
  for (const d of deltas) if (d.projectionInput) input = d.projectionInput(module, input);
  let y = run(input);
  for (const d of deltas) if (d.projectionOutput) y = d.projectionOutput(module, input, y);
  return y;
}

function hookedNorm(deltas: OracleDelta[], module: string, x: Vec, base: Vec): Vec {
  let y = base;
  for (const d of deltas) if (d.norm) y = d.norm(module, x, y);
  return y;
}

function residualAdd(deltas: OracleDelta[], layer: number, location: 'attention' | 'mlp', output: Vec, residual: Vec): Vec {
  const owner = deltas.find((d) => d.blockOutput);
  if (owner?.blockOutput) return owner.blockOutput(layer, location, output, residual);
  const h = Float64Array.from(residual);
  addInPlace(h, output);
  return h;
}

/** The virtual embeddings (prompt tuning) and per-layer prefixes (prefix tuning) of a row's deltas. */
function virtualParts(deltas: OracleDelta[]): { embeddings: Vec[]; prefix?: { key: Vec[]; value: Vec[] }[] } {
  const embeddings = deltas.flatMap((d) => d.virtualEmbeddings ?? []);
  const prefix = deltas.find((d) => d.prefix)?.prefix;
  return { embeddings, prefix };
}

function llamaForward(config: any, weights: ForwardWeights, inputIds: number[], lora: OracleLora | undefined, family: 'llama' | 'qwen2', deltas: OracleDelta[]): Vec[] {
  const hidden: number = config.hidden_size;
  const numHeads: number = config.num_attention_heads;
  const numKv: number = config.num_key_value_heads ?? numHeads;
  const headDim: number = config.head_dim ?? hidden / numHeads;
  const eps: number = config.rms_norm_eps ?? 1e-6;
  const nLayers: number = config.num_hidden_layers;
  const act: string = config.hidden_act ?? 'silu';
  const qkvBias = family === 'qwen2' ? true : !!config.attention_bias;
  const oBias = family === 'qwen2' ? false : !!config.attention_bias;
  const mlpBias = !!config.mlp_bias;
  const invFreq = ropeInvFreq(config);
  const scale = 1 / Math.sqrt(headDim);

  const W = (n: string) => getTensor(weights, [n]);
  const B = (n: string, present: boolean) => (present ? maybeTensor(weights, [n]) : undefined);
  const L = (n: string) => findLora(lora, [n]);
  const proj = (x: Vec, mod: string, hasBias: boolean) => hookedLinear(deltas, mod, x, (input) => linear(input, W(`${mod}.weight`), B(`${mod}.bias`, hasBias), L(mod)));
  const norm = (x: Vec, mod: string) => hookedNorm(deltas, mod, x, rmsNorm(x, W(`${mod}.weight`), eps));

  const embed = W('model.embed_tokens.weight');
  const virtual = virtualParts(deltas);
  const offset = virtual.prefix?.[0]?.key.length ?? 0;
  let hs: Vec[] = [...virtual.embeddings.map((e) => Float64Array.from(e)), ...inputIds.map((id) => embedRow(embed, id))];

  for (let l = 0; l < nLayers; l++) {
    const p = `model.layers.${l}`;
    const q: Vec[] = [];
    const k: Vec[] = [];
    const v: Vec[] = [];
    for (let t = 0; t < hs.length; t++) {
      const x = norm(hs[t]!, `${p}.input_layernorm`);
      const qt = proj(x, `${p}.self_attn.q_proj`, qkvBias);
      const kt = proj(x, `${p}.self_attn.k_proj`, qkvBias);
      const vt = proj(x, `${p}.self_attn.v_proj`, qkvBias);
      applyRope(qt, numHeads, headDim, offset + t, invFreq);
      applyRope(kt, numKv, headDim, offset + t, invFreq);
      q.push(qt);
      k.push(kt);
      v.push(vt);
    }
    const attn = causalAttention(q, k, v, numHeads, numKv, headDim, scale, virtual.prefix?.[l]);
    const next: Vec[] = [];
    for (let t = 0; t < hs.length; t++) {
      const h = residualAdd(deltas, l, 'attention', proj(attn[t]!, `${p}.self_attn.o_proj`, oBias), hs[t]!);
      const x = norm(h, `${p}.post_attention_layernorm`);
      const g = proj(x, `${p}.mlp.gate_proj`, mlpBias);
      const u = proj(x, `${p}.mlp.up_proj`, mlpBias);
      for (let i = 0; i < g.length; i++) g[i] = activation(act, g[i]!) * u[i]!;
      next.push(residualAdd(deltas, l, 'mlp', proj(g, `${p}.mlp.down_proj`, mlpBias), h));
    }
    hs = next;
  }

  const lmHead = (config.tie_word_embeddings ? undefined : maybeTensor(weights, ['lm_head.weight'])) ?? embed;
  const lmLora = L('lm_head');
  return hs.slice(virtual.embeddings.length).map((h) => linear(norm(h, 'model.norm'), lmHead, undefined, lmLora));
}

function gpt2Forward(config: any, weights: ForwardWeights, inputIds: number[], lora: OracleLora | undefined, deltas: OracleDelta[]): Vec[] {
  const hidden: number = config.n_embd;
  const numHeads: number = config.n_head;
  const nLayers: number = config.n_layer;
  const eps: number = config.layer_norm_epsilon ?? 1e-5;
  const act: string = config.activation_function ?? 'gelu_new';
  const nPositions: number = config.n_positions ?? Infinity;
  const headDim = hidden / numHeads;
  const scaleAttn = config.scale_attn_weights === false ? 1 : 1 / Math.sqrt(headDim);

  // Accept both 'transformer.x' and bare 'x' tensor / LoRA module names.
  const names = (n: string) => [`transformer.${n}`, n];
  const W = (n: string) => getTensor(weights, names(n));
  const L = (mod: string) => findLora(lora, names(mod));
  const conv = (x: Vec, mod: string) => hookedLinear(deltas, `transformer.${mod}`, x, (input) => linear(input, W(`${mod}.weight`), W(`${mod}.bias`), L(mod), true));
  const norm = (x: Vec, mod: string) => hookedNorm(deltas, `transformer.${mod}`, x, layerNorm(x, W(`${mod}.weight`), W(`${mod}.bias`), eps));

  const wte = W('wte.weight');
  const wpe = W('wpe.weight');
  const virtual = virtualParts(deltas);
  const offset = virtual.prefix?.[0]?.key.length ?? 0;
  const tokens = [...virtual.embeddings.map((e) => Float64Array.from(e)), ...inputIds.map((id) => embedRow(wte, id))];
  if (offset + tokens.length > nPositions) throw new Error(`oracle: sequence ${offset + tokens.length} exceeds n_positions ${nPositions}`);
  let hs: Vec[] = tokens.map((e, t) => {
    addInPlace(e, embedRow(wpe, offset + t));
    return e;
  });

  for (let l = 0; l < nLayers; l++) {
    const p = `h.${l}`;
    const q: Vec[] = [];
    const k: Vec[] = [];
    const v: Vec[] = [];
    for (let t = 0; t < hs.length; t++) {
      const x = norm(hs[t]!, `${p}.ln_1`);
      const qkv = conv(x, `${p}.attn.c_attn`);
      q.push(qkv.slice(0, hidden));
      k.push(qkv.slice(hidden, 2 * hidden));
      v.push(qkv.slice(2 * hidden, 3 * hidden));
    }
    const layerScale = config.scale_attn_by_inverse_layer_idx ? 1 / (l + 1) : 1;
    const attn = causalAttention(q, k, v, numHeads, numHeads, headDim, scaleAttn * layerScale, virtual.prefix?.[l]);
    const next: Vec[] = [];
    for (let t = 0; t < hs.length; t++) {
      const h = residualAdd(deltas, l, 'attention', conv(attn[t]!, `${p}.attn.c_proj`), hs[t]!);
      const x = norm(h, `${p}.ln_2`);
      const f = conv(x, `${p}.mlp.c_fc`);
      for (let i = 0; i < f.length; i++) f[i] = activation(act, f[i]!);
      next.push(residualAdd(deltas, l, 'mlp', conv(f, `${p}.mlp.c_proj`), h));
    }
    hs = next;
  }

  const lmHead = maybeTensor(weights, ['lm_head.weight']) ?? wte;
  const lmLora = findLora(lora, ['lm_head']);
  return hs.slice(virtual.embeddings.length).map((h) => linear(norm(h, 'ln_f'), lmHead, undefined, lmLora));
}

// ---------------------------------------------------------------------------
// public API

/** Logits for every position of `inputIds` (not for virtual tokens), each a Float32Array of length vocab. */
export function oracleForward(config: any, weights: ForwardWeights, inputIds: number[], lora?: OracleLora, deltas: OracleDelta[] = []): Float32Array[] {
  return oracleLogits64(config, weights, inputIds, lora, deltas).map(toF32);
}

/**
 * The same logits before their rounding to float32: what finite differences of a loss need (a
 * float32 logit moves in steps of ~5e-7, which a central difference would divide by 2h).
 */
export function oracleLogits64(config: any, weights: ForwardWeights, inputIds: number[], lora?: OracleLora, deltas: OracleDelta[] = []): Vec[] {
  if (inputIds.length === 0) throw new Error('oracle: empty input');
  const mt: string = config.model_type;
  switch (mt) {
    case 'llama':
    case 'mistral':
      return llamaForward(config, weights, inputIds, lora, 'llama', deltas);
    case 'qwen2':
      return llamaForward(config, weights, inputIds, lora, 'qwen2', deltas);
    case 'gpt2':
      return gpt2Forward(config, weights, inputIds, lora, deltas);
    default:
      throw new Error(`oracle: unsupported model_type ${mt}`);
  }
}

export function logSoftmax(logits: Float32Array): Float64Array {
  let m = -Infinity;
  for (const v of logits) if (v > m) m = v;
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - m);
  const lse = m + Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i]! - lse;
  return out;
}

/** Index of the maximum (first one on ties, like torch.argmax). */
export function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}

/** Greedy decoding without a KV cache (full forward per step). Returns only the new tokens. */
export function oracleGreedy(config: any, weights: ForwardWeights, promptIds: number[], maxNewTokens: number, lora?: OracleLora, deltas: OracleDelta[] = []): number[] {
  const ids = [...promptIds];
  const out: number[] = [];
  for (let i = 0; i < maxNewTokens; i++) {
    const logits = oracleForward(config, weights, ids, lora, deltas);
    const next = argmax(logits[logits.length - 1]!);
    out.push(next);
    ids.push(next);
  }
  return out;
}

/**
 * Build an OracleLora from PEFT adapter tensors (keys
 * `base_model.model.<module>.lora_A.weight` / `.lora_B.weight`) and the
 * parsed adapter_config.json (lora_alpha, r, use_rslora, rank_pattern,
 * alpha_pattern are honoured; pattern keys are matched as module-name suffixes).
 */
export function oracleLoraFromPeft(adapterConfig: any, tensors: OracleWeights): OracleLora {
  const out: OracleLora = {};
  const prefix = 'base_model.model.';
  for (const [name, a] of tensors) {
    const m = /^(.*)\.lora_A(?:\.[^.]+)?\.weight$/.exec(name);
    if (!m) continue;
    let mod = m[1]!;
    const bName = name.replace('.lora_A', '.lora_B');
    const b = tensors.get(bName);
    if (!b) throw new Error(`oracle: missing ${bName}`);
    if (mod.startsWith(prefix)) mod = mod.slice(prefix.length);
    const r = a.shape[0]!;
    const pick = (pattern: Record<string, number> | undefined, dflt: number) => {
      for (const [k, val] of Object.entries(pattern ?? {})) if (mod === k || mod.endsWith(`.${k}`)) return val;
      return dflt;
    };
    const alpha = pick(adapterConfig.alpha_pattern, adapterConfig.lora_alpha);
    const scale = adapterConfig.use_rslora ? alpha / Math.sqrt(r) : alpha / r;
    out[mod] = { A: a.data, B: b.data, r, scale, fanInFanOut: !!adapterConfig.fan_in_fan_out };
  }
  return out;
}
