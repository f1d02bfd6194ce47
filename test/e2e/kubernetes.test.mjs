// End to end on the Kubernetes API server: the real sluice binary in API-server mode
// (`serve --kubeconfig`) against the test API server (test/fakes/apiserver.mjs), objects
// applied with the real kubectl, in front of real sluice-sim engines on 127.0.0.11-13. Routing
// from watched objects, status write-back (and no rewrite when nothing changed), Pod readiness,
// watch disruptions (EOF, 410 relist, API server restart), a wrong token, Lease leader
// election between two replicas, and CRDs missing at start then installed.
//
//   node --test test/e2e/kubernetes.test.mjs     (SLUICE_BIN_DIR defaults to build/bin; KUBECTL
//   to kubectl on the PATH, without which the kubectl cases are skipped; SLUICE_E2E_KEEP=1 keeps
//   the run's directory with every child's stdout and stderr)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { startFakeApiServer } from '../fakes/apiserver.mjs';
import { crdsFor } from '../fakes/crds.mjs';
import { toYaml } from '../fakes/apiserver/yaml.mjs';
import { freePort, kubectl, kubectlOk, kubectlPath } from './helpers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const bin = process.env.SLUICE_BIN_DIR ?? join(here, '..', '..', 'build', 'bin');
const withKubectl = { skip: spawnSync(kubectlPath, ['version', '--client']).error ? `no ${kubectlPath}` : false };
const examples = join(here, '..', '..', 'examples');
const controllerName = 'sluice.dev/gateway-controller';
const gw = 'gateway.networking.k8s.io';
const top = mkdtempSync(join(tmpdir(), 'sluice-e2e-kubernetes-'));
const children = new Set();
const apis = [];
let simPort;

// ---- helpers

// Polls fn until it returns a truthy value (bounded); the error names the last value seen and
// what detail(), if given, says about the state then.
async function eventually(fn, what, timeoutMs = 5000, everyMs = 25, detail = undefined) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const more = detail ? `; ${await Promise.resolve().then(detail).catch((e) => e.message)}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)}${more})`);
    }
    await delay(everyMs);
  }
}

// Each child's stdout and stderr also go to files in the run's directory, which
// SLUICE_E2E_KEEP=1 keeps for a look after a failure.
function spawnChild(cmd, args, env = {}, name = cmd) {
  const base = { ...process.env };
  for (const k of ['POD_NAME', 'POD_NAMESPACE', 'POD_IP', 'KUBERNETES_SERVICE_HOST', 'KUBECONFIG']) delete base[k];
  const p = spawn(join(bin, cmd), args, { env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  p.stdoutText = '';
  p.stderrText = '';
  p.stdout.setEncoding('utf8');
  p.stderr.setEncoding('utf8');
  const out = createWriteStream(join(top, `${name}.stdout`));
  const err = createWriteStream(join(top, `${name}.stderr`));
  p.stdout.on('data', (d) => { p.stdoutText += d; out.write(d); });
  p.stderr.on('data', (d) => { p.stderrText += d; err.write(d); });
  p.exited = new Promise((resolve) => p.on('exit', (code, signal) => { children.delete(p); resolve({ code, signal }); }));
  children.add(p);
  return p;
}

async function waitForFile(path, proc, timeoutMs = 15000) {
  await eventually(() => {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`${proc.spawnfile} exited (code ${proc.exitCode}, signal ${proc.signalCode}): ${proc.stderrText}`);
    }
    return existsSync(path);
  }, path, timeoutMs, 10);
  return readFileSync(path, 'utf8');
}


const kubectlJson = async (api, args, opts) => JSON.parse(await kubectlOk(api, [...args, '-o', 'json'], opts));

