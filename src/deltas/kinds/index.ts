// Every delta kind registers itself on import; the order here is the order their hooks run in.
import './lora.js';
import './ia3.js';
