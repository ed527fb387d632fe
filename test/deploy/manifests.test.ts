// Validates every YAML document under deploy/: Kubernetes core objects against kubernetes-models'
// schemas (plus a strict unknown-field check), CRD-backed objects (Knative Service, InferencePool,
// Gateway, HTTPRoute), the collector config, docker compose and kustomize by explicit structural
// checks, and the references between them (selectors, ports, Secrets, ConfigMaps, probes, env).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { Role } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import { RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { ConfigSchema, configFromEnv, isLoopback } from '../../src/config.js';
import { s3OptionsFromEnv } from '../../src/deltas/store/s3.js';
import { AuthFileSchema, hashKey } from '../../src/server/auth.js';
import { DEPLOY, REPO, knownDeltaserveEnv, loadDeployYaml, modelFile, unknownDeltaserveEnv, unknownFields, type YamlDoc } from './lib.js';

// ---------------------------------------------------------------------------------------------
// What the deployment files are expected to agree on.

const NAMESPACE = 'deltaserve';
const IMAGE_REPO = 'ghcr.io/deltaserve/deltaserve';
const PORT = 8000;
/** The server's queue-depth gauge as Prometheus names it (OpenTelemetry `deltaserve.queue.depth`). */
const QUEUE_METRIC = 'deltaserve_queue_depth';
/** Example API keys documented in deploy/README.md and compose.yaml; auth.example.json holds their hashes. */
const EXAMPLE_KEYS = { tenant: { acme: 'acme-example-key' }, admin: 'admin-example-key' };
/** The server's default shutdown grace when DELTASERVE_SHUTDOWN_GRACE_MS is not set. */
const DEFAULT_SHUTDOWN_GRACE_MS = 30_000;

const COMPOSE = 'deploy/compose.yaml';
const COLLECTOR = 'deploy/otel-collector/config.yaml';
const KUSTOMIZATION = 'deploy/kustomization.yaml';
const ADAPTER_VALUES = 'deploy/kubernetes/prometheus-adapter-values.yaml';
const NON_K8S = new Set([COMPOSE, COLLECTOR, KUSTOMIZATION, ADAPTER_VALUES]);

// Kubernetes core kinds, validated by kubernetes-models; `dts` drives the unknown-field check.
const CORE: Record<string, { model: new (data: any) => { validate(): void }; dts: string }> = {
  'v1/Namespace': { model: Namespace, dts: 'v1/Namespace' },
  'v1/ConfigMap': { model: ConfigMap, dts: 'v1/ConfigMap' },
  'v1/Secret': { model: Secret, dts: 'v1/Secret' },
  'v1/Service': { model: Service, dts: 'v1/Service' },
  'v1/ServiceAccount': { model: ServiceAccount, dts: 'v1/ServiceAccount' },
  'v1/PersistentVolumeClaim': { model: PersistentVolumeClaim, dts: 'v1/PersistentVolumeClaim' },
  'apps/v1/Deployment': { model: Deployment, dts: 'apps/v1/Deployment' },
  'autoscaling/v2/HorizontalPodAutoscaler': { model: HorizontalPodAutoscaler, dts: 'autoscaling/v2/HorizontalPodAutoscaler' },
  'policy/v1/PodDisruptionBudget': { model: PodDisruptionBudget, dts: 'policy/v1/PodDisruptionBudget' },
  'rbac.authorization.k8s.io/v1/Role': { model: Role, dts: 'rbac.authorization.k8s.io/v1/Role' },
  'rbac.authorization.k8s.io/v1/RoleBinding': { model: RoleBinding, dts: 'rbac.authorization.k8s.io/v1/RoleBinding' },
};
// CRD-backed kinds kubernetes-models does not have: checked structurally below.
const CUSTOM = new Set(['serving.knative.dev/v1/Service', 'inference.networking.k8s.io/v1/InferencePool', 'gateway.networking.k8s.io/v1/Gateway', 'gateway.networking.k8s.io/v1/HTTPRoute']);
const CLUSTER_SCOPED = new Set(['Namespace']);

// ---------------------------------------------------------------------------------------------
// Loading and indexing.

const docs = loadDeployYaml();
const k8s = docs.filter((d) => !NON_K8S.has(d.file));
const typeKey = (d: YamlDoc) => `${d.value.apiVersion}/${d.value.kind}`;
const one = (file: string): any => {
  const found = docs.filter((d) => d.file === file);
  assert.equal(found.length, 1, `${file}: one YAML document`);
  return found[0]!.value;
};
const compose = one(COMPOSE);
const collector = one(COLLECTOR);
const kustomization = one(KUSTOMIZATION);
const adapterValues = one(ADAPTER_VALUES);

/** ConfigMaps kustomize generates (configMapGenerator): name → data keys. */
const generatedConfigMaps = new Map<string, string[]>(
  (kustomization.configMapGenerator ?? []).map((g: any) => [g.name, (g.files ?? []).map((f: string) => (f.includes('=') ? f.split('=')[0] : path.basename(f)))]),
);

function find(kind: string, name: string, apiVersion?: string): any | undefined {
  return k8s.find((d) => d.value.kind === kind && d.value.metadata?.name === name && (!apiVersion || d.value.apiVersion === apiVersion))?.value;
}
function all(kind: string, apiVersion?: string): any[] {
  return k8s.filter((d) => d.value.kind === kind && (!apiVersion || d.value.apiVersion === apiVersion)).map((d) => d.value);
}
const where = (o: any) => `${o.kind}/${o.metadata?.name}`;

/** Keys a ConfigMap or Secret provides (generated ConfigMaps included). */
function keysOf(kind: 'ConfigMap' | 'Secret', name: string): string[] | undefined {
  const o = find(kind, name);
  if (o) return [...Object.keys(o.data ?? {}), ...Object.keys(o.stringData ?? {}), ...Object.keys(o.binaryData ?? {})];
  return kind === 'ConfigMap' ? generatedConfigMaps.get(name) : undefined;
}
function secretValue(name: string, key: string): string | undefined {
  const s = find('Secret', name);
  if (!s) return undefined;
  if (s.stringData?.[key] !== undefined) return String(s.stringData[key]);
  if (s.data?.[key] !== undefined) return Buffer.from(String(s.data[key]), 'base64').toString('utf8');
  return undefined;
}

const selects = (selector: Record<string, string> | undefined, labels: Record<string, string> | undefined) =>
  !!selector && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

/** Workloads with a pod template: Deployments and Knative Services. */
interface Workload {
  obj: any;
  podLabels: Record<string, string>;
  pod: any;
  knative: boolean;
}
const workloads: Workload[] = [
  ...all('Deployment', 'apps/v1').map((d) => ({ obj: d, podLabels: d.spec.template.metadata?.labels ?? {}, pod: d.spec.template.spec, knative: false })),
  ...all('Service', 'serving.knative.dev/v1').map((s) => ({ obj: s, podLabels: s.spec.template.metadata?.labels ?? {}, pod: s.spec.template.spec, knative: true })),
];