function writeManifest(name, docs) {
  const path = join(top, `${name}-${Date.now()}-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(path, typeof docs === 'string' ? docs : docs.map((d) => toYaml(d)).join('---\n'));
  return path;
}

async function newApi(opts = {}) {
  const api = await startFakeApiServer({ dir: mkdtempSync(join(top, 'api-')), ...opts });
  apis.push(api);
  return api;
}

// One chat completion through a Gateway listener (or the router's own listener).
async function chat(port, model = 'llama', { content = 'hi', id } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (id) headers['x-request-id'] = id;
  const r = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST', headers, signal: AbortSignal.timeout(5000),
    body: JSON.stringify({ model, messages: [{ role: 'user', content }], max_tokens: 2 }),
  });
  const text = await r.text();
  let body;
  try { body = JSON.parse(text); } catch { body = text; }
  return { status: r.status, body };
}

const chatOk = async (port, model, opts) => {
  const r = await chat(port, model, opts);
  return r.status === 200 && r.body.model === model;
};

// Sums every series of a family (all label sets), or those whose labels contain `labels`.
function metric(text, name, labels = '') {
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || !(line[name.length] === ' ' || line[name.length] === '{')) continue;
    if (labels && !line.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    found = true;
  }
  return found ? sum : undefined;
}

const condition = (conds, type) => (conds ?? []).find((c) => c.type === type);
const isTrue = (conds, type) => condition(conds, type)?.status === 'True';
const statusPatches = (api) => Object.entries(api.stats().requests)
  .filter(([k]) => /^patch \S+\/status$/.test(k)).reduce((n, [, v]) => n + v, 0);

// The router in API-server mode: its own directory, config, and ready file.
class Router {
  constructor(name, api, { kubeconfig = api.kubeconfig, lease = {}, env = {}, listen = '127.0.0.1:0' } = {}) {
    this.name = name;
    this.dir = join(top, name);
    mkdirSync(this.dir, { recursive: true });
    const l = { lease_duration: '15s', renew_deadline: '10s', retry_period: '2s', ...lease };
    writeFileSync(join(this.dir, 'sluice.yaml'), [
      'kubernetes:',
      '  debounce: 20ms',
      `  leader_election: {enabled: true, lease_name: sluice-router, lease_namespace: default, identity: "", lease_duration: ${l.lease_duration}, renew_deadline: ${l.renew_deadline}, retry_period: ${l.retry_period}}`,
      '',
    ].join('\n'));
    this.readyFile = join(this.dir, 'router.ready');
    this.proc = spawnChild('sluice', ['serve', '--kubeconfig', kubeconfig, '--config', join(this.dir, 'sluice.yaml'),
      '--admin', '127.0.0.1:0', '--metrics', '127.0.0.1:0', '--listen', listen, '--workers', '1',
      '--ready-file', this.readyFile], { POD_NAME: name, ...env }, name);
  }

  async started(timeoutMs) {
    this.ports = JSON.parse(await waitForFile(this.readyFile, this.proc, timeoutMs));
    return this;
  }

  get stderr() { return this.proc.stderrText; }

  // For timeouts: whether it still runs, and the end of its log.
  describe() {
    const { exitCode, signalCode } = this.proc;
    const state = exitCode === null && signalCode === null ? 'running' : `exited (code ${exitCode}, signal ${signalCode})`;
    return `${this.name} ${state}; stderr ends: ${this.stderr.split('\n').slice(-8).join('\n')}`;
  }

  // The JSON access-log lines on stdout.
  accessLog() {
    return this.proc.stdoutText.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  }

  async readyz() {
    return (await fetch(`http://127.0.0.1:${this.ports.admin}/readyz`, { signal: AbortSignal.timeout(3000) })).status;
  }

  async metrics() {
    return (await fetch(`http://127.0.0.1:${this.ports.metrics}/metrics`, { signal: AbortSignal.timeout(3000) })).text();
  }

  async metric(name, labels) {
    return metric(await this.metrics(), name, labels);
  }

  async adminJson(path) {
    return (await fetch(`http://127.0.0.1:${this.ports.admin}${path}`, { signal: AbortSignal.timeout(3000) })).json();
  }

  async configVersion() {
    return (await this.adminJson('/debug/config')).version;
  }

  // Waits until the router has rebuilt its routes past `version` (at least one more rebuild).
  async rebuiltAfter(version, what) {
    return eventually(async () => {
      const now = await this.configVersion();
      return now > version && now;
    }, `a rebuild after ${what}`);
  }

  kill(signal = 'SIGTERM') {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    return this.proc.exited;
  }
}

function pod(name, ip, { ready = true, labels = { app: 'llama' } } = {}) {
  return {
    apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'default', labels },
    spec: { containers: [{ name: 'engine', image: 'sluice-sim' }] },
    status: { podIP: ip, phase: 'Running', conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
  };
}
const service = (name) => ({
  apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'default' },
  spec: { selector: { app: name }, ports: [{ port: 80, targetPort: 8080 }] },
});
const llamaPods = () => [pod('llama-0', '127.0.0.11'), pod('llama-1', '127.0.0.12'), pod('llama-2', '127.0.0.13')];

