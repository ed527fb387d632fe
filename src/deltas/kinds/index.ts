// Every delta kind registers itself on import; the order here is the order their hooks run in.
// BitFit replaces a layer's bias before IA3 scales the layer's output (bias included), as PEFT orders them.
import './lora.js';
import './bitfit.js';
import './ia3.js';
import './ln-tuning.js';
import './prefix-tuning.js';
import './prompt-tuning.js';
import './p-tuning.js';
import './bottleneck.js';
// Trainable kinds (deltas/training.ts), the fine-tuning methods; registration order is the order the API lists them in.
import './lora-training.js';
import './dora-training.js';
import './ia3-training.js';
import './bitfit-training.js';
import './ln-tuning-training.js';
import './prompt-tuning-training.js';
import './prefix-tuning-training.js';
import './p-tuning-training.js';
import './bottleneck-training.js';
import './full-training.js';