type EnvValue = { value: string } | { secret: { name: string; key: string } } | { configMap: { name: string; key: string } } | { field: string };

/** A container's environment as the kubelet builds it: envFrom first, then env (later wins). */
function containerEnv(c: any): Map<string, EnvValue> {
  const env = new Map<string, EnvValue>();
  for (const src of c.envFrom ?? []) {
    const prefix = src.prefix ?? '';
    if (src.configMapRef) {
      const cm = find('ConfigMap', src.configMapRef.name);
      for (const [k, v] of Object.entries(cm?.data ?? {})) env.set(prefix + k, { value: String(v) });
    }
    if (src.secretRef) for (const k of keysOf('Secret', src.secretRef.name) ?? []) env.set(prefix + k, { secret: { name: src.secretRef.name, key: k } });
  }
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env.set(e.name, { value: String(e.value) });
    else if (e.valueFrom?.secretKeyRef) env.set(e.name, { secret: e.valueFrom.secretKeyRef });
    else if (e.valueFrom?.configMapKeyRef) env.set(e.name, { configMap: e.valueFrom.configMapKeyRef });
    else if (e.valueFrom?.fieldRef) env.set(e.name, { field: e.valueFrom.fieldRef.fieldPath });
    else env.set(e.name, { value: '' });
  }
  return env;
}
const plain = (env: Map<string, EnvValue>): Record<string, string> =>
  Object.fromEntries([...env].filter(([, v]) => 'value' in v).map(([k, v]) => [k, (v as { value: string }).value]));

const deltaserveContainers = workloads.flatMap((w) => (w.pod.containers ?? []).filter((c: any) => String(c.image).startsWith(`${IMAGE_REPO}:`)).map((c: any) => ({ w, c })));

/** Resolves a probe/Service port (number or container port name) against a container. */
function containerPortNumber(c: any, port: number | string | undefined): number | undefined {
  if (port === undefined) return undefined;
  if (typeof port === 'number') return (c.ports ?? []).some((p: any) => p.containerPort === port) ? port : undefined;
  return (c.ports ?? []).find((p: any) => p.name === port)?.containerPort;
}

/** Milliseconds of a preStop hook's pause (exec sleep N, or the sleep action). */
function preStopMs(c: any): number {
  const h = c.lifecycle?.preStop;
  if (!h) return 0;
  if (h.sleep?.seconds !== undefined) return h.sleep.seconds * 1000;
  const cmd: string[] = h.exec?.command ?? [];
  const i = cmd.findIndex((x) => /(^|\/)sleep$/.test(x));
  return i >= 0 ? Number(cmd[i + 1]) * 1000 : 0;
}

/** Every DELTASERVE_* variable name anywhere in deploy/. */
function allDeltaserveEnvNames(): Set<string> {
  const names = new Set<string>();
  for (const cm of all('ConfigMap')) for (const k of Object.keys(cm.data ?? {})) names.add(k);
  for (const w of workloads) for (const c of [...(w.pod.containers ?? []), ...(w.pod.initContainers ?? [])]) for (const e of c.env ?? []) names.add(e.name);
  for (const svc of Object.values<any>(compose.services)) for (const k of Object.keys(composeEnv(svc))) names.add(k);
  return new Set([...names].filter((n) => n.startsWith('DELTASERVE_')));
}

function composeEnv(svc: any): Record<string, string> {
  const e = svc.environment ?? {};
  if (Array.isArray(e)) return Object.fromEntries(e.map((kv: string) => [kv.split('=')[0], kv.split('=').slice(1).join('=')]));
  return Object.fromEntries(Object.entries(e).map(([k, v]) => [k, v === null ? '' : String(v)]));
}

/** `45s`, `1m30s`, `500ms` → milliseconds. */
function durationMs(s: string): number {
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(ms|us|h|m|s)/g;
  let matched = '';
  for (const m of s.matchAll(re)) {
    matched += m[0];
    total += Number(m[1]) * { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001 }[m[2] as 'h']!;
  }
  assert.equal(matched, s, `duration '${s}'`);
  return total;
}

