// Step 4 of deploy/image/test-image.sh: the image run the way the Deployment runs it, in-cluster,
// against the test API server (test/fakes/apiserver.mjs): the service-account mount the kubelet
// makes, KUBERNETES_SERVICE_HOST/PORT, POD_NAME/POD_NAMESPACE/POD_IP from the downward API, the
// ConfigMap's router file (deploy/kubernetes/router/sluice.yaml), uid 65532 on a read-only root.
// Objects: the base's Namespace and GatewayClass and deploy/kubernetes/examples/inference-gateway.yaml
// in "default", with one ready Pod that a simulated engine answers for.
//
// Checks: ready after the watches sync; a chat request through the Gateway's listener; the Lease
// taken by POD_NAME; status written (GatewayClass, Gateway with addresses, HTTPRoute and
// InferencePool parents); exit 0 on SIGTERM. Prints "ok: ..." / "FAIL: ..." lines and the tally
// line test-image.sh adds up; exit 1 on a failure.
//
//   node deploy/image/test-in-cluster.mjs IMAGE [podman run options...]
import { execFile, spawn, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { startFakeApiServer } = await import(join(root, 'test/fakes/apiserver.mjs'));
const { parseYamlDocuments } = await import(join(root, 'test/fakes/apiserver/yaml.mjs'));

const [image, ...runOptions] = process.argv.slice(2);
const podName = 'sluice-7d9f8b6c4-x2x7q';
const podIp = '10.244.1.7';
const enginesAt = '127.0.0.77';
let passed = 0;
let failed = 0;
const ok = (m) => { passed++; console.log(`ok: in-cluster: ${m}`); };
const bad = (m) => { failed++; console.log(`FAIL: in-cluster: ${m}`); };

async function freePort(host) {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, host, () => { const { port } = s.address(); s.close(() => res(port)); });
  });
}

async function until(fn, ms = 20000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e.message; }
    await delay(200);
  }
  return null;
}

const condition = (list, type) => (list || []).find((c) => c.type === type);
const isTrue = (list, type) => condition(list, type)?.status === 'True';

