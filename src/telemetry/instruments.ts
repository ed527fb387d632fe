import type { BatchObservableResult, Counter, Histogram, Meter, Observable } from '@opentelemetry/api';

/** Engine gauges the metrics read at collection time (the serving side's counters). */
export interface ServingSnapshot {
  waiting: number;
  running: number;
  residentSlots: number;
  hostHits: number;
  hostMisses: number;
  diskHits: number;
  diskMisses: number;
  storeLoads: number;
  engineHeapBytes: number;
  engineExternalBytes: number;
}

/** Training progress the metrics read at collection time. */
export interface TrainingSnapshot {
  jobs: Record<string, number>;
  /** The running job's step and total, latest loss, and tokens trained by all jobs. */
  step: number | null;
  totalSteps: number | null;
  loss: number | null;
  trainedTokens: number;
}

export interface Instruments {
  timeToFirstToken: Histogram;
  timePerOutputToken: Histogram;
  requestDuration: Histogram;
  tokens: Counter;
  requests: Counter;
  deltaLoadDuration: Histogram;
  /** Sets where the observable gauges read from (the engine arrives after the meter exists). */
  observe(sources: { serving?: () => Promise<ServingSnapshot | undefined>; training?: () => TrainingSnapshot | undefined }): void;
}

/** Bucket boundaries the GenAI semantic conventions recommend for these histograms. */
const TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];
const TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5];
const DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];

/**
 * The server's metrics: the GenAI server histograms (`gen_ai.server.*`, seconds), token and
 * request counters, delta load latency by tier, and gauges read from the engine and the job
 * manager when a reader collects (queue depth, running rows, resident slots, cache hits and
 * misses per tier, training progress), and the process's RSS and V8 heap.
 */
export function createInstruments(meter: Meter): Instruments {
  let sources: Parameters<Instruments['observe']>[0] = {};
  const queueDepth = meter.createObservableGauge('deltaserve.queue.depth', { description: 'requests waiting for a batch row' });
  const runningRows = meter.createObservableGauge('deltaserve.rows.running', { description: 'sequences holding a KV-cache row (prefilling or decoding)' });
  const residentSlots = meter.createObservableGauge('deltaserve.slots.resident', { description: 'delta slots holding a delta on the device' });
  const cacheRequests = meter.createObservableCounter('deltaserve.delta.cache.requests', { description: 'delta lookups per cache tier (host, disk) and result (hit, miss); store reads as tier store, result hit' });
  const trainingJobs = meter.createObservableGauge('deltaserve.training.jobs', { description: 'fine-tuning jobs by status' });
  const trainingStep = meter.createObservableGauge('deltaserve.training.step', { description: 'optimiser steps taken by the running job' });
  const trainingProgress = meter.createObservableGauge('deltaserve.training.progress', { description: 'fraction of the running job done', unit: '1' });
  const trainingLoss = meter.createObservableGauge('deltaserve.training.loss', { description: 'training loss of the running job at its latest step' });
  const trainingTokens = meter.createObservableCounter('deltaserve.training.tokens', { description: 'tokens trained on, all jobs' });
  // The process's memory (semantic conventions' names), so that a leak shows without a shell on the host.
  meter.createObservableGauge('process.memory.usage', { unit: 'By', description: 'resident set size of the process (all threads)' }).addCallback((r) => r.observe(process.memoryUsage.rss()));
  meter.createObservableGauge('v8js.memory.heap.used', { unit: 'By', description: "V8 heap used by the HTTP thread (the engine thread's heap is its own)" }).addCallback((r) => r.observe(process.memoryUsage().heapUsed));
  const engineHeap = meter.createObservableGauge('deltaserve.engine.memory.heap.used', { unit: 'By', description: "V8 heap used by the engine thread (v8js.memory.heap.used is the HTTP thread's)" });
  const engineExternal = meter.createObservableGauge('deltaserve.engine.memory.external', { unit: 'By', description: "memory the engine thread's JavaScript objects hold outside its V8 heap (typed arrays, ONNX Runtime tensors)" });
  meter.addBatchObservableCallback(
    async (result) => {
      const serving = await sources.serving?.().catch(() => undefined);
      if (serving) {
        result.observe(queueDepth, serving.waiting);
        result.observe(runningRows, serving.running);
        result.observe(residentSlots, serving.residentSlots);
        observeCache(result, cacheRequests, serving);
        result.observe(engineHeap, serving.engineHeapBytes);
        result.observe(engineExternal, serving.engineExternalBytes);
      }
      const training = sources.training?.();
      if (!training) return;
      for (const [status, count] of Object.entries(training.jobs)) result.observe(trainingJobs, count, { 'deltaserve.training.status': status });
      result.observe(trainingTokens, training.trainedTokens);
      if (training.step === null) return;
      result.observe(trainingStep, training.step);
      if (training.totalSteps) result.observe(trainingProgress, training.step / training.totalSteps);
      if (training.loss !== null) result.observe(trainingLoss, training.loss);
    },
    [queueDepth, runningRows, residentSlots, cacheRequests, engineHeap, engineExternal, trainingJobs, trainingStep, trainingProgress, trainingLoss, trainingTokens],
  );
  return {
    timeToFirstToken: meter.createHistogram('gen_ai.server.time_to_first_token', { unit: 's', description: 'time from request arrival to the first output token', advice: { explicitBucketBoundaries: TTFT_BUCKETS } }),
    timePerOutputToken: meter.createHistogram('gen_ai.server.time_per_output_token', { unit: 's', description: 'time per output token after the first', advice: { explicitBucketBoundaries: TPOT_BUCKETS } }),
    requestDuration: meter.createHistogram('gen_ai.server.request.duration', { unit: 's', description: 'time from request arrival to its last response byte', advice: { explicitBucketBoundaries: DURATION_BUCKETS } }),
    tokens: meter.createCounter('deltaserve.tokens', { description: 'tokens processed, by gen_ai.token.type (input, output)' }),
    requests: meter.createCounter('deltaserve.requests', { description: 'generation requests by operation and outcome' }),
    deltaLoadDuration: meter.createHistogram('deltaserve.delta.load.duration', { unit: 's', description: 'time to bring a cold delta into host memory (read, verify, parse, lay out), by the tier it came from', advice: { explicitBucketBoundaries: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] } }),
    observe(next) {
      sources = { ...sources, ...next };
    },
  };
}

function observeCache(result: BatchObservableResult, counter: Observable, s: ServingSnapshot): void {
  const observe = (value: number, tier: string, outcome: string) => result.observe(counter, value, { 'deltaserve.cache.tier': tier, 'deltaserve.cache.result': outcome });
  observe(s.hostHits, 'host', 'hit');
  observe(s.hostMisses, 'host', 'miss');
  observe(s.diskHits, 'disk', 'hit');
  observe(s.diskMisses, 'disk', 'miss');
  observe(s.storeLoads, 'store', 'hit');
}