/** The DELTASERVE_* settings a set of plain variables gives, validated by the server's own schema. */
function parseSettings(env: Record<string, string>) {
  const parsed = ConfigSchema.safeParse(configFromEnv(env));
  assert.ok(parsed.success, `settings do not validate: ${parsed.success ? '' : parsed.error.issues.map((i) => `${String(i.path[0])}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

function checkAuthFile(raw: unknown, where: string) {
  const parsed = AuthFileSchema.safeParse(raw);
  assert.ok(parsed.success, `${where}: not a valid auth file: ${parsed.success ? '' : parsed.error.message}`);
  for (const [tenant, key] of Object.entries(EXAMPLE_KEYS.tenant)) assert.ok(parsed.data.tenants[tenant]?.keys.includes(hashKey(key)), `${where}: tenant ${tenant} has the hash of '${key}'`);
  assert.ok(parsed.data.admin_keys.includes(hashKey(EXAMPLE_KEYS.admin)), `${where}: admin key is the hash of '${EXAMPLE_KEYS.admin}'`);
  return parsed.data;
}

// ---------------------------------------------------------------------------------------------

describe('deploy/ YAML', () => {
  test('every file parses, and every document is a known kind', () => {
    assert.ok(docs.length > 10, `found ${docs.length} documents`);
    for (const file of NON_K8S) assert.ok(docs.some((d) => d.file === file), `${file} exists`);
    for (const d of k8s) {
      assert.equal(typeof d.value.apiVersion, 'string', `${d.file}#${d.index}: apiVersion`);
      assert.equal(typeof d.value.kind, 'string', `${d.file}#${d.index}: kind`);
      assert.ok(CORE[typeKey(d)] || CUSTOM.has(typeKey(d)), `${d.file}#${d.index}: ${typeKey(d)} is neither a validated core kind nor a checked custom kind`);
      assert.match(String(d.value.metadata?.name), /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, `${d.file}#${d.index}: metadata.name`);
    }
  });

  test('core kinds validate against the Kubernetes schemas (kubernetes-models) with no unknown fields', () => {
    for (const d of k8s.filter((d) => CORE[typeKey(d)])) {
      const { model, dts } = CORE[typeKey(d)]!;
      assert.doesNotThrow(() => new model(d.value).validate(), `${d.file}: ${where(d.value)}`);
      assert.deepEqual(unknownFields(d.value, modelFile(dts)), [], `${d.file}: ${where(d.value)} has unknown fields`);
    }
  });

  test('the strict field check catches a misspelt field', () => {
    const dep = structuredClone(find('Deployment', 'deltaserve'));
    dep.spec.template.spec.containers[0].readinessprobe = dep.spec.template.spec.containers[0].readinessProbe;
    assert.deepEqual(unknownFields(dep, modelFile('apps/v1/Deployment')), ['.spec.template.spec.containers[0].readinessprobe']);
    const bad = structuredClone(find('Deployment', 'deltaserve'));
    bad.spec.template.spec.containers[0].ports[0].containerPort = '8000';
    assert.throws(() => new Deployment(bad).validate());
  });

  test('everything lives in the deltaserve namespace, names are unique per kind', () => {
    assert.ok(find('Namespace', NAMESPACE), 'a Namespace object');
    const seen = new Set<string>();
    for (const d of k8s) {
      const o = d.value;
      if (!CLUSTER_SCOPED.has(o.kind)) assert.equal(o.metadata.namespace, NAMESPACE, `${d.file}: ${where(o)} namespace`);
      const key = `${o.apiVersion}/${o.kind}/${o.metadata.name}`;
      assert.ok(!seen.has(key), `duplicate ${key}`);
      seen.add(key);
    }
    // Knative creates a Kubernetes Service named after the Knative Service.
    for (const ks of all('Service', 'serving.knative.dev/v1')) assert.ok(!find('Service', ks.metadata.name, 'v1'), `Knative Service ${ks.metadata.name} clashes with a core Service`);
  });

  test('every DELTASERVE_* variable is a real setting', () => {
    // The allowed extras (settings src/ is gaining) are listed, with reasons, in lib.ts.
    assert.deepEqual(unknownDeltaserveEnv(allDeltaserveEnvNames()), [], `known: ${[...knownDeltaserveEnv()].sort().join(', ')}`);
  });

  test('no Secret carries something that looks like a real credential', () => {
    for (const s of all('Secret')) {
      for (const [k, v] of Object.entries<string>(s.stringData ?? {})) {
        assert.doesNotMatch(v, /\b(AKIA|ASIA)[0-9A-Z]{16}\b/, `${where(s)}.${k}`);
        if (/SECRET|ACCESS_KEY|PASSWORD|TOKEN/.test(k)) assert.match(v, /REPLACE|EXAMPLE|PLACEHOLDER|CHANGE/i, `${where(s)}.${k} is a clear placeholder`);
      }
    }
  });
});

describe('Kubernetes references', () => {
  test('Deployment selectors match their pod labels', () => {
    for (const d of all('Deployment', 'apps/v1')) assert.ok(selects(d.spec.selector.matchLabels, d.spec.template.metadata.labels), where(d));
  });

  test('every volume, envFrom, secretKeyRef, configMapKeyRef and service account resolves', () => {
    for (const { obj, pod } of workloads) {
      const volumes = new Map<string, any>((pod.volumes ?? []).map((v: any) => [v.name, v]));
      for (const v of volumes.values()) {
        if (v.configMap) assert.ok(keysOf('ConfigMap', v.configMap.name), `${where(obj)}: volume ${v.name} → ConfigMap ${v.configMap.name}`);
        if (v.secret) assert.ok(keysOf('Secret', v.secret.secretName), `${where(obj)}: volume ${v.name} → Secret ${v.secret.secretName}`);
        if (v.persistentVolumeClaim) assert.ok(find('PersistentVolumeClaim', v.persistentVolumeClaim.claimName), `${where(obj)}: volume ${v.name} → PVC ${v.persistentVolumeClaim.claimName}`);
      }
      if (pod.serviceAccountName) assert.ok(find('ServiceAccount', pod.serviceAccountName), `${where(obj)}: ServiceAccount ${pod.serviceAccountName}`);
      for (const c of [...(pod.containers ?? []), ...(pod.initContainers ?? [])]) {
        for (const m of c.volumeMounts ?? []) assert.ok(volumes.has(m.name), `${where(obj)}/${c.name}: volumeMount ${m.name} has no volume`);
        for (const src of c.envFrom ?? []) {
          if (src.configMapRef) assert.ok(keysOf('ConfigMap', src.configMapRef.name), `${where(obj)}/${c.name}: envFrom ConfigMap ${src.configMapRef.name}`);
          if (src.secretRef) assert.ok(keysOf('Secret', src.secretRef.name), `${where(obj)}/${c.name}: envFrom Secret ${src.secretRef.name}`);
        }
        for (const e of c.env ?? []) {
          const s = e.valueFrom?.secretKeyRef;
          if (s) assert.ok(keysOf('Secret', s.name)?.includes(s.key), `${where(obj)}/${c.name}: ${e.name} → Secret ${s.name} key ${s.key}`);
          const m = e.valueFrom?.configMapKeyRef;
          if (m) assert.ok(keysOf('ConfigMap', m.name)?.includes(m.key), `${where(obj)}/${c.name}: ${e.name} → ConfigMap ${m.name} key ${m.key}`);
        }
      }
    }
  });

  test('every Service selects pods of some workload and targets one of their container ports', () => {
    for (const svc of all('Service', 'v1')) {
      const targets = workloads.filter((w) => !w.knative && selects(svc.spec.selector, w.podLabels));
      assert.ok(targets.length > 0, `${where(svc)} selects no pods`);
      for (const p of svc.spec.ports) {
        const target = p.targetPort ?? p.port;
        for (const w of targets) assert.ok(w.pod.containers.some((c: any) => containerPortNumber(c, target) !== undefined), `${where(svc)} port ${p.port} → ${target} on ${where(w.obj)}`);
      }
    }
  });

  test('RoleBindings and the PodDisruptionBudget point at existing objects', () => {
    for (const rb of all('RoleBinding')) {
      assert.ok(find(rb.roleRef.kind, rb.roleRef.name), `${where(rb)} → ${rb.roleRef.kind} ${rb.roleRef.name}`);
      for (const s of rb.subjects) if (s.kind === 'ServiceAccount') assert.ok(find('ServiceAccount', s.name), `${where(rb)} → ServiceAccount ${s.name}`);
    }
    for (const pdb of all('PodDisruptionBudget')) assert.ok(workloads.some((w) => selects(pdb.spec.selector.matchLabels, w.podLabels)), `${where(pdb)} selects no pods`);
  });
});

describe('the deltaserve containers', () => {
  test('exist in the Deployment and the Knative Service', () => {
    assert.ok(deltaserveContainers.some(({ w }) => w.obj.kind === 'Deployment'));
    assert.ok(deltaserveContainers.some(({ w }) => w.knative));
  });

  for (const { w, c } of deltaserveContainers) {
    const label = `${where(w.obj)}${w.knative ? ' (Knative)' : ''}`;
    const env = containerEnv(c);
    const settings = () => parseSettings(plain(env));

    test(`${label}: settings validate, and the image variant matches the device`, () => {
      const s = settings();
      assert.equal(s.port, PORT);
      assert.ok(['cuda', 'webgpu'].includes(s.device), `a GPU device (${s.device})`);
      const gpus = c.resources?.limits?.['nvidia.com/gpu'];
      assert.equal(Number(gpus), 1, 'limits nvidia.com/gpu: 1');
      // The CUDA build of the image (Dockerfile VARIANT=cuda) for --device cuda.
      if (s.device === 'cuda') assert.equal(c.image, `${IMAGE_REPO}:latest-cuda`);
      assert.deepEqual(c.ports.map((p: any) => p.containerPort), [PORT], 'one container port, the server port');
    });

    test(`${label}: probes hit /health/ready and /health/live on the server port`, () => {
      const probePort = (p: any) => (w.knative && p.httpGet.port === undefined ? PORT : containerPortNumber(c, p.httpGet.port));
      assert.equal(c.readinessProbe?.httpGet?.path, '/health/ready');
      assert.equal(c.livenessProbe?.httpGet?.path, '/health/live');
      assert.equal(probePort(c.readinessProbe), PORT);
      assert.equal(probePort(c.livenessProbe), PORT);
      if (w.knative) {
        // Knative probes the serving port itself; a different port is rejected.
        for (const p of [c.readinessProbe, c.livenessProbe]) assert.ok(p.httpGet.port === undefined || p.httpGet.port === PORT);
        return;
      }
      assert.equal(c.startupProbe?.httpGet?.path, '/health/ready', 'a startup probe on readiness (the model load takes time)');
      assert.equal(probePort(c.startupProbe), PORT);
      const budget = (p: any) => (p.failureThreshold ?? 3) * (p.periodSeconds ?? 10) + (p.initialDelaySeconds ?? 0);
      assert.ok(budget(c.startupProbe) >= 300, `startup probe allows ${budget(c.startupProbe)} s (≥ 300 s for the model load)`);
      assert.ok(budget(c.livenessProbe) >= 30, `liveness tolerates ${budget(c.livenessProbe)} s`);
      // Readiness drops a draining replica fast.
      assert.ok(budget(c.readinessProbe) <= 30, `readiness reacts within ${budget(c.readinessProbe)} s`);
    });

    test(`${label}: the pod outlives the shutdown grace period`, () => {
      const graceMs = Number(plain(env).DELTASERVE_SHUTDOWN_GRACE_MS ?? DEFAULT_SHUTDOWN_GRACE_MS);
      assert.ok(Number.isInteger(graceMs) && graceMs > 0, `DELTASERVE_SHUTDOWN_GRACE_MS=${graceMs}`);
      // Knative uses the revision timeout as the pod's termination grace.
      const podGraceS = w.knative ? w.pod.timeoutSeconds ?? 300 : w.pod.terminationGracePeriodSeconds ?? 30;
      assert.ok(podGraceS * 1000 > graceMs + preStopMs(c), `termination grace ${podGraceS} s must exceed ${graceMs} ms + preStop ${preStopMs(c)} ms`);
    });

    test(`${label}: non-root, no privilege escalation`, () => {
      const podSc = w.pod.securityContext ?? {};
      const sc = c.securityContext ?? {};
      assert.equal(sc.runAsNonRoot ?? podSc.runAsNonRoot, true, 'runAsNonRoot');
      const uid = sc.runAsUser ?? podSc.runAsUser;
      assert.ok(uid === undefined || uid !== 0, 'runAsUser is not 0');
      assert.equal(sc.allowPrivilegeEscalation, false);
      assert.deepEqual(sc.capabilities?.drop, ['ALL']);
    });

    test(`${label}: auth file mounted from the auth Secret, required by the non-loopback bind`, () => {
      const s = settings();
      assert.ok(!isLoopback(s.host), `binds ${s.host}, reachable by the Service`);
      assert.ok(s.auth, 'DELTASERVE_AUTH is required for a non-loopback host');
      const mount = (c.volumeMounts ?? []).find((m: any) => s.auth!.startsWith(m.mountPath.replace(/\/?$/, '/')));
      assert.ok(mount, `${s.auth} lies under a volume mount`);
      const volume = w.pod.volumes.find((v: any) => v.name === mount.name);
      assert.ok(volume.secret, `${s.auth} comes from a Secret volume`);
      const key = path.posix.relative(mount.mountPath, s.auth!);
      const text = secretValue(volume.secret.secretName, key);
      assert.ok(text, `Secret ${volume.secret.secretName} has key ${key}`);
      const fromSecret = checkAuthFile(JSON.parse(text), `Secret ${volume.secret.secretName}`);
      assert.deepEqual(fromSecret, checkAuthFile(JSON.parse(fs.readFileSync(path.join(DEPLOY, 'auth.example.json'), 'utf8')), 'auth.example.json'), 'the Secret holds the same example keys as deploy/auth.example.json');
    });

    test(`${label}: S3 store with credentials from a Secret`, () => {
      const s = settings();
      assert.match(String(s.store), /^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/|$)/, 'DELTASERVE_STORE=s3://bucket/prefix');
      for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']) {
        const v = env.get(k);
        assert.ok(v && 'secret' in v, `${k} from a Secret (secretKeyRef or envFrom secretRef)`);
      }
    });

    test(`${label}: cache and data directories are writable volumes`, () => {
      const s = settings();
      const volumes = new Map<string, any>(w.pod.volumes.map((v: any) => [v.name, v]));
      for (const dir of [s.cacheDir, s.dataDir]) {
        const m = (c.volumeMounts ?? []).find((m: any) => m.mountPath === dir);
        assert.ok(m, `${dir} is a volume mount`);
        assert.ok(!m.readOnly);
        const v = volumes.get(m.name);
        assert.ok(v.emptyDir || v.persistentVolumeClaim, `${dir}: emptyDir or PVC`);
      }
      if (c.securityContext?.readOnlyRootFilesystem) {
        // tsx compiles the sources into the OS temp directory.
        assert.ok((c.volumeMounts ?? []).some((m: any) => m.mountPath === '/tmp' && !m.readOnly), 'readOnlyRootFilesystem needs a writable /tmp');
      }
      if (s.model) assert.ok((c.volumeMounts ?? []).some((m: any) => s.model!.startsWith(m.mountPath.replace(/\/?$/, '/'))), `model ${s.model} lies on a volume`);
    });

    test(`${label}: telemetry goes to the collector Service over OTLP/HTTP`, () => {
      const v = plain(env).OTEL_EXPORTER_OTLP_ENDPOINT;
      assert.ok(v, 'OTEL_EXPORTER_OTLP_ENDPOINT');
      const url = new URL(v);
      const [svcName, ns] = url.hostname.split('.');
      assert.ok(!ns || ns === NAMESPACE);
      const svc = find('Service', svcName!, 'v1');
      assert.ok(svc, `Service ${svcName}`);
      assert.ok(svc.spec.ports.some((p: any) => p.port === Number(url.port)), `Service ${svcName} port ${url.port}`);
      assert.equal(Number(url.port), portOf(collector.receivers.otlp.protocols.http.endpoint), 'the collector OTLP/HTTP receiver port');
      // Pods of that Service run the collector.
      assert.ok(workloads.some((wl) => selects(svc.spec.selector, wl.podLabels) && wl.pod.containers.some((x: any) => /opentelemetry-collector/.test(x.image))));
    });

    test(`${label}: Prometheus scrapes /metrics on the server port`, () => {
      const a = w.obj.spec.template.metadata.annotations ?? {};
      assert.equal(a['prometheus.io/scrape'], 'true');
      assert.equal(a['prometheus.io/port'], String(PORT));
      assert.equal(a['prometheus.io/path'], '/metrics');
    });
  }

  test('the Deployment is rolled with a surge and drains with a preStop pause', () => {
    const d = find('Deployment', 'deltaserve');
    assert.equal(d.spec.strategy.rollingUpdate.maxUnavailable, 0);
    assert.ok(preStopMs(d.spec.template.spec.containers[0]) > 0);
    assert.equal(d.spec.replicas, undefined, 'replicas left to the HorizontalPodAutoscaler');
  });

  test('the Service exposes the server port', () => {
    const svc = find('Service', 'deltaserve', 'v1');
    const d = find('Deployment', 'deltaserve');
    assert.ok(selects(svc.spec.selector, d.spec.template.metadata.labels));
    assert.ok(svc.spec.ports.some((p: any) => p.port === PORT && containerPortNumber(d.spec.template.spec.containers[0], p.targetPort) === PORT));
  });

  test('the objects the Knative variant borrows are labelled as shared config', () => {
    // deploy/knative/service.yaml documents: kubectl apply -f deployment.yaml -l app.kubernetes.io/component=config
    for (const { w, c } of deltaserveContainers.filter(({ w }) => w.knative)) {
      const refs: [string, string][] = [
        ...(c.envFrom ?? []).flatMap((s: any) => (s.configMapRef ? [['ConfigMap', s.configMapRef.name]] : s.secretRef ? [['Secret', s.secretRef.name]] : [])),
        ...(c.env ?? []).flatMap((e: any) => (e.valueFrom?.secretKeyRef ? [['Secret', e.valueFrom.secretKeyRef.name]] : [])),
        ...(w.pod.volumes ?? []).flatMap((v: any) => (v.secret ? [['Secret', v.secret.secretName]] : v.persistentVolumeClaim ? [['PersistentVolumeClaim', v.persistentVolumeClaim.claimName]] : [])),
      ];
      for (const [kind, name] of [...refs, ['Namespace', NAMESPACE] as [string, string]]) {
        assert.equal(find(kind, name)?.metadata.labels?.['app.kubernetes.io/component'], 'config', `${kind} ${name}`);
      }
    }
  });
});