const gatewayClass = { apiVersion: `${gw}/v1`, kind: 'GatewayClass', metadata: { name: 'sluice' }, spec: { controllerName } };

// examples/quickstart/gateway.yaml with this run's ports, after a GatewayClass of ours.
function quickstart(gwPort) {
  const text = readFileSync(join(examples, 'quickstart', 'gateway.yaml'), 'utf8')
    .replace('port: 8080', `port: ${gwPort}`).replace('number: 8000', `number: ${simPort}`);
  assert.ok(text.includes(`port: ${gwPort}`) && text.includes(`number: ${simPort}`));
  return `${toYaml(gatewayClass)}---\n${text}`;
}

const httpRoute = (name, rules, parent = 'inference') => ({
  apiVersion: `${gw}/v1`, kind: 'HTTPRoute', metadata: { name, namespace: 'default' },
  spec: { parentRefs: [{ name: parent }], rules },
});

const ref = (apiVersion, kind, name, namespace = 'default') => ({ apiVersion, kind, name, namespace });
const routeRef = (name) => ref(`${gw}/v1`, 'HTTPRoute', name);
const leaseRef = ref('coordination.k8s.io/v1', 'Lease', 'sluice-router');
const gatewayRef = ref(`${gw}/v1`, 'Gateway', 'inference');
const poolRef = ref('inference.networking.k8s.io/v1', 'InferencePool', 'llama');
const classRef = ref(`${gw}/v1`, 'GatewayClass', 'sluice');

// For timeouts: an object's status as the API server holds it.
const statusOf = (api, r) => () => `${r.kind} ${r.name} status: ${JSON.stringify(api.get(r)?.status)}`;
// Our entry in a route's (or pool's) status.parents.
const ourParent = (obj) => (obj?.status?.parents ?? []).find((p) => p.controllerName === controllerName);

// The holderIdentity of every version of the Lease, in order, from a watch.
function watchLease(api) {
  const holders = [];
  const req = httpsRequest({
    host: '127.0.0.1', port: api.port, ca: api.ca, headers: { Authorization: `Bearer ${api.token}` },
    path: '/apis/coordination.k8s.io/v1/namespaces/default/leases?watch=1&fieldSelector=metadata.name%3Dsluice-router',
  }, (res) => {
    let buffer = '';
    res.setEncoding('utf8');
    res.on('data', (d) => {
      buffer += d;
      for (let i = buffer.indexOf('\n'); i >= 0; i = buffer.indexOf('\n')) {
        const line = buffer.slice(0, i).trim();
        buffer = buffer.slice(i + 1);
        if (!line) continue;
        const ev = JSON.parse(line);
        if (ev.type === 'ADDED' || ev.type === 'MODIFIED') {
          const h = ev.object.spec?.holderIdentity ?? '';
          if (holders.at(-1) !== h) holders.push(h);
        }
      }
    });
    res.on('error', () => {});
  });
  req.on('error', () => {});
  req.end();
  return { holders, close: () => req.destroy() };
}

before(async () => {
  simPort = await freePort('127.0.0.11');
  const simReady = join(top, 'sim.ready');
  const sim = spawnChild('sluice-sim', ['--replicas', '3', '--address', '127.0.0.11', '--port', String(simPort),
    '--model', 'sim-llama', '--ready-file', simReady, '--step-overhead-ms', '1']);
  await waitForFile(simReady, sim);
});

after(async () => {
  const left = [...children];
  for (const p of left) p.kill('SIGKILL');
  await Promise.all(left.map((p) => p.exited));
  for (const api of apis) await api.close();
  if (process.env.SLUICE_E2E_KEEP) process.stderr.write(`kept ${top}\n`);
  else rmSync(top, { recursive: true, force: true });
});

// ---- one router on one API server: cases 1 to 3 share it, in order