const dir = mkdtempSync(join(tmpdir(), 'sluice-in-cluster-'));
const api = await startFakeApiServer({ dir: join(dir, 'api'), crds: 'all' });
const children = [];
const name = `sluice-in-cluster-${process.pid}`;
try {
  // The objects.
  const load = (p) => parseYamlDocuments(readFileSync(join(root, p), 'utf8')).filter(Boolean);
  const gatewayPort = await freePort('127.0.0.2');
  const example = load('deploy/kubernetes/examples/inference-gateway.yaml').map((o) => {
    o.metadata.namespace = 'default';
    if (o.kind === 'Gateway') for (const l of o.spec.listeners) l.port = gatewayPort;
    return o;
  });
  api.bulkLoad([
    ...load('deploy/kubernetes/router/namespace.yaml'),
    ...load('deploy/kubernetes/gatewayclass.yaml'),
    ...example,
    // Kthena kinds and a Secret (status and RBAC of those too), an objective of the pool.
    ...load('examples/external-provider/providers.yaml').map((o) => {
      if (o.kind === 'Secret' && o.stringData) { // as an API server stores it
        o.data = Object.fromEntries(Object.entries(o.stringData).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));
        delete o.stringData;
      }
      return o;
    }),
    { apiVersion: 'inference.networking.x-k8s.io/v1alpha2', kind: 'InferenceObjective',
      metadata: { name: 'interactive', namespace: 'default' }, spec: { priority: 10, poolRef: { name: 'llama' } } },
    { apiVersion: 'v1', kind: 'Pod',
      metadata: { name: 'vllm-llama-0', namespace: 'default', labels: { app: 'vllm-llama' } },
      spec: { containers: [{ name: 'vllm', image: 'vllm' }] },
      status: { phase: 'Running', podIP: enginesAt, conditions: [{ type: 'Ready', status: 'True' }] } },
  ]);

  // A simulated engine for the Pod.
  const sim = join(root, 'build/bin/sluice-sim');
  const engine = spawn(sim, ['--replicas', '1', '--address', enginesAt, '--port', '8000',
    '--model', 'meta-llama/Llama-3.1-8B-Instruct'], { stdio: 'ignore' });
  children.push(engine);

  // What the kubelet mounts and sets.
  const sa = join(dir, 'serviceaccount');
  const run = join(dir, 'run');
  for (const d of [sa, run]) spawnSync('mkdir', ['-p', d]);
  writeFileSync(join(sa, 'token'), api.token);
  copyFileSync(api.caFile, join(sa, 'ca.crt'));
  writeFileSync(join(sa, 'namespace'), 'sluice-system');
  chmodSync(dir, 0o755);
  chmodSync(sa, 0o755);
  for (const f of ['token', 'ca.crt', 'namespace']) chmodSync(join(sa, f), 0o644);
  chmodSync(run, 0o777);
  const config = join(root, 'deploy/kubernetes/router/sluice.yaml');

  const args = ['run', '-d', '--name', name, '--network', 'host', ...runOptions,
    '-e', 'KUBERNETES_SERVICE_HOST=127.0.0.1',
    '-e', `KUBERNETES_SERVICE_PORT=${api.port}`,
    '-e', `POD_NAME=${podName}`, '-e', 'POD_NAMESPACE=sluice-system', '-e', `POD_IP=${podIp}`,
    '-v', `${sa}:/var/run/secrets/kubernetes.io/serviceaccount:ro`,
    '-v', `${config}:/etc/sluice/sluice.yaml:ro`,
    '-v', `${run}:/run/sluice:rw`,
    image,
    // The Deployment's arguments, then ports of our own (host networking here).
    'serve', '--config', '/etc/sluice/sluice.yaml',
    '--listen', '127.0.0.2:0', '--admin', '127.0.0.1:0', '--metrics', '127.0.0.1:0',
    '--ready-file', '/run/sluice/ready.json'];
  const started = spawnSync('podman', args, { encoding: 'utf8' });
  if (started.status !== 0) throw new Error(`podman run: ${started.stderr.trim()}`);

  const ports = await until(() => {
    try { return JSON.parse(readFileSync(join(run, 'ready.json'), 'utf8')); } catch { return null; }
  });
  if (!ports) throw new Error('no ready file after 20 s');
  const admin = `http://127.0.0.1:${ports.admin}`;
  const metrics = async () => (await fetch(`http://127.0.0.1:${ports.metrics}/metrics`)).text();

  const ready = await until(async () => (await fetch(`${admin}/readyz`)).status === 200, 30000);
  // The metrics text is rendered now and then: give it a moment to say so.
  const synced = Boolean(await until(async () => /^sluice_kubernetes_synced 1$/m.test(await metrics()), 10000));
  ready && synced ? ok('/readyz 200 with every watch synced (sluice_kubernetes_synced 1)')
    : bad(`/readyz ${ready ? 200 : 'not 200'}, synced ${synced}`);

  const reply = await until(async () => {
    const r = await fetch(`http://127.0.0.2:${gatewayPort}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }) });
    return r.status === 200 ? r.json() : null;
  }, 10000);
  reply?.model === 'llama' ? ok(`chat request through Gateway default/inference (port ${gatewayPort}) answered`)
    : bad(`chat request through the Gateway listener: ${JSON.stringify(reply)}`);

  const lease = await until(() => {
    const l = api.get({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', namespace: 'sluice-system', name: 'sluice-router' });
    return l?.spec?.holderIdentity === podName ? l : null;
  }, 15000);
  lease ? ok(`Lease sluice-system/sluice-router held by ${podName}`)
    : bad(`Lease sluice-system/sluice-router not taken by ${podName}: ${(spawnSync('podman', ['logs', name], { encoding: 'utf8' }).stderr || '').split('\n').filter((l) => /lease/.test(l)).slice(-2).join(' | ')}`);

  const get = (apiVersion, kind, n, namespace = 'default') => api.get({ apiVersion, kind, namespace, name: n });
  const written = await until(() => {
    const gc = get('gateway.networking.k8s.io/v1', 'GatewayClass', 'sluice', undefined);
    const gw = get('gateway.networking.k8s.io/v1', 'Gateway', 'inference');
    const route = get('gateway.networking.k8s.io/v1', 'HTTPRoute', 'llm');
    const pool = get('inference.networking.k8s.io/v1', 'InferencePool', 'llama');
    const done = isTrue(gc?.status?.conditions, 'Accepted') && isTrue(gw?.status?.conditions, 'Programmed') &&
      isTrue(route?.status?.parents?.[0]?.conditions, 'Accepted') && isTrue(pool?.status?.parents?.[0]?.conditions, 'Accepted');
    return done ? { gc, gw, route, pool } : null;
  }, 15000);
  if (written) {
    const addresses = (written.gw.status.addresses || []).map((a) => a.value).join(',');
    ok(`status written: GatewayClass Accepted, Gateway Programmed (addresses ${addresses || 'none'}), HTTPRoute and InferencePool parents Accepted`);
    addresses === podIp ? ok(`Gateway status.addresses is POD_IP (${podIp})`) : bad(`Gateway status.addresses ${addresses}, expected ${podIp}`);
  } else {
    bad('status not written within 15 s (GatewayClass Accepted, Gateway Programmed, HTTPRoute and InferencePool parents Accepted)');
  }

  const wanted = [
    ['networking.serving.volcano.sh/v1alpha1', 'ModelServer', 'llama', 'Accepted'],
    ['networking.serving.volcano.sh/v1alpha1', 'ModelRoute', 'assistant', 'Accepted'],
    ['networking.serving.volcano.sh/v1alpha1', 'ExternalModelProvider', 'openai', 'CredentialsResolved'],
    ['inference.networking.x-k8s.io/v1alpha2', 'InferenceObjective', 'interactive', 'Accepted'],
  ];
  const missing = () => wanted.filter(([v, k, n, c]) => !isTrue(get(v, k, n)?.status?.conditions, c));
  await until(() => missing().length === 0, 15000);
  const left = missing();
  left.length === 0 ? ok('status written: ModelServer, ModelRoute, ExternalModelProvider (CredentialsResolved from its Secret), InferenceObjective')
    : bad(`status not written within 15 s: ${left.map(([v, k, n, c]) => `${k}/${n} ${c} (status ${JSON.stringify(get(v, k, n)?.status ?? null)})`).join('; ')}`);

  // Not spawnSync: the API server runs in this process and must answer while the router
  // releases its Lease on the way out.
  await promisify(execFile)('podman', ['stop', '-t', '45', name]).catch(() => {});

  // Every request the router made must be granted by deploy/kubernetes/router/rbac.yaml (the test
  // API server does not authorize; a real one answers 403 and the router stays unready).
  const rbac = parseYamlDocuments(readFileSync(join(root, 'deploy/kubernetes/router/rbac.yaml'), 'utf8'))
    .filter((d) => d && (d.kind === 'ClusterRole' || d.kind === 'Role'));
  const rules = rbac.flatMap((r) => r.rules);
  const used = new Set();
  const denied = [];
  for (const key of Object.keys(api.stats().byGroupResource)) {
    const [verb, what] = key.split(' ');
    const [res, sub] = what.split('/');
    const dot = res.indexOf('.');
    const plural = dot < 0 ? res : res.slice(0, dot);
    const group = dot < 0 ? '' : res.slice(dot + 1);
    const resource = sub ? `${plural}/${sub}` : plural;
    const rule = rules.find((r) => r.apiGroups.includes(group) && r.resources.includes(resource) && r.verbs.includes(verb));
    if (rule) used.add(rule); else denied.push(key);
  }
  denied.length === 0 ? ok(`RBAC grants every request made (${Object.keys(api.stats().byGroupResource).length} verb/resource pairs)`)
    : bad(`RBAC does not grant: ${denied.join(', ')}`);
  const unused = rules.filter((r) => !used.has(r)).map((r) => `${r.verbs.join('/')} ${r.resources.join(',')}`);
  if (unused.length) console.log(`note: in-cluster: granted but not requested in this run: ${unused.join('; ')}`);
  const code = spawnSync('podman', ['inspect', '-f', '{{.State.ExitCode}}', name], { encoding: 'utf8' }).stdout.trim();
  code === '0' ? ok('exit 0 after SIGTERM') : bad(`exit code ${code} after SIGTERM`);
  const after = api.get({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', namespace: 'sluice-system', name: 'sluice-router' });
  lease && after?.spec?.holderIdentity === '' ? ok('Lease released on SIGTERM')
    : lease && bad(`Lease not released on SIGTERM (holder ${JSON.stringify(after?.spec?.holderIdentity)})`);
  if (failed) {
    const logs = spawnSync('podman', ['logs', name], { encoding: 'utf8' });
    console.log(`in-cluster: router log (last lines):\n${(logs.stdout + logs.stderr).split('\n').filter((l) => !l.includes('"request_id"')).slice(-15).join('\n')}`);
  }
} catch (e) {
  bad(e.message);
} finally {
  spawnSync('podman', ['rm', '-f', name], { stdio: 'ignore' });
  for (const c of children) c.kill();
  await api.close();
  rmSync(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