describe('autoscaling on queue depth', () => {
  const hpa = all('HorizontalPodAutoscaler')[0];

  test('the HPA scales the deltaserve Deployment on deltaserve_queue_depth', () => {
    assert.ok(hpa, 'a HorizontalPodAutoscaler');
    assert.equal(hpa.apiVersion, 'autoscaling/v2');
    const ref = hpa.spec.scaleTargetRef;
    assert.equal(ref.kind, 'Deployment');
    assert.ok(find('Deployment', ref.name), `scaleTargetRef ${ref.name}`);
    assert.ok(find('Deployment', ref.name).spec.template.spec.containers.some((c: any) => String(c.image).startsWith(IMAGE_REPO)));
    const m = hpa.spec.metrics.find((x: any) => (x.type === 'Pods' && x.pods.metric.name === QUEUE_METRIC) || (x.type === 'External' && x.external.metric.name === QUEUE_METRIC));
    assert.ok(m, `a Pods or External metric named ${QUEUE_METRIC}`);
    const target = m.pods?.target ?? m.external?.target;
    assert.ok(['AverageValue', 'Value'].includes(target.type));
    assert.ok(Number(target.averageValue ?? target.value) > 0);
    assert.ok(hpa.spec.minReplicas >= 1 && hpa.spec.minReplicas <= hpa.spec.maxReplicas);
  });

  test('prometheus-adapter serves that metric per pod', () => {
    const rules: any[] = adapterValues.rules?.custom ?? [];
    const rule = rules.find((r) => String(r.seriesQuery).includes(QUEUE_METRIC));
    assert.ok(rule, `a prometheus-adapter rule for ${QUEUE_METRIC}`);
    assert.equal(rule.name?.as ?? QUEUE_METRIC, QUEUE_METRIC);
    assert.deepEqual(rule.resources.overrides.pod, { resource: 'pod' });
    assert.deepEqual(rule.resources.overrides.namespace, { resource: 'namespace' });
    assert.match(rule.metricsQuery, /<<\.Series>>\{<<\.LabelMatchers>>\}/);
    assert.match(rule.metricsQuery, /by \(<<\.GroupBy>>\)/);
  });
});