describe('a router on the API server', withKubectl, () => {
  let api;
  let router;
  let gwPort;

  before(async () => {
    api = await newApi();
    gwPort = await freePort('127.0.0.1');
    router = await new Router('router-main', api).started();
    await eventually(async () => (await router.readyz()) === 200, 'the router to be ready on an empty cluster');
  });

  after(() => router.kill('SIGTERM'));

  test('objects applied with kubectl are routed and get status', async () => {
    api.bulkLoad(llamaPods());
    const applied = await kubectlOk(api, ['apply', '-f', writeManifest('quickstart', quickstart(gwPort))]);
    assert.match(applied, /httproute\.gateway\.networking\.k8s\.io\/llm created/);
    assert.match(applied, /gatewayclass\.gateway\.networking\.k8s\.io\/sluice created/);
    await eventually(() => chatOk(gwPort, 'llama'), 'a chat completion for llama through the Gateway', 10000, 25, () => router.describe());

    // Status, once written, as kubectl shows it.
    await eventually(() => {
      const p = ourParent(api.get(routeRef('llm')));
      return isTrue(p?.conditions, 'Accepted') && isTrue(p?.conditions, 'ResolvedRefs');
    }, 'HTTPRoute llm status', 10000, 25, statusOf(api, routeRef('llm')));
    const route = await kubectlJson(api, ['get', 'httproute', 'llm']);
    const parent = ourParent(route);
    assert.ok(parent, JSON.stringify(route.status));
    assert.equal(parent.parentRef.name, 'inference');
    assert.equal(parent.parentRef.namespace, 'default');
    for (const type of ['Accepted', 'ResolvedRefs']) {
      const c = condition(parent.conditions, type);
      assert.equal(c.status, 'True', JSON.stringify(c));
      assert.equal(c.observedGeneration, route.metadata.generation);
      assert.ok(c.reason && c.lastTransitionTime, JSON.stringify(c));
    }
    const yaml = await kubectlOk(api, ['get', 'httproute', 'llm', '-o', 'yaml']);
    assert.match(yaml, new RegExp(`controllerName: ${controllerName.replace(/\./g, '\\.')}`));
    assert.match(yaml, /type: Accepted/);
    assert.match(yaml, /type: ResolvedRefs/);
    assert.match(yaml, new RegExp(`observedGeneration: ${route.metadata.generation}`));

    await eventually(() => {
      const g = api.get(gatewayRef);
      return isTrue(g?.status?.conditions, 'Programmed') && g.status.listeners?.[0]?.attachedRoutes === 1;
    }, 'Gateway inference status', 10000, 25, statusOf(api, gatewayRef));
    const gateways = await kubectlJson(api, ['get', 'gateway']);
    assert.equal(gateways.items.length, 1);
    const gwStatus = gateways.items[0].status;
    assert.ok(isTrue(gwStatus.conditions, 'Accepted'), JSON.stringify(gwStatus));
    assert.ok(isTrue(gwStatus.conditions, 'Programmed'), JSON.stringify(gwStatus));
    assert.equal(gwStatus.listeners[0].name, 'http');
    assert.equal(gwStatus.listeners[0].attachedRoutes, 1);

    await eventually(() => isTrue(ourParent(api.get(poolRef))?.conditions, 'Accepted'),
      'InferencePool llama status', 10000, 25, statusOf(api, poolRef));
    const pools = await kubectlJson(api, ['get', 'inferencepool']);
    const poolParent = pools.items[0].status.parents[0];
    assert.equal(poolParent.parentRef.namespace, 'default');
    assert.equal(poolParent.parentRef.name, 'inference');
    assert.ok(isTrue(poolParent.conditions, 'Accepted'), JSON.stringify(poolParent));

    await eventually(() => isTrue(api.get(classRef)?.status?.conditions, 'Accepted'),
      'GatewayClass sluice Accepted', 10000, 25, statusOf(api, classRef));

    // A route to a Service that does not exist: accepted, refs not resolved.
    const broken = httpRoute('broken', [{
      matches: [{ path: { type: 'PathPrefix', value: '/broken' } }],
      backendRefs: [{ name: 'missing', port: 80 }],
    }]);
    await kubectlOk(api, ['apply', '-f', writeManifest('broken', [broken])]);
    await eventually(() => condition(ourParent(api.get(routeRef('broken')))?.conditions, 'ResolvedRefs'), 'HTTPRoute broken status',
      10000, 25, statusOf(api, routeRef('broken')));
    const brokenParent = ourParent(await kubectlJson(api, ['get', 'httproute', 'broken']));
    const resolved = condition(brokenParent.conditions, 'ResolvedRefs');
    assert.equal(resolved.status, 'False');
    assert.equal(resolved.reason, 'BackendNotFound');
    assert.ok(isTrue(brokenParent.conditions, 'Accepted'), JSON.stringify(brokenParent));
    await eventually(() => api.get(gatewayRef).status.listeners[0].attachedRoutes === 2,
      'attachedRoutes 2 with the second route', 10000, 25, statusOf(api, gatewayRef));
    assert.ok(await chatOk(gwPort, 'llama'), 'the first route still serves');
  });

  test('status is not rewritten when nothing changed', async () => {
    // Converged (the test above waited for every status). Unrelated events (a Service, a Pod of
    // another app, a Namespace) change no status: no status PATCH. The Service and the
    // Namespace rebuild the routes; the Pod is an endpoint-only change that moves no endpoint,
    // so it publishes nothing (the source applies events in order: the Namespace's rebuild
    // comes after it).
    await eventually(() => ['InferenceObjective', 'InferenceModelRewrite'].every((kind) =>
      api.list({ apiVersion: 'inference.networking.x-k8s.io/v1alpha2', kind, namespace: 'default' })
        .every((o) => (o.status?.conditions ?? []).length > 0)), 'the x-k8s objects\' status', 10000, 25,
    () => JSON.stringify(['InferenceObjective', 'InferenceModelRewrite'].map((kind) =>
      api.list({ apiVersion: 'inference.networking.x-k8s.io/v1alpha2', kind, namespace: 'default' }).map((o) => o.status))));
    const before = { ...api.stats().requests };
    const patches = statusPatches(api);
    let version = await router.configVersion();
    await kubectlOk(api, ['apply', '-f', writeManifest('unrelated-svc', [service('unrelated')])]);
    version = await router.rebuiltAfter(version, 'a Service');
    api.put(pod('unrelated-0', '127.0.0.99', { labels: { app: 'unrelated' } }));
    await kubectlOk(api, ['apply', '-f', writeManifest('unrelated-ns', [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'unrelated' } }])]);
    await router.rebuiltAfter(version, 'a Namespace');
    // A sentinel that changes exactly one status (the broken route's backend appears), so any
    // write the events above caused has been made by the time its write shows.
    await kubectlOk(api, ['apply', '-f', writeManifest('missing-svc', [service('missing')])]);
    await eventually(() => isTrue(ourParent(api.get(routeRef('broken')))?.conditions, 'ResolvedRefs'),
      'the sentinel: HTTPRoute broken ResolvedRefs True once its Service exists', 10000, 25, statusOf(api, routeRef('broken')));
    const after = api.stats().requests;
    assert.equal(statusPatches(api), patches + 1, `status PATCHes before ${JSON.stringify(before)}, after ${JSON.stringify(after)}`);
    assert.equal(after['patch httproutes/status'], before['patch httproutes/status'] + 1);
  });

  test('a spec change moves the status observedGeneration', async () => {
    await kubectlOk(api, ['patch', 'httproute', 'broken', '--type=merge', '-p', '{"spec":{"hostnames":["broken.example"]}}']);
    const generation = api.get(routeRef('broken')).metadata.generation;
    assert.equal(generation, 2);
    await eventually(() => {
      const conds = ourParent(api.get(routeRef('broken')))?.conditions ?? [];
      return conds.length > 0 && conds.every((c) => c.observedGeneration === generation);
    }, `HTTPRoute broken conditions at observedGeneration ${generation}`, 5000, 25, statusOf(api, routeRef('broken')));
    const conds = ourParent(await kubectlJson(api, ['get', 'httproute', 'broken'])).conditions;
    assert.ok(isTrue(conds, 'Accepted') && isTrue(conds, 'ResolvedRefs'), JSON.stringify(conds));
  });

  test('a Pod turning unready leaves the pool, and comes back when ready', async () => {
    // Which engine served each request: the access log's endpoint, found by request id.
    let n = 0;
    const served = async (count) => {
      const ids = [];
      for (let i = 0; i < count; i++) {
        const id = `ready-${++n}`;
        const r = await chat(gwPort, 'llama', { id, content: `prompt ${n} ${'x'.repeat(n % 17)}` });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        ids.push(id);
      }
      return eventually(() => {
        const byId = new Map(router.accessLog().map((l) => [l.request_id, l.endpoint]));
        return ids.every((id) => byId.has(id)) && ids.map((id) => byId.get(id));
      }, 'the access-log lines of the requests');
    };
    const host = (endpoint) => endpoint.slice(0, endpoint.lastIndexOf(':'));
    const ip = '127.0.0.12';
    const scraped = async () => (await router.adminJson('/debug/endpoints')).endpoints.map((e) => e.address);
    assert.ok((await scraped()).includes(`${ip}:${simPort}`), JSON.stringify(await scraped()));
    // Before: the scheduler spreads requests over the three engines, .12 among them.
    await eventually(async () => (await served(6)).some((e) => host(e) === ip), `a request on ${ip} while ready`, 10000, 0);

    let version = await router.configVersion();
    await kubectlOk(api, ['patch', 'pod', 'llama-1', '--subresource=status', '--type=merge', '-p',
      JSON.stringify({ status: { conditions: [{ type: 'Ready', status: 'False' }] } })]);
    await router.rebuiltAfter(version, 'llama-1 unready');
    await eventually(async () => !(await scraped()).includes(`${ip}:${simPort}`), `${ip} to leave /debug/endpoints`);
    const after = await served(30);
    assert.ok(after.every((e) => host(e) !== ip), `requests still reach ${ip}: ${after.join(' ')}`);
    assert.ok(new Set(after.map(host)).size === 2, `the other two serve: ${after.join(' ')}`);

    version = await router.configVersion();
    api.put(pod('llama-1', ip));
    await router.rebuiltAfter(version, 'llama-1 ready');
    await eventually(async () => (await scraped()).includes(`${ip}:${simPort}`), `${ip} back in /debug/endpoints`);
    await eventually(async () => (await served(6)).some((e) => host(e) === ip), `a request on ${ip} once ready again`, 10000, 0);
  });

  test('watch EOF, 410 relist and an API server restart fail no request; later changes apply', async () => {
    let stop = false;
    let ok = 0;
    const failures = [];
    const worker = async () => {
      while (!stop) {
        try {
          const r = await chat(gwPort, 'llama');
          if (r.status === 200 && r.body.model === 'llama') ok++;
          else failures.push(`${r.status} ${JSON.stringify(r.body)}`);
        } catch (e) {
          failures.push(String(e));
        }
      }
    };
    const workers = [worker(), worker()];
    const sum = async (name) => (await router.metric(name)) ?? 0;
    try {
      // Every watch ends: the router resumes each from its resourceVersion.
      const watches = await sum('sluice_kubernetes_watches_total');
      const relists = await sum('sluice_kubernetes_relists_total');
      api.closeWatches();
      await eventually(async () => (await sum('sluice_kubernetes_watches_total')) >= watches + 10, 'the watches to resume');

      // History forgotten after a change: resuming from before it is 410 Gone, so relist.
      api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'bump', namespace: 'default' }, data: { a: '1' } });
      api.compact();
      api.closeWatches();
      await eventually(async () => (await sum('sluice_kubernetes_relists_total')) > relists, 'relists after 410', 8000);
      const served1 = ok;
      await eventually(() => ok > served1 + 5, 'requests served after the relist');

      // The API server goes away and comes back on the same port.
      const errors = await sum('sluice_kubernetes_errors_total');
      await api.stop();
      await eventually(async () => (await sum('sluice_kubernetes_errors_total')) > errors, 'the router to notice the API server down', 8000);
      const served2 = ok;
      await eventually(() => ok > served2 + 5, 'requests served while the API server is down');
      await api.restart();
      await eventually(() => api.stats().openWatches >= 15, 'the watches to be back', 10000);

      // A change after the restart: a new model name, rewritten to the engines' model.
      await kubectlOk(api, ['apply', '-f', writeManifest('rewrite', [{
        apiVersion: 'inference.networking.x-k8s.io/v1alpha2', kind: 'InferenceModelRewrite',
        metadata: { name: 'llama2-name', namespace: 'default' },
        spec: { poolRef: { name: 'llama' }, rules: [{ matches: [{ model: { value: 'llama2' } }], targets: [{ modelRewrite: 'sim-llama' }] }] },
      }])]);
      await eventually(() => chatOk(gwPort, 'llama2'), 'llama2 routed after the restart', 10000);
    } finally {
      stop = true;
      await Promise.all(workers);
    }
    assert.deepEqual(failures, []);
    assert.ok(ok > 20, `only ${ok} requests completed`);
    assert.equal(await router.readyz(), 200);
  });
});

