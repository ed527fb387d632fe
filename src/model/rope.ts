/**
 * Rotary inverse frequencies as transformers computes them (`rope_type` default, linear, llama3),
 * in float64 so the cos/sin tables are at least as exact as PyTorch's float32.
 */
export interface RopeParameters {
  rope_type?: string;
  type?: string;
  rope_theta?: number;
  factor?: number;
  low_freq_factor?: number;
  high_freq_factor?: number;
  original_max_position_embeddings?: number;
}

export function ropeInverseFrequencies(headDim: number, params: RopeParameters): Float64Array {
  const theta = params.rope_theta ?? 10000;
  const half = headDim / 2;
  // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), computed in float32
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = Math.fround(1 / Math.fround(theta ** Math.fround((2 * i) / headDim)));
  const type = params.rope_type ?? params.type ?? 'default';
  if (type === 'default') return inv;
  if (type === 'linear') return inv.map((f) => f / (params.factor ?? 1));
  if (type === 'llama3') return llama3Scaling(inv, params);
  throw new Error(`rope_type '${type}' is not supported (supported: default, linear, llama3)`);
}

function llama3Scaling(inv: Float64Array, p: RopeParameters): Float64Array {
  const factor = p.factor ?? 8;
  const low = p.low_freq_factor ?? 1;
  const high = p.high_freq_factor ?? 4;
  const oldContext = p.original_max_position_embeddings ?? 8192;
  const lowWavelen = oldContext / low;
  const highWavelen = oldContext / high;
  return inv.map((freq) => {
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen > lowWavelen) return freq / factor;
    if (wavelen < highWavelen) return freq;
    const smooth = (oldContext / wavelen - low) / (high - low);
    return (1 - smooth) * (freq / factor) + smooth * freq;
  });
}

/** cos/sin tables [maxPositions, headDim/2] for ORT's RotaryEmbedding (non-interleaved halves). */
export function ropeTables(invFreq: Float64Array, maxPositions: number, scaling = 1): { cos: Float32Array; sin: Float32Array } {
  const half = invFreq.length;
  const cos = new Float32Array(maxPositions * half);
  const sin = new Float32Array(maxPositions * half);
  for (let pos = 0; pos < maxPositions; pos++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(pos * invFreq[i]!);
      cos[pos * half + i] = Math.cos(angle) * scaling;
      sin[pos * half + i] = Math.sin(angle) * scaling;
    }
  }
  return { cos, sin };
}