describe('Knative Service', () => {
  const ks = all('Service', 'serving.knative.dev/v1');
  const KNATIVE_EXTRA_POD_FIELDS = new Set(['containerConcurrency', 'timeoutSeconds', 'responseStartTimeoutSeconds', 'idleTimeoutSeconds']);
  const ANNOTATIONS = new Set(['class', 'metric', 'target', 'target-utilization-percentage', 'min-scale', 'max-scale', 'initial-scale', 'scale-down-delay', 'scale-to-zero-pod-retention-period', 'window', 'panic-window-percentage', 'panic-threshold-percentage', 'activation-scale']);

  test('exists, with only Knative Service fields', () => {
    assert.equal(ks.length, 1);
    const s = ks[0];
    assert.deepEqual(Object.keys(s).filter((k) => !['apiVersion', 'kind', 'metadata', 'spec'].includes(k)), []);
    assert.deepEqual(Object.keys(s.spec).filter((k) => !['template', 'traffic'].includes(k)), []);
    assert.deepEqual(Object.keys(s.spec.template).filter((k) => !['metadata', 'spec'].includes(k)), []);
    const podSpec = Object.fromEntries(Object.entries(s.spec.template.spec).filter(([k]) => !KNATIVE_EXTRA_POD_FIELDS.has(k)));
    assert.deepEqual(unknownFields(podSpec, modelFile('v1/PodSpec')), []);
    assert.equal(s.spec.template.spec.containers.length, 1, 'one serving container');
    assert.equal(s.spec.template.spec.containers[0].ports.length, 1, 'Knative routes to exactly one port');
    assert.ok(Number.isInteger(s.spec.template.spec.containerConcurrency) && s.spec.template.spec.containerConcurrency >= 0);
  });

  test('scales to zero on concurrency (or rps), targeting what a replica decodes at once', () => {
    const a: Record<string, unknown> = ks[0].spec.template.metadata.annotations;
    for (const [k, v] of Object.entries(a)) {
      assert.equal(typeof v, 'string', `annotation ${k} must be a string`);
      const m = /^autoscaling\.knative\.dev\/(.+)$/.exec(k);
      if (m) assert.ok(ANNOTATIONS.has(m[1]!), `unknown Knative autoscaling annotation ${k}`);
    }
    assert.equal(a['autoscaling.knative.dev/min-scale'], '0');
    assert.ok(['concurrency', 'rps'].includes(String(a['autoscaling.knative.dev/metric'])));
    const target = Number(a['autoscaling.knative.dev/target']);
    assert.ok(target > 0);
    if (a['autoscaling.knative.dev/class']) assert.equal(a['autoscaling.knative.dev/class'], 'kpa.autoscaling.knative.dev', 'scale to zero needs the KPA');
    if (a['autoscaling.knative.dev/metric'] === 'concurrency') {
      const s = parseSettings(plain(containerEnv(ks[0].spec.template.spec.containers[0])));
      assert.ok(target <= s.maxRows, `concurrency target ${target} ≤ DELTASERVE_MAX_ROWS ${s.maxRows}`);
    }
    const max = a['autoscaling.knative.dev/max-scale'];
    if (max !== undefined) assert.ok(Number(max) >= 1);
  });

  test('the revision timeout covers a full request', () => {
    const s = parseSettings(plain(containerEnv(ks[0].spec.template.spec.containers[0])));
    const timeoutS = ks[0].spec.template.spec.timeoutSeconds ?? 300;
    assert.ok(s.requestTimeoutMs === 0 || timeoutS * 1000 >= s.requestTimeoutMs, `timeoutSeconds ${timeoutS} vs DELTASERVE_REQUEST_TIMEOUT_MS ${s.requestTimeoutMs}`);
  });
});