// ---- a wrong token

test('a wrong token: started but not ready, 401 reported; ready once the token is accepted', async () => {
  const api = await newApi();
  const wrong = 'wrong-token-0123456789';
  const inline = new Router('router-token-inline', api, { kubeconfig: api.writeKubeconfig(join(top, 'kubeconfig-wrong'), { token: wrong }) });
  const tokenFile = join(top, 'token');
  writeFileSync(tokenFile, 'another-wrong-token\n');
  const viaFile = new Router('router-token-file', api, { kubeconfig: api.writeKubeconfig(join(top, 'kubeconfig-file'), { tokenFile }) });
  // The router waits up to 5 s for the first sync before it writes its ready file.
  await Promise.all([inline.started(15000), viaFile.started(15000)]);
  for (const r of [inline, viaFile]) {
    assert.equal(await r.readyz(), 503, r.name);
    assert.match(r.stderr, /401|Unauthorized/, r.name);
    assert.equal(await r.metric('sluice_kubernetes_synced'), 0, r.name);
  }
  api.setToken(wrong);
  writeFileSync(tokenFile, `${wrong}\n`);
  // Retried with backoff (doubling from 200 ms, jittered): a few seconds at this point.
  await Promise.all([inline, viaFile].map((r) => eventually(async () => (await r.readyz()) === 200, `${r.name} ready`, 20000, 100,
    () => r.describe())));
  for (const r of [inline, viaFile]) {
    await eventually(async () => (await r.metric('sluice_kubernetes_synced')) === 1, `${r.name} synced gauge`);
  }
  await Promise.all([inline.kill(), viaFile.kill()]);
});

