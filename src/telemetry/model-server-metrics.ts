/**
 * The metrics a Kubernetes Gateway API Inference Extension endpoint picker scrapes from model
 * servers (its model-server protocol, in vLLM's names), so LoRA-affinity routing can send a
 * request to a replica that already holds its delta:
 *   vllm:num_requests_waiting   queue length
 *   vllm:num_requests_running   sequences in the batch
 *   vllm:gpu_cache_usage_perc   KV-cache utilisation 0..1 (also as vllm:kv_cache_usage_perc); here
 *                               the share of KV-cache rows in use, since each row holds a whole context
 *   vllm:lora_requests_info     gauge whose labels list running_lora_adapters, waiting_lora_adapters
 *                               and max_lora; its value is the time of the snapshot
 * OpenTelemetry instrument names cannot contain ':', so these are rendered as text directly.
 */
export interface ModelServerSnapshot {
  modelName: string;
  waiting: number;
  running: number;
  maxRows: number;
  /** Names of the deltas of the rows in flight and of the waiting requests (see the metrics route). */
  runningAdapters: string[];
  waitingAdapters: string[];
  maxLora: number;
}

export function modelServerMetrics(s: ModelServerSnapshot, nowSeconds = Date.now() / 1000): string {
  const model = `model_name="${escapeLabel(s.modelName)}"`;
  const usage = s.maxRows ? s.running / s.maxRows : 0;
  const gauge = (name: string, help: string, value: number, labels = model) => `# HELP ${name} ${help}\n# TYPE ${name} gauge\n${name}{${labels}} ${value}\n`;
  const lora = [`max_lora="${s.maxLora}"`, `running_lora_adapters="${escapeLabel(s.runningAdapters.join(','))}"`, `waiting_lora_adapters="${escapeLabel(s.waitingAdapters.join(','))}"`].join(',');
  return [
    gauge('vllm:num_requests_waiting', 'Requests waiting to be processed.', s.waiting),
    gauge('vllm:num_requests_running', 'Requests in the running batch.', s.running),
    gauge('vllm:gpu_cache_usage_perc', 'KV-cache usage, 0..1 (share of cache rows in use).', usage),
    gauge('vllm:kv_cache_usage_perc', 'KV-cache usage, 0..1 (share of cache rows in use).', usage),
    gauge('vllm:lora_requests_info', 'Running and waiting LoRA adapters (labels); the value is the snapshot time.', nowSeconds, lora),
  ].join('');
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}