describe('Gateway API Inference Extension', () => {
  const pool = all('InferencePool', 'inference.networking.k8s.io/v1')[0];

  test('InferencePool (inference.networking.k8s.io/v1) has the v1 shape', () => {
    assert.ok(pool, 'an InferencePool in inference.networking.k8s.io/v1');
    assert.deepEqual(Object.keys(pool.spec).filter((k) => !['selector', 'targetPorts', 'appProtocol', 'endpointPickerRef'].includes(k)), []);
    assert.deepEqual(Object.keys(pool.spec.selector), ['matchLabels'], 'v1 selector: {matchLabels}');
    const labels = pool.spec.selector.matchLabels;
    assert.ok(Object.keys(labels).length >= 1 && Object.values(labels).every((v) => typeof v === 'string'));
    assert.ok(Array.isArray(pool.spec.targetPorts) && pool.spec.targetPorts.length >= 1 && pool.spec.targetPorts.length <= 8);
    for (const p of pool.spec.targetPorts) {
      assert.deepEqual(Object.keys(p), ['number']);
      assert.ok(Number.isInteger(p.number) && p.number >= 1 && p.number <= 65535);
    }
    if (pool.spec.appProtocol !== undefined) assert.ok(['http', 'kubernetes.io/h2c'].includes(pool.spec.appProtocol));
    const ref = pool.spec.endpointPickerRef;
    assert.deepEqual(Object.keys(ref).filter((k) => !['group', 'kind', 'name', 'port', 'failureMode'].includes(k)), []);
    assert.equal(typeof ref.name, 'string');
    if ((ref.kind ?? 'Service') === 'Service') assert.ok(Number.isInteger(ref.port?.number), 'port.number is required for a Service');
    if (ref.failureMode !== undefined) assert.ok(['FailOpen', 'FailClose'].includes(ref.failureMode));
  });

  test('the pool selects the deltaserve pods on their server port', () => {
    const d = find('Deployment', 'deltaserve');
    assert.ok(selects(pool.spec.selector.matchLabels, d.spec.template.metadata.labels), 'selector matches the Deployment pod labels');
    for (const p of pool.spec.targetPorts) assert.equal(containerPortNumber(d.spec.template.spec.containers[0], p.number), p.number);
    // Only deltaserve pods: the EPP and the collector are not in the pool.
    for (const w of workloads.filter((w) => selects(pool.spec.selector.matchLabels, w.podLabels))) {
      assert.ok(w.pod.containers.some((c: any) => String(c.image).startsWith(IMAGE_REPO)), `${where(w.obj)} is in the pool`);
    }
  });

  test('the endpoint picker reference resolves to the EPP Service and its pool', () => {
    const ref = pool.spec.endpointPickerRef;
    const svc = find('Service', ref.name, 'v1');
    assert.ok(svc, `Service ${ref.name}`);
    assert.ok(svc.spec.ports.some((p: any) => p.port === ref.port.number), `Service ${ref.name} port ${ref.port.number}`);
    const epp = workloads.find((w) => selects(svc.spec.selector, w.podLabels));
    assert.ok(epp, 'EPP pods behind the Service');
    const args: string[] = epp.pod.containers[0].args ?? [];
    const flag = (name: string) => {
      const i = args.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
      return i < 0 ? undefined : args[i]!.includes('=') ? args[i]!.split('=')[1] : args[i + 1];
    };
    assert.equal(flag('pool-name'), pool.metadata.name);
    assert.equal(flag('pool-namespace') ?? NAMESPACE, pool.metadata.namespace);
    // deltaserve exports the EPP's default (vLLM) metric names; an override would have to match them.
    const expected: Record<string, string> = { 'total-queued-requests-metric': 'vllm:num_requests_waiting', 'kv-cache-usage-percentage-metric': 'vllm:gpu_cache_usage_perc', 'lora-info-metric': 'vllm:lora_requests_info' };
    for (const [name, metric] of Object.entries(expected)) if (flag(name) !== undefined) assert.equal(flag(name), metric);
  });

  test('the HTTPRoute sends traffic from the Gateway to the InferencePool', () => {
    const routes = all('HTTPRoute', 'gateway.networking.k8s.io/v1');
    assert.equal(routes.length, 1);
    const route = routes[0];
    for (const p of route.spec.parentRefs) {
      assert.equal(p.group ?? 'gateway.networking.k8s.io', 'gateway.networking.k8s.io');
      assert.equal(p.kind ?? 'Gateway', 'Gateway');
      const gw = find('Gateway', p.name, 'gateway.networking.k8s.io/v1');
      assert.ok(gw, `Gateway ${p.name}`);
      assert.equal(typeof gw.spec.gatewayClassName, 'string');
      if (p.sectionName) assert.ok(gw.spec.listeners.some((l: any) => l.name === p.sectionName), `listener ${p.sectionName}`);
    }
    const refs = route.spec.rules.flatMap((r: any) => {
      assert.deepEqual(Object.keys(r).filter((k) => !['name', 'matches', 'filters', 'backendRefs', 'timeouts', 'retry', 'sessionPersistence'].includes(k)), []);
      if (r.timeouts?.request) durationMs(r.timeouts.request);
      return r.backendRefs ?? [];
    });
    assert.ok(refs.length > 0);
    for (const b of refs) {
      assert.equal(b.group, 'inference.networking.k8s.io');
      assert.equal(b.kind, 'InferencePool');
      assert.ok(find('InferencePool', b.name, 'inference.networking.k8s.io/v1'), `InferencePool ${b.name}`);
    }
  });

  test('Gateway listeners are well-formed', () => {
    for (const gw of all('Gateway', 'gateway.networking.k8s.io/v1')) {
      const names = gw.spec.listeners.map((l: any) => l.name);
      assert.equal(new Set(names).size, names.length);
      for (const l of gw.spec.listeners) {
        assert.ok(['HTTP', 'HTTPS', 'TLS', 'TCP', 'UDP'].includes(l.protocol));
        assert.ok(Number.isInteger(l.port));
      }
    }
  });
});