// ---- leader election

test('two replicas elect one leader; SIGKILL fails over within the lease, SIGTERM hands it over', withKubectl, async (t) => {
  const api = await newApi();
  api.bulkLoad(llamaPods());
  const gwPort = await freePort('127.0.0.1');
  await kubectlOk(api, ['apply', '-f', writeManifest('quickstart', quickstart(gwPort))]);
  const lease = { lease_duration: '3s', renew_deadline: '2s', retry_period: '500ms' };
  const leaseWatch = watchLease(api);
  try {
    // Replicas are separate Pods in a cluster; here each gets its own loopback address, as two
    // processes can never share a listening port.
    const replicas = await Promise.all(['router-a', 'router-b'].map((n, i) =>
      new Router(n, api, { lease, listen: `127.0.0.${i + 1}:0` }).started()));
    const leaderName = await eventually(async () => {
      const gauges = await Promise.all(replicas.map((r) => r.metric('sluice_kubernetes_leader')));
      const holder = api.get(leaseRef)?.spec?.holderIdentity;
      if (gauges.filter((g) => g === 1).length !== 1 || gauges.filter((g) => g === 0).length !== 1) return false;
      return replicas[gauges.indexOf(1)].name === holder && holder;
    }, 'exactly one leader, named by the Lease', 8000);
    const leader = replicas.find((r) => r.name === leaderName);
    const follower = replicas.find((r) => r.name !== leaderName);
    assert.equal(api.get(leaseRef).spec.leaseDurationSeconds, 3);
    // Only the leader writes status.
    await eventually(() => ourParent(api.get(routeRef('llm'))), 'HTTPRoute llm status from the leader', 10000, 25, statusOf(api, routeRef('llm')));
    await eventually(async () => (await leader.metric('sluice_kubernetes_status_writes_total', 'result="ok"')) > 0, 'the leader to count its writes');
    assert.equal(await follower.metric('sluice_kubernetes_status_writes_total', 'result="ok"'), 0);

    // SIGKILL: no release; the follower takes over once the lease has run out.
    await leader.kill('SIGKILL');
    const killedAt = Date.now();
    await eventually(() => leaseWatch.holders.at(-1) === follower.name, `${follower.name} to take the lease`, 3000 + 500 + 2000);
    const takeover = Date.now() - killedAt;
    assert.deepEqual(leaseWatch.holders.slice(-2), [leader.name, follower.name], 'taken over, not released');
    assert.equal(api.get(leaseRef).spec.holderIdentity, follower.name);
    await eventually(async () => (await follower.metric('sluice_kubernetes_leader')) === 1, 'the new leader gauge');
    // The new leader writes status.
    await kubectlOk(api, ['apply', '-f', writeManifest('after-failover', [httpRoute('after-failover', [{
      matches: [{ path: { type: 'PathPrefix', value: '/failover' } }],
      backendRefs: [{ group: 'inference.networking.k8s.io', kind: 'InferencePool', name: 'llama' }],
    }])])]);
    await eventually(() => isTrue(ourParent(api.get(routeRef('after-failover')))?.conditions, 'Accepted'),
      'status of a route created after the failover', 5000, 25, statusOf(api, routeRef('after-failover')));

    // SIGTERM: the leader gives the lease up on the way out, so a third replica takes it at its
    // next retry rather than after the lease duration.
    const third = await new Router('router-c', api, { lease, listen: '127.0.0.3:0' }).started();
    await eventually(async () => (await third.readyz()) === 200, 'router-c ready');
    assert.equal(await third.metric('sluice_kubernetes_leader'), 0);
    const stoppedAt = Date.now();
    const exit = await follower.kill('SIGTERM');
    assert.equal(exit.code, 0, follower.stderr);
    await eventually(() => leaseWatch.holders.at(-1) === third.name, 'router-c to take the released lease', 3000);
    const handover = Date.now() - stoppedAt;
    assert.deepEqual(leaseWatch.holders.slice(-3), [follower.name, '', third.name], 'released, then taken');
    await eventually(async () => (await third.metric('sluice_kubernetes_leader')) === 1, 'router-c leader gauge');
    t.diagnostic(`lease: SIGKILL takeover ${takeover} ms, SIGTERM handover ${handover} ms`);
    await third.kill();
  } finally {
    leaseWatch.close();
  }
});