function portOf(endpoint: string): number {
  const m = /:(\d+)$/.exec(endpoint);
  assert.ok(m, `endpoint ${endpoint} has a port`);
  return Number(m[1]);
}

describe('OpenTelemetry Collector config', () => {
  const SECTIONS = ['receivers', 'processors', 'exporters', 'connectors', 'extensions'] as const;
  const componentType = (id: string) => id.split('/')[0]!;

  test('OTLP receiver on gRPC 4317 and HTTP 4318, reachable from other containers', () => {
    const p = collector.receivers.otlp.protocols;
    assert.equal(portOf(p.grpc.endpoint), 4317);
    assert.equal(portOf(p.http.endpoint), 4318);
    for (const e of [p.grpc.endpoint, p.http.endpoint]) assert.match(e, /^(0\.0\.0\.0|\[::\]|:)/, `${e} binds all interfaces`);
  });

  test('batch processor; debug, Prometheus and OTLP exporters', () => {
    assert.ok('batch' in collector.processors);
    const types = Object.keys(collector.exporters).map(componentType);
    for (const t of types) assert.ok(['debug', 'prometheus', 'prometheusremotewrite', 'otlp', 'otlphttp'].includes(t), `exporter type ${t}`);
    assert.ok(types.includes('debug'));
    assert.ok(types.includes('prometheus') || types.includes('prometheusremotewrite'));
    assert.ok(types.includes('otlp') || types.includes('otlphttp'));
  });

  test('traces and metrics pipelines reference only defined components', () => {
    const pipelines = collector.service.pipelines;
    assert.ok(Object.keys(pipelines).some((p) => componentType(p) === 'traces'));
    assert.ok(Object.keys(pipelines).some((p) => componentType(p) === 'metrics'));
    for (const [name, pl] of Object.entries<any>(pipelines)) {
      assert.ok(['traces', 'metrics', 'logs'].includes(componentType(name)), `pipeline ${name}`);
      assert.ok(pl.receivers?.length > 0 && pl.exporters?.length > 0, `pipeline ${name} has receivers and exporters`);
      for (const section of ['receivers', 'processors', 'exporters'] as const) {
        for (const id of pl[section] ?? []) {
          const defined = id in (collector[section] ?? {}) || (section !== 'processors' && id in (collector.connectors ?? {}));
          assert.ok(defined, `pipeline ${name}: ${section.slice(0, -1)} ${id} is not defined`);
        }
      }
      assert.ok((pl.processors ?? []).includes('batch'), `pipeline ${name} batches`);
      if ((pl.processors ?? []).includes('memory_limiter')) assert.equal(pl.processors[0], 'memory_limiter', 'memory_limiter comes first');
    }
    for (const id of collector.service.extensions ?? []) assert.ok(id in (collector.extensions ?? {}), `extension ${id} is not defined`);
    assert.deepEqual(Object.keys(collector).filter((k) => ![...SECTIONS, 'service'].includes(k as never)), []);
  });

  test('environment placeholders are provided wherever the collector runs', () => {
    const vars = [...JSON.stringify(collector).matchAll(/\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}/g)].map((m) => m[1]!);
    const composeCollector = Object.values<any>(compose.services).find((s) => /opentelemetry-collector/.test(s.image));
    const k8sCollector = workloads.find((w) => w.pod.containers.some((c: any) => /opentelemetry-collector/.test(c.image)));
    assert.ok(composeCollector && k8sCollector);
    for (const v of vars) {
      assert.ok(composeEnv(composeCollector)[v], `compose collector sets ${v}`);
      assert.ok(k8sCollector.pod.containers[0].env?.some((e: any) => e.name === v), `Kubernetes collector sets ${v}`);
    }
  });

  test('the Kubernetes collector mounts this file (via the kustomize-generated ConfigMap)', () => {
    const w = workloads.find((w) => w.pod.containers.some((c: any) => /opentelemetry-collector/.test(c.image)))!;
    const c = w.pod.containers[0];
    const configArg = (c.args ?? []).find((a: string) => a.startsWith('--config='))?.slice('--config='.length);
    assert.ok(configArg, '--config=FILE');
    const mount = c.volumeMounts.find((m: any) => configArg.startsWith(m.mountPath.replace(/\/?$/, '/')));
    const volume = w.pod.volumes.find((v: any) => v.name === mount.name);
    const gen = (kustomization.configMapGenerator ?? []).find((g: any) => g.name === volume.configMap.name);
    assert.ok(gen, `ConfigMap ${volume.configMap.name} is generated by kustomize`);
    const key = path.posix.relative(mount.mountPath, configArg);
    const file = gen.files.map((f: string) => f.split('=')).find((kv: string[]) => (kv.length === 2 ? kv[0] : path.basename(kv[0]!)) === key);
    assert.ok(file, `generated key ${key}`);
    assert.equal(path.resolve(DEPLOY, file.at(-1)), path.join(REPO, COLLECTOR));
  });
});

describe('kustomization', () => {
  test('lists every Kubernetes manifest of deploy/kubernetes and only existing files', () => {
    const resources: string[] = kustomization.resources;
    for (const r of resources) assert.ok(fs.existsSync(path.join(DEPLOY, r)), `resource ${r}`);
    const manifests = new Set(k8s.filter((d) => d.file.startsWith('deploy/kubernetes/')).map((d) => path.relative(DEPLOY, path.join(REPO, d.file))));
    assert.deepEqual([...manifests].sort(), [...resources].sort());
    for (const g of kustomization.configMapGenerator ?? []) for (const f of g.files) assert.ok(fs.existsSync(path.join(DEPLOY, f.split('=').at(-1))), `generator file ${f}`);
    assert.equal(kustomization.namespace, NAMESPACE);
  });

  const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
  test('kubectl kustomize builds it', { skip: kubectl.status !== 0 ? 'kubectl not installed' : false }, () => {
    const r = spawnSync('kubectl', ['kustomize', DEPLOY], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const built = parseAllDocuments(r.stdout).map((d) => d.toJS());
    const cm = built.find((o: any) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('otel-collector-config-'));
    assert.ok(cm, 'the generated collector ConfigMap');
    assert.equal(cm.data['config.yaml'], fs.readFileSync(path.join(REPO, COLLECTOR), 'utf8'));
    const dep = built.find((o: any) => o.kind === 'Deployment' && o.metadata.name === 'otel-collector');
    assert.equal(dep.spec.template.spec.volumes[0].configMap.name, cm.metadata.name, 'the reference follows the hashed name');
  });
});

describe('docker compose', () => {
  const services: Record<string, any> = compose.services;
  const ds = services.deltaserve;
  const env = ds ? composeEnv(ds) : {};
  const serviceWithImage = (re: RegExp) => Object.entries(services).find(([, s]) => re.test(String(s.image)));

  test('deltaserve is built from the repository Dockerfile as the CPU image', () => {
    assert.ok(ds, 'a deltaserve service');
    const ctx = path.resolve(DEPLOY, ds.build.context);
    assert.equal(ctx, REPO);
    assert.ok(fs.existsSync(path.join(ctx, ds.build.dockerfile ?? 'Dockerfile')));
    assert.equal(ds.build.args?.VARIANT ?? 'cpu', 'cpu');
    assert.equal(ds.image, `${IMAGE_REPO}:latest`);
    assert.ok((ds.ports ?? []).some((p: string | { target: number }) => (typeof p === 'string' ? p.endsWith(`:${PORT}`) : p.target === PORT)));
    const s = parseSettings(env);
    assert.equal(s.port, PORT);
    assert.equal(s.device, 'cpu');
  });

  test('the delta store is the MinIO bucket the init container creates', () => {
    const s = parseSettings(env);
    assert.equal(s.store, 's3://deltas/prod');
    const bucket = /^s3:\/\/([^/]+)/.exec(s.store!)![1];
    const s3 = s3OptionsFromEnv(env);
    assert.equal(s3.forcePathStyle, true, 'AWS_S3_FORCE_PATH_STYLE (MinIO serves path-style)');
    const url = new URL(s3.endpoint!);
    const minio = services[url.hostname];
    assert.ok(minio && /minio\/minio/.test(minio.image), `AWS_ENDPOINT_URL_S3 names the MinIO service (${url.hostname})`);
    const address = /--address[= ]:?(\d+)/.exec((minio.command ?? []).join(' '))?.[1] ?? '9000';
    assert.equal(url.port, address, 'MinIO API port');
    const minioEnv = composeEnv(minio);
    assert.equal(env.AWS_ACCESS_KEY_ID, minioEnv.MINIO_ROOT_USER);
    assert.equal(env.AWS_SECRET_ACCESS_KEY, minioEnv.MINIO_ROOT_PASSWORD);
    assert.ok(minio.healthcheck?.test, 'MinIO has a health check');

    const [initName, init] = serviceWithImage(/^minio\/mc/)!;
    const script = ([] as string[]).concat(init.entrypoint ?? [], init.command ?? []).join(' ');
    assert.match(script, new RegExp(`mc alias set (\\w+) http://${url.hostname}:${address}\\b`));
    const alias = /mc alias set (\w+)/.exec(script)![1];
    assert.match(script, new RegExp(`mc mb (--ignore-existing |-p )*${alias}/${bucket}\\b`), `creates bucket ${bucket}`);
    assert.equal(init.depends_on?.[url.hostname]?.condition, 'service_healthy');
    assert.equal(ds.depends_on?.[initName]?.condition, 'service_completed_successfully');
    assert.deepEqual(composeEnv(init).MINIO_ROOT_USER, minioEnv.MINIO_ROOT_USER);
  });

  test('non-loopback bind with the example auth file mounted', () => {
    const s = parseSettings(env);
    assert.ok(!isLoopback(s.host));
    assert.ok(s.auth);
    const mount = (ds.volumes ?? []).map((v: string) => v.split(':')).find((v: string[]) => v[1] === s.auth);
    assert.ok(mount, `${s.auth} is mounted`);
    const source = path.resolve(DEPLOY, mount[0]);
    assert.equal(source, path.join(DEPLOY, 'auth.example.json'));
    checkAuthFile(JSON.parse(fs.readFileSync(source, 'utf8')), 'deploy/auth.example.json');
  });

  test('telemetry goes to the collector service, which mounts the shared config', () => {
    const url = new URL(env.OTEL_EXPORTER_OTLP_ENDPOINT!);
    const col = services[url.hostname];
    assert.ok(col && /opentelemetry-collector/.test(col.image), `OTEL endpoint names the collector service (${url.hostname})`);
    assert.equal(Number(url.port), portOf(collector.receivers.otlp.protocols.http.endpoint));
    const configArg = ([] as string[]).concat(col.command ?? []).find((a: string) => a.startsWith('--config='))!;
    const mount = (col.volumes ?? []).map((v: string) => v.split(':')).find((v: string[]) => v[1] === configArg.slice('--config='.length));
    assert.ok(mount, 'the --config file is mounted');
    assert.equal(path.resolve(DEPLOY, mount[0]), path.join(REPO, COLLECTOR));
    const traces = /^([\w.-]+):(\d+)$/.exec(composeEnv(col).TRACING_OTLP_ENDPOINT ?? '');
    if (traces) assert.ok(services[traces[1]!], `tracing backend service ${traces[1]}`);
  });

  test('stop grace period exceeds the shutdown grace', () => {
    const graceMs = Number(env.DELTASERVE_SHUTDOWN_GRACE_MS ?? DEFAULT_SHUTDOWN_GRACE_MS);
    assert.ok(ds.stop_grace_period, 'stop_grace_period (docker stop waits only 10 s by default)');
    assert.ok(durationMs(ds.stop_grace_period) > graceMs, `${ds.stop_grace_period} vs ${graceMs} ms`);
  });

  test('depends_on and named volumes resolve; bind mounts exist', () => {
    const named = new Set(Object.keys(compose.volumes ?? {}));
    for (const [name, s] of Object.entries(services)) {
      const deps = Array.isArray(s.depends_on) ? s.depends_on : Object.keys(s.depends_on ?? {});
      for (const d of deps) assert.ok(services[d], `${name} depends on unknown service ${d}`);
      for (const v of s.volumes ?? []) {
        const src = String(v).split(':')[0]!;
        if (/^[./]/.test(src)) assert.ok(fs.existsSync(path.resolve(DEPLOY, src)), `${name}: bind mount ${src}`);
        else assert.ok(named.has(src), `${name}: named volume ${src} is declared`);
      }
    }
  });
});

describe('deploy/README.md', () => {
  test('documents every file and the example keys', () => {
    const readme = fs.readFileSync(path.join(DEPLOY, 'README.md'), 'utf8');
    for (const file of [...new Set(docs.map((d) => d.file))]) assert.ok(readme.includes(path.relative('deploy', file)), `README mentions ${file}`);
    for (const key of [...Object.values(EXAMPLE_KEYS.tenant), EXAMPLE_KEYS.admin]) assert.ok(readme.includes(key), `README documents ${key}`);
    assert.ok(readme.includes('DELTASERVE_SHUTDOWN_GRACE_MS'));
    assert.ok(readme.includes(QUEUE_METRIC));
  });
});