// ---- CRDs missing at start

test('missing CRDs: ready without them, routes what exists, picks them up once installed', withKubectl, async () => {
  const api = await newApi({ crds: ['gateway', 'inference'] });
  api.bulkLoad(llamaPods());
  const gwPort = await freePort('127.0.0.1');
  // The quickstart without its x-k8s kinds (not served yet).
  const docs = quickstart(gwPort).split(/^---$/m).filter((d) => !d.includes('inference.networking.x-k8s.io'));
  await kubectlOk(api, ['apply', '-f', writeManifest('gateway-only', docs.join('---\n'))]);
  const router = await new Router('router-crds', api).started();
  await eventually(async () => (await router.readyz()) === 200, 'ready with resources missing');
  assert.equal(await eventually(() => router.metric('sluice_kubernetes_synced'), 'the synced gauge'), 1);
  assert.match(router.stderr, /modelroutes\.v1alpha1\.networking\.serving\.volcano\.sh: not served/);
  assert.match(router.stderr, /inferencemodelrewrites\.v1alpha2\.inference\.networking\.x-k8s\.io: not served/);
  await eventually(() => chatOk(gwPort, 'sim-llama'), 'the Gateway API route serving', 10000);

  // Install the rest with kubectl, then objects of those kinds.
  const installed = await kubectlOk(api, ['apply', '-f', writeManifest('crds', crdsFor(['inference-x', 'kthena']))]);
  assert.match(installed, /modelroutes\.networking\.serving\.volcano\.sh created/);
  await kubectlOk(api, ['wait', '--for', 'condition=established', '--timeout=10s', 'crd/modelroutes.networking.serving.volcano.sh',
    'crd/inferencemodelrewrites.inference.networking.x-k8s.io']);
  const later = [
    {
      apiVersion: 'inference.networking.x-k8s.io/v1alpha2', kind: 'InferenceModelRewrite',
      metadata: { name: 'llama-name', namespace: 'default' },
      spec: { poolRef: { name: 'llama' }, rules: [{ matches: [{ model: { value: 'llama' } }], targets: [{ modelRewrite: 'sim-llama' }] }] },
    },
    {
      apiVersion: 'networking.serving.volcano.sh/v1alpha1', kind: 'ModelServer', metadata: { name: 'kllama', namespace: 'default' },
      spec: { model: 'sim-llama', inferenceEngine: 'vLLM', workloadSelector: { matchLabels: { app: 'llama' } }, workloadPort: { port: simPort } },
    },
    {
      apiVersion: 'networking.serving.volcano.sh/v1alpha1', kind: 'ModelRoute', metadata: { name: 'kllama', namespace: 'default' },
      spec: { modelName: 'kllama', parentRefs: [{ name: 'inference' }], rules: [{ targetModels: [{ modelServerName: 'kllama' }] }] },
    },
  ];
  // A new cache directory: discovery from before the CRDs would not know the kinds.
  await kubectlOk(api, ['apply', '-f', writeManifest('later', later)], { cacheDir: 'kube-cache-2' });
  // Missing resources are looked at again every 10 s.
  await eventually(() => chatOk(gwPort, 'kllama'), 'the ModelRoute routed', 15000, 100);
  await eventually(() => chatOk(gwPort, 'llama'), 'the InferenceModelRewrite applied', 15000, 100);
  await eventually(() => isTrue(api.get(ref('networking.serving.volcano.sh/v1alpha1', 'ModelRoute', 'kllama'))?.status?.conditions, 'Accepted'),
    'ModelRoute status');
  await router.kill();
});
