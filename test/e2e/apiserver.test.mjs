import { execFileSync } from 'node:child_process';
// The fake Kubernetes API server (test/fakes/apiserver.mjs) against the real kubectl, through
// the kubeconfig it writes, and protocol details checked with plain https requests: paging,
// watch resumption, bookmarks, 410 after compaction, optimistic concurrency, CRD lifecycle,
// Leases, fault injection, and a bulk load of the size the router's benchmark uses.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { startFakeApiServer } from '../fakes/apiserver.mjs';
import { kubectl, kubectlOk, kubectlPath } from './helpers.mjs';
import { crdsFor } from '../fakes/crds.mjs';
import { toYaml } from '../fakes/apiserver/yaml.mjs';

// Debian 12's kubernetes-client is 1.20; the machine image has 1.32. Features newer than the
// client present are skipped, not failed.
function kubectlMinor() {
  try {
    const out = execFileSync('kubectl', ['version', '--client', '-o', 'json'], { encoding: 'utf8' });
    return Number.parseInt(JSON.parse(out).clientVersion.minor, 10) || 0;
  } catch {
    return 0;
  }
}

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const fakeCli = join(repo, 'test', 'fakes', 'apiserver.mjs');
const gw = 'gateway.networking.k8s.io';
const tempDirs = [];

function tempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

after(() => { for (const d of tempDirs) rmSync(d, { recursive: true, force: true }); });

// ---- helpers

// Polls fn until it returns a truthy value (bounded); for effects with no event to wait on.
async function eventually(fn, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(10);
  }
}


// One https request; the answer's body parsed as JSON when it is JSON.
function request(api, method, path, { body, type = 'application/json', token = api.token } = {}) {
  const payload = body === undefined ? undefined : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const headers = {};
  if (token !== null) headers.Authorization = `Bearer ${token}`;
  if (payload !== undefined) headers['Content-Type'] = type;
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port: api.port, method, path, ca: api.ca, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, body: json ?? text });
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

async function ok(api, method, path, opts) {
  const r = await request(api, method, path, opts);
  assert.ok(r.status >= 200 && r.status < 300, `${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

function assertStatus(r, code, reason) {
  assert.equal(r.status, code, JSON.stringify(r.body));
  assert.equal(r.body.kind, 'Status');
  assert.equal(r.body.apiVersion, 'v1');
  assert.equal(r.body.status, 'Failure');
  assert.equal(r.body.code, code);
  assert.equal(r.body.reason, reason);
}

// A watch stream read event by event, each wait bounded.
class WatchStream {
  constructor(api, path) {
    this.events = [];
    this.read = 0;
    this.ended = false;
    this.changed = new EventEmitter();
    this.response = new Promise((resolve, reject) => {
      this.req = httpsRequest({ host: '127.0.0.1', port: api.port, path, ca: api.ca,
        headers: { Authorization: `Bearer ${api.token}` } }, (res) => {
        resolve(res);
        let buffer = '';
        res.setEncoding('utf8');
        res.on('data', (d) => {
          buffer += d;
          for (let i = buffer.indexOf('\n'); i >= 0; i = buffer.indexOf('\n')) {
            if (buffer.slice(0, i).trim()) this.events.push(JSON.parse(buffer.slice(0, i)));
            buffer = buffer.slice(i + 1);
          }
          this.changed.emit('change');
        });
        res.on('end', () => this.end());
        res.on('error', () => this.end());
      });
      this.req.on('error', (e) => { this.end(); reject(e); });
      this.req.end();
    });
  }

  end() {
    this.ended = true;
    this.changed.emit('change');
  }

  // The next event, or null once the stream has ended.
  async next(timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    while (this.read >= this.events.length) {
      if (this.ended) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for a watch event (have ${JSON.stringify(this.events.map((e) => e.type))})`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.changed.once('change', () => { clearTimeout(timer); resolve(); });
      });
    }
    return this.events[this.read++];
  }

  async nextOfType(type) {
    for (;;) {
      const e = await this.next();
      if (!e || e.type === type) return e;
    }
  }

  async closed(timeoutMs = 5000) {
    await eventually(() => this.ended, 'the watch to end', timeoutMs);
  }

  close() {
    this.req.destroy();
  }
}

const configMap = (name, data = {}, labels = {}) => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, labels }, data });
const route = (name, namespace, spec = {}) => ({ apiVersion: `${gw}/v1`, kind: 'HTTPRoute', metadata: { name, namespace }, spec });

// ---- kubectl

describe('kubectl against the fake API server', { timeout: 60000 }, () => {
  let api;
  let manifests;

  before(async () => {
    api = await startFakeApiServer({ dir: tempDir('fake-apiserver-kubectl-'), crds: 'none' });
    manifests = join(api.dir, 'manifests');
  });
  after(() => api.close());

  const write = (name, docs) => {
    const path = `${manifests}-${name}.yaml`;
    writeFileSync(path, docs.map((d) => toYaml(d)).join('---\n'));
    return path;
  };

  test('discovery: kubectl lists the built-in resources and a server version', async () => {
    const version = JSON.parse(await kubectlOk(api, ['version', '-o', 'json']));
    assert.equal(version.serverVersion.major, '1');
    const resources = await kubectlOk(api, ['api-resources', '-o', 'name']);
    for (const r of ['pods', 'services', 'secrets', 'configmaps', 'namespaces', 'endpoints',
      'endpointslices.discovery.k8s.io', 'leases.coordination.k8s.io',
      'customresourcedefinitions.apiextensions.k8s.io']) {
      assert.ok(resources.split('\n').includes(r), `${r} missing from:\n${resources}`);
    }
    assert.ok(!resources.includes('httproutes'));
  });

  test('kubectl apply installs CRDs; they become established and discoverable', async () => {
    const out = await kubectlOk(api, ['apply', '-f', write('crds', crdsFor('all'))]);
    assert.match(out, /customresourcedefinition.apiextensions.k8s.io\/httproutes.gateway.networking.k8s.io created/);
    await kubectlOk(api, ['wait', '--for', 'condition=established', '--timeout=10s',
      'crd/httproutes.gateway.networking.k8s.io', 'crd/inferencepools.inference.networking.k8s.io']);
    const resources = await kubectlOk(api, ['api-resources', '--api-group', gw, '-o', 'name']);
    assert.deepEqual(resources.trim().split('\n').sort(),
      ['gatewayclasses', 'gateways', 'httproutes', 'referencegrants'].map((r) => `${r}.${gw}`));
    // The Kthena CRDs the project ships (full schemas), through kustomize, over crds.mjs's.
    const shipped = await kubectlOk(api, ['apply', '-k', join(repo, 'deploy', 'kubernetes', 'crds')]);
    assert.match(shipped, /modelroutes.networking.serving.volcano.sh configured/);
    assert.equal((await kubectlOk(api, ['get', 'kthena', '-A', '-o', 'name'])).trim(), '', 'the category resolves');
    const versions = await kubectlOk(api, ['api-versions']);
    for (const v of [`${gw}/v1`, `${gw}/v1beta1`, 'inference.networking.k8s.io/v1',
      'inference.networking.x-k8s.io/v1alpha2', 'networking.serving.volcano.sh/v1alpha1']) {
      assert.ok(versions.includes(v), `${v} missing`);
    }
  });

  test('kubectl apply creates a namespace, pods, a service, a secret and custom objects', async () => {
    const docs = [
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo' } },
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-1', namespace: 'demo', labels: { app: 'web', tier: 'front' } },
        spec: { containers: [{ name: 'c', image: 'engine:1', ports: [{ containerPort: 8000 }] }] } },
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'db-1', namespace: 'demo', labels: { app: 'db', tier: 'back' } },
        spec: { containers: [{ name: 'c', image: 'db:1' }] } },
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'demo' },
        spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8000 }] } },
      { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'key', namespace: 'demo' }, type: 'Opaque', stringData: { token: 's3cret' } },
      { apiVersion: `${gw}/v1`, kind: 'GatewayClass', metadata: { name: 'sluice' }, spec: { controllerName: 'sluice.dev/gateway' } },
      { apiVersion: `${gw}/v1`, kind: 'Gateway', metadata: { name: 'gw', namespace: 'demo' },
        spec: { gatewayClassName: 'sluice', listeners: [{ name: 'http', port: 80, protocol: 'HTTP' }] } },
      { apiVersion: `${gw}/v1`, kind: 'HTTPRoute', metadata: { name: 'chat', namespace: 'demo' },
        spec: { parentRefs: [{ name: 'gw' }], rules: [{ backendRefs: [{ group: 'inference.networking.k8s.io', kind: 'InferencePool', name: 'pool' }] }] } },
      { apiVersion: 'inference.networking.k8s.io/v1', kind: 'InferencePool', metadata: { name: 'pool', namespace: 'demo' },
        spec: { selector: { matchLabels: { app: 'web' } }, targetPorts: [{ number: 8000 }] } },
      { apiVersion: `${gw}/v1`, kind: 'HTTPRoute', metadata: { name: 'other', namespace: 'default' }, spec: { parentRefs: [{ name: 'gw' }] } },
    ];
    const out = await kubectlOk(api, ['apply', '-f', write('objects', docs)]);
    assert.equal(out.trim().split('\n').filter((l) => l.endsWith(' created')).length, docs.length, out);
    const pod = api.get({ apiVersion: 'v1', kind: 'Pod', namespace: 'demo', name: 'web-1' });
    assert.match(pod.metadata.uid, /^[0-9a-f-]{36}$/);
    assert.match(pod.metadata.creationTimestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    assert.equal(pod.metadata.generation, undefined, 'core kinds keep no generation in v1.32');
    const httpRoute = api.get({ apiVersion: `${gw}/v1`, kind: 'HTTPRoute', namespace: 'demo', name: 'chat' });
    assert.equal(httpRoute.metadata.generation, 1);
    const secret = api.get({ apiVersion: 'v1', kind: 'Secret', namespace: 'demo', name: 'key' });
    assert.deepEqual([secret.data, secret.stringData, secret.type], [{ token: Buffer.from('s3cret').toString('base64') }, undefined, 'Opaque']);
  });

  test('kubectl apply again: unchanged objects stay, changed ones are patched in place', async () => {
    const resourceVersion = api.resourceVersion;
    const docs = [
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-1', namespace: 'demo', labels: { app: 'web', tier: 'front' } },
        spec: { containers: [{ name: 'c', image: 'engine:2', ports: [{ containerPort: 8000 }] }] } },
      { apiVersion: `${gw}/v1`, kind: 'HTTPRoute', metadata: { name: 'other', namespace: 'default' }, spec: { parentRefs: [{ name: 'gw' }] } },
    ];
    const out = await kubectlOk(api, ['apply', '-f', write('again', docs)]);
    assert.match(out, /pod\/web-1 configured/);
    assert.match(out, /httproute.gateway.networking.k8s.io\/other unchanged/);
    assert.equal(api.resourceVersion, resourceVersion + 1, 'one write: the pod');
    const pod = api.get({ apiVersion: 'v1', kind: 'Pod', namespace: 'demo', name: 'web-1' });
    assert.deepEqual(pod.spec.containers, [{ name: 'c', image: 'engine:2', ports: [{ containerPort: 8000 }] }]);
  });

  test('kubectl get: one object, lists, -o yaml/json, -A, label and field selectors', async () => {
    const one = JSON.parse(await kubectlOk(api, ['get', 'httproute', 'chat', '-n', 'demo', '-o', 'json']));
    assert.equal(one.kind, 'HTTPRoute');
    assert.equal(one.apiVersion, `${gw}/v1`);
    const beta = JSON.parse(await kubectlOk(api, ['get', `httproutes.v1beta1.${gw}`, 'chat', '-n', 'demo', '-o', 'json']));
    assert.equal(beta.apiVersion, `${gw}/v1beta1`, 'served under every version');
    assert.equal(beta.metadata.uid, one.metadata.uid);
    const yaml = await kubectlOk(api, ['get', 'inferencepool', 'pool', '-n', 'demo', '-o', 'yaml']);
    assert.match(yaml, /^apiVersion: inference.networking.k8s.io\/v1\nkind: InferencePool\n/);
    assert.match(yaml, /matchLabels:\n\s+app: web/);
    const list = JSON.parse(await kubectlOk(api, ['get', 'pods', '-n', 'demo', '-o', 'json']));
    assert.deepEqual(list.items.map((p) => p.metadata.name), ['db-1', 'web-1']);
    const table = await kubectlOk(api, ['get', 'httproutes', '-A']);
    assert.match(table, /^NAMESPACE\s+NAME\s+AGE\n/);
    assert.match(table, /\ndefault\s+other\s/);
    assert.match(table, /\ndemo\s+chat\s/);
    assert.equal((await kubectlOk(api, ['get', 'pods', '-A', '-l', 'app=web', '-o', 'name'])).trim(), 'pod/web-1');
    assert.equal((await kubectlOk(api, ['get', 'pods', '-n', 'demo', '-l', 'tier notin (front),app', '-o', 'name'])).trim(), 'pod/db-1');
    assert.equal((await kubectlOk(api, ['get', 'pods', '-n', 'demo', '--field-selector', 'metadata.name!=db-1', '-o', 'name'])).trim(), 'pod/web-1');
    assert.equal((await kubectlOk(api, ['get', 'gc', '-o', 'name'])).trim(), `gatewayclass.${gw}/sluice`, 'short names');
    const missing = await kubectl(api, ['get', 'pod', 'nope', '-n', 'demo']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /Error from server \(NotFound\): pods "nope" not found/);
  });

  test('kubectl get -w sees ADDED, then MODIFIED', async () => {
    // kubectl prints ADDED from a GET, then watches: change the object only once the watch is
    // counted, which the server does in the same step as registering it.
    const watches = () => api.stats().requests['watch httproutes'] ?? 0;
    const before = watches();
    const p = spawn(kubectlPath, ['--kubeconfig', api.kubeconfig, '--cache-dir', join(api.dir, 'kube-cache'),
      'get', 'httproute', 'chat', '-n', 'demo', '-w', '--output-watch-events',
      '-o', 'jsonpath={.type} {.object.metadata.generation}{"\\n"}'], { env: { ...process.env, HOME: api.dir } });
    let lines = '';
    p.stdout.on('data', (d) => { lines += d; });
    try {
      await eventually(() => lines.includes('ADDED 1\n') && watches() > before, `ADDED in kubectl's output (${lines})`);
      await ok(api, 'PATCH', `/apis/${gw}/v1/namespaces/demo/httproutes/chat`,
        { type: 'application/merge-patch+json', body: { spec: { hostnames: ['chat.example'] } } });
      await eventually(() => lines.includes('MODIFIED 2\n'), `MODIFIED in kubectl's output (${lines})`);
    } finally {
      p.kill();
    }
  });

  test('kubectl patch --type=merge changes spec and bumps generation', async () => {
    const out = await kubectlOk(api, ['patch', 'httproute', 'chat', '-n', 'demo', '--type=merge',
      '-p', '{"spec":{"hostnames":["chat.example","chat2.example"]}}']);
    assert.match(out, /httproute.gateway.networking.k8s.io\/chat patched/);
    const obj = api.get({ apiVersion: `${gw}/v1`, kind: 'HTTPRoute', namespace: 'demo', name: 'chat' });
    assert.deepEqual(obj.spec.hostnames, ['chat.example', 'chat2.example']);
    assert.equal(obj.metadata.generation, 3);
    // CRDs have no strategic merge patch (kubectl patch's default type), as for real.
    const strategic = await kubectl(api, ['patch', 'httproute', 'chat', '-n', 'demo', '-p', '{"spec":{}}']);
    assert.notEqual(strategic.code, 0);
    assert.match(strategic.stderr, /application\/strategic-merge-patch\+json is not supported/);
  });

  test('kubectl patch --subresource=status changes status only, generation unchanged',
    { skip: kubectlMinor() < 24 && 'this kubectl predates --subresource (1.24)' }, async () => {
    const before = api.get({ apiVersion: `${gw}/v1`, kind: 'HTTPRoute', namespace: 'demo', name: 'chat' });
    const status = { parents: [{ parentRef: { name: 'gw' }, controllerName: 'sluice.dev/gateway',
      conditions: [{ type: 'Accepted', status: 'True', reason: 'Accepted', observedGeneration: 3, lastTransitionTime: '2025-01-01T00:00:00Z', message: '' }] }] };
    await kubectlOk(api, ['patch', 'httproute', 'chat', '-n', 'demo', '--subresource=status', '--type=merge',
      '-p', JSON.stringify({ status, spec: { hostnames: ['ignored.example'] } })]);
    const after = api.get({ apiVersion: `${gw}/v1`, kind: 'HTTPRoute', namespace: 'demo', name: 'chat' });
    assert.deepEqual(after.status, status);
    assert.deepEqual(after.spec, before.spec);
    assert.equal(after.metadata.generation, before.metadata.generation);
    assert.ok(Number(after.metadata.resourceVersion) > Number(before.metadata.resourceVersion));
    assert.equal(api.stats().requests['patch httproutes/status'], 1);
  });

  test('kubectl apply --server-side creates and then updates', async () => {
    const cm = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'settings', namespace: 'demo' }, data: { a: '1' } };
    assert.match(await kubectlOk(api, ['apply', '--server-side', '-f', write('ssa1', [cm])]), /configmap\/settings serverside-applied/);
    cm.data.b = '2';
    await kubectlOk(api, ['apply', '--server-side', '--field-manager', 'sluice-test', '-f', write('ssa2', [cm])]);
    assert.deepEqual(api.get({ apiVersion: 'v1', kind: 'ConfigMap', namespace: 'demo', name: 'settings' }).data, { a: '1', b: '2' });
    const pool = { apiVersion: 'inference.networking.k8s.io/v1', kind: 'InferencePool', metadata: { name: 'pool', namespace: 'demo' },
      spec: { selector: { matchLabels: { app: 'web' } }, targetPorts: [{ number: 9000 }] } };
    await kubectlOk(api, ['apply', '--server-side', '--force-conflicts', '-f', write('ssa3', [pool])]);
    const stored = api.get({ apiVersion: 'inference.networking.k8s.io/v1', kind: 'InferencePool', namespace: 'demo', name: 'pool' });
    assert.deepEqual(stored.spec.targetPorts, [{ number: 9000 }]);
    assert.equal(stored.metadata.generation, 2);
  });

  test('kubectl delete removes objects; deleting a namespace removes its contents', async () => {
    assert.match(await kubectlOk(api, ['delete', 'pod', 'db-1', '-n', 'demo']), /pod "db-1" deleted/);
    assert.equal(api.get({ apiVersion: 'v1', kind: 'Pod', namespace: 'demo', name: 'db-1' }), undefined);
    assert.match(await kubectlOk(api, ['delete', 'httproute', 'other']), /deleted/);
    await kubectlOk(api, ['delete', 'namespace', 'demo']);
    assert.equal((await kubectlOk(api, ['get', 'pods,httproutes,inferencepools', '-A', '-o', 'name'])).trim(), '');
    assert.equal((await kubectlOk(api, ['get', 'gatewayclass', '-o', 'name'])).trim(), `gatewayclass.${gw}/sluice`);
  });

  test('a wrong token gets 401 and kubectl reports Unauthorized; tokenFile and inline CA work', async () => {
    const bad = api.writeKubeconfig(join(api.dir, 'kubeconfig-bad'), { token: 'not-the-token' });
    const r = await kubectl(api, ['get', 'namespaces'], { kubeconfig: bad });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Unauthorized/);
    const tokenFile = join(api.dir, 'token');
    writeFileSync(tokenFile, api.token);
    const viaFile = api.writeKubeconfig(join(api.dir, 'kubeconfig-tokenfile'), { tokenFile });
    assert.match(readFileSync(viaFile, 'utf8'), /tokenFile: /);
    assert.match(await kubectlOk(api, ['get', 'ns', 'default', '-o', 'name'], { kubeconfig: viaFile }), /namespace\/default/);
    assert.match(readFileSync(api.kubeconfigData, 'utf8'), /certificate-authority-data: /);
    assert.match(await kubectlOk(api, ['get', 'ns', 'default', '-o', 'name'], { kubeconfig: api.kubeconfigData }), /namespace\/default/);
  });
});

// ---- protocol details over https

describe('protocol details', { timeout: 30000 }, () => {
  let api;

  before(async () => {
    api = await startFakeApiServer({ dir: tempDir('fake-apiserver-protocol-'), crds: ['gateway'], bookmarkIntervalMs: 100 });
  });
  after(() => api.close());

  test('401 with a Status body for a missing or wrong token, on every path', async () => {
    for (const [path, token] of [['/version', null], ['/api/v1/pods', 'wrong'], ['/fake/stats', 'wrong']]) {
      const r = await request(api, 'GET', path, { token });
      assert.equal(r.status, 401);
      assert.deepEqual(r.body, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure',
        message: 'Unauthorized', reason: 'Unauthorized', code: 401 });
    }
  });

  test('discovery documents', async () => {
    const apis = await ok(api, 'GET', '/apis');
    assert.equal(apis.kind, 'APIGroupList');
    const group = apis.groups.find((g) => g.name === gw);
    assert.deepEqual(group.preferredVersion, { groupVersion: `${gw}/v1`, version: 'v1' });
    assert.deepEqual(group.versions.map((v) => v.version), ['v1', 'v1beta1']);
    const core = await ok(api, 'GET', '/api/v1');
    assert.equal(core.kind, 'APIResourceList');
    const pods = core.resources.find((r) => r.name === 'pods');
    assert.deepEqual([pods.singularName, pods.namespaced, pods.kind, pods.shortNames], ['pod', true, 'Pod', ['po']]);
    assert.ok(core.resources.some((r) => r.name === 'pods/status'));
    const list = await ok(api, 'GET', `/apis/${gw}/v1`);
    const gc = list.resources.find((r) => r.name === 'gatewayclasses');
    assert.equal(gc.namespaced, false);
    assert.ok(list.resources.some((r) => r.name === 'httproutes/status' && r.verbs.includes('patch')));
  });

  test('a CRD-backed resource is 404 before its CRD exists, 200 after, 404 once it is deleted', async () => {
    const path = '/apis/networking.serving.volcano.sh/v1alpha1/namespaces/default/modelroutes';
    assertStatus(await request(api, 'GET', path), 404, 'NotFound');
    assertStatus(await request(api, 'GET', '/apis/networking.serving.volcano.sh/v1alpha1'), 404, 'NotFound');
    const crd = crdsFor(['kthena'])[0];
    await ok(api, 'POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', { body: crd });
    const empty = await ok(api, 'GET', path);
    assert.equal(empty.kind, 'ModelRouteList');
    assert.deepEqual(empty.items, []);
    await ok(api, 'POST', path, { body: { apiVersion: 'networking.serving.volcano.sh/v1alpha1', kind: 'ModelRoute', metadata: { name: 'm' }, spec: {} } });
    const items = (await ok(api, 'GET', path)).items;
    assert.equal(items[0].kind, 'ModelRoute', 'custom resource list items keep apiVersion and kind');
    const watch = new WatchStream(api, `${path}?watch=true&resourceVersion=${api.resourceVersion}`);
    await watch.response;
    await ok(api, 'DELETE', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`);
    assert.equal((await watch.next()).type, 'DELETED', 'instances go with their CRD');
    await watch.closed();
    assertStatus(await request(api, 'GET', path), 404, 'NotFound');
    const groups = (await ok(api, 'GET', '/apis')).groups.map((g) => g.name);
    assert.ok(!groups.includes('networking.serving.volcano.sh'));
  });

  test('built-in list items carry no apiVersion/kind; the list does', async () => {
    const list = await ok(api, 'GET', '/api/v1/namespaces');
    assert.equal(list.kind, 'NamespaceList');
    assert.equal(list.apiVersion, 'v1');
    assert.match(list.metadata.resourceVersion, /^\d+$/);
    assert.deepEqual(list.items.map((n) => n.metadata.name), ['default', 'kube-node-lease', 'kube-public', 'kube-system']);
    assert.equal(list.items[0].apiVersion, undefined);
    assert.equal(list.items[0].kind, undefined);
  });

  test('paged list: limit/continue with one resourceVersion across pages', async () => {
    await ok(api, 'POST', '/api/v1/namespaces', { body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'paging' } } });
    const expected = Array.from({ length: 25 }, (_, i) => `cm-${String(i).padStart(2, '0')}`);
    api.bulkLoad(expected.map((name) => ({ ...configMap(name), metadata: { name, namespace: 'paging' } })));
    const names = [];
    const rvs = new Set();
    let token = '';
    let pages = 0;
    do {
      const page = await ok(api, 'GET', `/api/v1/namespaces/paging/configmaps?limit=10${token ? `&continue=${encodeURIComponent(token)}` : ''}`);
      names.push(...page.items.map((c) => c.metadata.name));
      rvs.add(page.metadata.resourceVersion);
      if (pages === 0) {
        assert.equal(page.metadata.remainingItemCount, 15);
        // Written between pages: not part of this list.
        await ok(api, 'POST', '/api/v1/namespaces/paging/configmaps', { body: configMap('cm-new') });
      }
      token = page.metadata.continue ?? '';
      pages++;
    } while (token);
    assert.equal(pages, 3);
    assert.equal(rvs.size, 1);
    assert.deepEqual(names, expected);
    assert.equal((await ok(api, 'GET', '/api/v1/namespaces/paging/configmaps')).items.length, 26);
    assertStatus(await request(api, 'GET', '/api/v1/configmaps?limit=1&continue=garbage'), 400, 'BadRequest');
    const first = await ok(api, 'GET', '/api/v1/namespaces/paging/configmaps?limit=1');
    assertStatus(await request(api, 'GET', `/api/v1/namespaces/default/configmaps?limit=1&continue=${encodeURIComponent(first.metadata.continue)}`), 400, 'BadRequest');
  });

  test('label and field selectors on lists', async () => {
    const labels = [{ app: 'a', tier: 'x' }, { app: 'b', tier: 'y' }, { app: 'c' }];
    for (const [i, l] of labels.entries()) {
      await ok(api, 'POST', '/api/v1/namespaces/default/configmaps', { body: configMap(`sel-${i}`, {}, l) });
    }
    const names = async (query) => (await ok(api, 'GET', `/api/v1/namespaces/default/configmaps?${query}`)).items
      .map((c) => c.metadata.name).filter((n) => n.startsWith('sel-'));
    const q = (s) => `labelSelector=${encodeURIComponent(s)}`;
    assert.deepEqual(await names(q('app=a')), ['sel-0']);
    assert.deepEqual(await names(q('app==b')), ['sel-1']);
    assert.deepEqual(await names(q('app!=a,app')), ['sel-1', 'sel-2']);
    assert.deepEqual(await names(q('tier')), ['sel-0', 'sel-1']);
    assert.deepEqual(await names(q('!tier')), ['sel-2']);
    assert.deepEqual(await names(q('app in (a, c)')), ['sel-0', 'sel-2']);
    assert.deepEqual(await names(q('app notin (a,c)')), ['sel-1']);
    assert.deepEqual(await names(q('app in (a,b),tier notin (y)')), ['sel-0']);
    assert.deepEqual(await names(`fieldSelector=${encodeURIComponent('metadata.name=sel-1')}`), ['sel-1']);
    assert.deepEqual(await names(`fieldSelector=${encodeURIComponent('metadata.name!=sel-1,metadata.namespace=default')}`), ['sel-0', 'sel-2']);
    assertStatus(await request(api, 'GET', `/api/v1/configmaps?${q('app in (a')}`), 400, 'BadRequest');
    assertStatus(await request(api, 'GET', '/api/v1/configmaps?fieldSelector=spec.x%3D1'), 400, 'BadRequest');
  });

  test('watch from a resourceVersion replays the later events in order', async () => {
    const from = api.resourceVersion;
    const base = `/apis/${gw}/v1/namespaces/default/httproutes`;
    await ok(api, 'POST', base, { body: route('replay', 'default', { hostnames: ['a'] }) });
    await ok(api, 'PATCH', `${base}/replay`, { type: 'application/merge-patch+json', body: { spec: { hostnames: ['b'] } } });
    const deleted = await ok(api, 'DELETE', `${base}/replay`);
    assert.deepEqual([deleted.kind, deleted.status, deleted.details.name], ['Status', 'Success', 'replay'], 'custom resources answer a DELETE with a Status');
    const watch = new WatchStream(api, `${base}?watch=1&resourceVersion=${from}`);
    const events = [await watch.next(), await watch.next(), await watch.next()];
    watch.close();
    assert.deepEqual(events.map((e) => e.type), ['ADDED', 'MODIFIED', 'DELETED']);
    assert.deepEqual(events[1].object.spec.hostnames, ['b']);
    assert.equal(events[0].object.apiVersion, `${gw}/v1`);
    assert.equal(events[0].object.kind, 'HTTPRoute');
    const rvs = events.map((e) => Number(e.object.metadata.resourceVersion));
    assert.ok(rvs[0] > from && rvs[1] > rvs[0] && rvs[2] > rvs[1]);
  });

  test('watch without a resourceVersion starts with ADDED for every current object, then live events', async () => {
    const base = '/api/v1/namespaces/default/configmaps';
    const watch = new WatchStream(api, `${base}?watch=true&labelSelector=app`);
    const initial = [await watch.next(), await watch.next(), await watch.next()];
    assert.deepEqual(initial.map((e) => `${e.type} ${e.object.metadata.name}`), ['ADDED sel-0', 'ADDED sel-1', 'ADDED sel-2']);
    assert.equal(initial[0].object.kind, 'ConfigMap', 'watch events carry apiVersion and kind');
    // Leaving the selector is a DELETED for this watch; entering it an ADDED.
    await ok(api, 'PATCH', `${base}/sel-2`, { type: 'application/merge-patch+json', body: { metadata: { labels: { app: null } } } });
    assert.deepEqual([(await watch.next()).type, watch.events.at(-1).object.metadata.name], ['DELETED', 'sel-2']);
    await ok(api, 'PATCH', `${base}/sel-2`, { type: 'application/json-patch+json', body: [{ op: 'add', path: '/metadata/labels/app', value: 'c' }] });
    assert.equal((await watch.next()).type, 'ADDED');
    watch.close();
  });

  test('bookmarks: periodic and on demand, only for watches that allow them', async () => {
    const base = '/api/v1/namespaces/default/configmaps';
    const rv = api.resourceVersion;
    const withBookmarks = new WatchStream(api, `${base}?watch=true&resourceVersion=${rv}&allowWatchBookmarks=true`);
    const without = new WatchStream(api, `${base}?watch=true&resourceVersion=${rv}`);
    await Promise.all([withBookmarks.response, without.response]);
    const bookmark = await withBookmarks.next();
    assert.equal(bookmark.type, 'BOOKMARK');
    assert.deepEqual(bookmark.object, { kind: 'ConfigMap', apiVersion: 'v1', metadata: { resourceVersion: String(rv) } });
    api.sendBookmarks();
    await ok(api, 'POST', base, { body: configMap('after-bookmark') });
    assert.equal((await withBookmarks.nextOfType('ADDED')).object.metadata.name, 'after-bookmark');
    const first = await without.next();
    assert.equal(first.type, 'ADDED', 'no bookmarks unless allowWatchBookmarks=true');
    withBookmarks.close();
    without.close();
  });

  test('410 Expired: an ERROR event for a resourceVersion older than the compaction, then the end', async () => {
    const base = '/api/v1/namespaces/default/configmaps';
    const old = api.resourceVersion;
    await ok(api, 'POST', base, { body: configMap('before-compaction') });
    const page = await ok(api, 'GET', `${base}?limit=1`);
    api.compact();
    const watch = new WatchStream(api, `${base}?watch=true&resourceVersion=${old}`);
    const e = await watch.next();
    assert.equal(e.type, 'ERROR');
    assert.equal(e.object.kind, 'Status');
    assert.equal(e.object.code, 410);
    assert.equal(e.object.reason, 'Expired');
    assert.equal(await watch.next(), null, 'the stream ends after the error');
    assertStatus(await request(api, 'GET', `${base}?limit=1&continue=${encodeURIComponent(page.metadata.continue)}`), 410, 'Expired');
    const current = new WatchStream(api, `${base}?watch=true&resourceVersion=${api.resourceVersion}`);
    await ok(api, 'POST', base, { body: configMap('after-compaction') });
    assert.equal((await current.next()).object.metadata.name, 'after-compaction');
    current.close();
  });

  test('watch timeoutSeconds ends the stream; closeWatches() ends every stream', async () => {
    const base = '/api/v1/namespaces/default/secrets';
    const timed = new WatchStream(api, `${base}?watch=true&resourceVersion=${api.resourceVersion}&timeoutSeconds=1`);
    const open = new WatchStream(api, `${base}?watch=true&resourceVersion=${api.resourceVersion}`);
    await Promise.all([timed.response, open.response]);
    assert.equal((await timed.response).headers['transfer-encoding'], 'chunked');
    await timed.closed(3000);
    assert.equal(open.ended, false);
    await eventually(() => api.stats().openWatches === 1, 'one open watch');
    api.closeWatches();
    await open.closed();
    assert.equal(api.stats().openWatches, 0);
  });

  test('409: AlreadyExists on POST, Conflict on PUT or patch with a stale resourceVersion', async () => {
    const base = '/api/v1/namespaces/default/configmaps';
    const created = await ok(api, 'POST', base, { body: configMap('cas', { n: '1' }) });
    assertStatus(await request(api, 'POST', base, { body: configMap('cas') }), 409, 'AlreadyExists');
    const updated = await ok(api, 'PUT', `${base}/cas`, { body: { ...created, data: { n: '2' } } });
    assert.ok(Number(updated.metadata.resourceVersion) > Number(created.metadata.resourceVersion));
    const stale = await request(api, 'PUT', `${base}/cas`, { body: { ...created, data: { n: '3' } } });
    assertStatus(stale, 409, 'Conflict');
    assert.match(stale.body.message, /the object has been modified; please apply your changes to the latest version and try again/);
    assert.deepEqual(stale.body.details, { name: 'cas', kind: 'configmaps' });
    assertStatus(await request(api, 'PATCH', `${base}/cas`, { type: 'application/merge-patch+json',
      body: { metadata: { resourceVersion: created.metadata.resourceVersion }, data: { n: '4' } } }), 409, 'Conflict');
    const { resourceVersion, ...unconditional } = updated.metadata;
    const last = await ok(api, 'PUT', `${base}/cas`, { body: { ...updated, metadata: unconditional, data: { n: '5' } } });
    assert.equal(last.data.n, '5');
    // A write that changes nothing is no write: same resourceVersion.
    const same = await ok(api, 'PUT', `${base}/cas`, { body: last });
    assert.equal(same.metadata.resourceVersion, last.metadata.resourceVersion);
  });

  test('status subresource: the main resource ignores status, /status ignores the rest', async () => {
    const base = `/apis/${gw}/v1/namespaces/default/httproutes`;
    const created = await ok(api, 'POST', base, { body: { ...route('st', 'default', { hostnames: ['a'] }), status: { parents: [] } } });
    assert.equal(created.status, undefined, 'status is dropped on create');
    const withStatus = await ok(api, 'PUT', `${base}/st/status`, { body: { ...created, spec: { hostnames: ['z'] }, status: { parents: [{ controllerName: 'c' }] } } });
    assert.deepEqual(withStatus.spec, { hostnames: ['a'] });
    assert.deepEqual(withStatus.status, { parents: [{ controllerName: 'c' }] });
    assert.equal(withStatus.metadata.generation, 1);
    const specChange = await ok(api, 'PUT', `${base}/st`, { body: { ...withStatus, spec: { hostnames: ['b'] }, status: { parents: [] } } });
    assert.deepEqual(specChange.status, { parents: [{ controllerName: 'c' }] });
    assert.equal(specChange.metadata.generation, 2);
    const labelsOnly = await ok(api, 'PATCH', `${base}/st`, { type: 'application/merge-patch+json', body: { metadata: { labels: { x: 'y' } } } });
    assert.equal(labelsOnly.metadata.generation, 2, 'metadata changes leave generation alone');
    assertStatus(await request(api, 'GET', '/api/v1/namespaces/default/configmaps/cas/status'), 404, 'NotFound');
  });

  test('patch types: JSON patch (add/replace/remove/test), merge patch, strategic merge, apply', async () => {
    const base = '/api/v1/namespaces/default/configmaps';
    await ok(api, 'POST', base, { body: configMap('patched', { a: '1', b: '2' }) });
    const jp = await ok(api, 'PATCH', `${base}/patched`, { type: 'application/json-patch+json', body: [
      { op: 'test', path: '/data/a', value: '1' }, { op: 'replace', path: '/data/a', value: '10' },
      { op: 'remove', path: '/data/b' }, { op: 'add', path: '/data/c~1d', value: '3' }] });
    assert.deepEqual(jp.data, { a: '10', 'c/d': '3' });
    assertStatus(await request(api, 'PATCH', `${base}/patched`, { type: 'application/json-patch+json',
      body: [{ op: 'test', path: '/data/a', value: 'nope' }] }), 422, 'Invalid');
    const mp = await ok(api, 'PATCH', `${base}/patched`, { type: 'application/merge-patch+json', body: { data: { a: null, e: '5' } } });
    assert.deepEqual(mp.data, { 'c/d': '3', e: '5' });
    const sp = await ok(api, 'PATCH', `${base}/patched`, { type: 'application/strategic-merge-patch+json', body: { data: { f: '6' } } });
    assert.equal(sp.data.f, '6');
    assertStatus(await request(api, 'PATCH', `${base}/patched`, { type: 'application/apply-patch+yaml',
      body: 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: patched\ndata:\n  g: "7"\n' }), 422, 'Invalid');
    const applied = await ok(api, 'PATCH', `${base}/patched?fieldManager=test&force=true`, { type: 'application/apply-patch+yaml',
      body: 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: patched\ndata:\n  g: "7"  # YAML, as some clients send\n' });
    assert.equal(applied.data.g, '7');
    const createdByApply = await request(api, 'PATCH', `${base}/fresh?fieldManager=test`, { type: 'application/apply-patch+yaml',
      body: configMap('fresh', { x: '1' }) });
    assert.equal(createdByApply.status, 201);
    assertStatus(await request(api, 'PATCH', `${base}/patched`, { type: 'text/plain', body: '{}' }), 415, 'UnsupportedMediaType');
  });

  test('finalizers, generateName, dryRun, deletecollection, sendInitialEvents', async () => {
    const base = `/apis/${gw}/v1beta1/namespaces/default/httproutes`;
    const named = await ok(api, 'POST', base, { body: { apiVersion: `${gw}/v1beta1`, kind: 'HTTPRoute',
      metadata: { generateName: 'gen-', labels: { batch: 'x' }, finalizers: ['sluice.dev/cleanup'] }, spec: {} } });
    assert.match(named.metadata.name, /^gen-[a-z0-9]{5}$/);
    assert.equal(named.apiVersion, `${gw}/v1beta1`);
    const path = `${base}/${named.metadata.name}`;
    const watch = new WatchStream(api, `${base}?watch=true&resourceVersion=${named.metadata.resourceVersion}`);
    const terminating = await ok(api, 'DELETE', path);
    assert.ok(terminating.metadata.deletionTimestamp, 'a finalizer holds the object');
    assert.equal((await watch.next()).type, 'MODIFIED');
    assert.equal((await request(api, 'GET', path)).status, 200);
    await ok(api, 'PATCH', path, { type: 'application/merge-patch+json', body: { metadata: { finalizers: null } } });
    assert.equal((await watch.next()).type, 'DELETED', 'gone with its last finalizer');
    watch.close();
    const rv = api.resourceVersion;
    const dry = await request(api, 'POST', `${base}?dryRun=All`, { body: { apiVersion: `${gw}/v1`, kind: 'HTTPRoute', metadata: { name: 'dry' } } });
    assert.equal(dry.status, 201);
    assert.equal(api.resourceVersion, rv, 'dry runs write nothing');
    assertStatus(await request(api, 'GET', `${base}/dry`), 404, 'NotFound');
    for (const name of ['dc-1', 'dc-2']) {
      await ok(api, 'POST', base, { body: { apiVersion: `${gw}/v1`, kind: 'HTTPRoute', metadata: { name, labels: { batch: 'dc' } } } });
    }
    const initial = new WatchStream(api, `${base}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&labelSelector=batch%3Ddc`);
    assert.deepEqual([(await initial.next()).type, (await initial.next()).type], ['ADDED', 'ADDED']);
    const end = await initial.next();
    assert.equal(end.type, 'BOOKMARK');
    assert.equal(end.object.metadata.annotations['k8s.io/initial-events-end'], 'true');
    initial.close();
    const deleted = await ok(api, 'DELETE', `${base}?labelSelector=batch%3Ddc`);
    assert.deepEqual(deleted.items.map((i) => i.metadata.name), ['dc-1', 'dc-2']);
    assert.equal((await ok(api, 'GET', `${base}?labelSelector=batch`)).items.length, 0);
    assertStatus(await request(api, 'DELETE', '/api/v1/namespaces'), 405, 'MethodNotAllowed');
  });

  test('Lease create, get, update (leader election)', async () => {
    const base = '/apis/coordination.k8s.io/v1/namespaces/kube-system/leases';
    const spec = { holderIdentity: 'router-a', leaseDurationSeconds: 15, acquireTime: '2025-01-01T00:00:00.000000Z',
      renewTime: '2025-01-01T00:00:00.000000Z', leaseTransitions: 0 };
    const lease = await ok(api, 'POST', base, { body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'sluice' }, spec } });
    assert.equal(lease.kind, 'Lease');
    const got = await ok(api, 'GET', `${base}/sluice`);
    assert.deepEqual(got.spec, spec);
    const renewed = await ok(api, 'PUT', `${base}/sluice`, { body: { ...got, spec: { ...spec, renewTime: '2025-01-01T00:00:05.000000Z' } } });
    assert.equal(renewed.spec.renewTime, '2025-01-01T00:00:05.000000Z');
    // A second candidate holding the old resourceVersion loses.
    assertStatus(await request(api, 'PUT', `${base}/sluice`, { body: { ...got, spec: { ...spec, holderIdentity: 'router-b' } } }), 409, 'Conflict');
    assertStatus(await request(api, 'GET', `${base}/missing`), 404, 'NotFound');
  });

  test('errors: bad JSON, unknown paths, wrong methods, invalid names, missing namespaces, big bodies', async () => {
    assertStatus(await request(api, 'POST', '/api/v1/namespaces/default/configmaps', { body: '{not json' }), 400, 'BadRequest');
    assertStatus(await request(api, 'GET', '/api/v1/nothings'), 404, 'NotFound');
    assertStatus(await request(api, 'GET', '/not/an/api/path'), 404, 'NotFound');
    assertStatus(await request(api, 'GET', '/api/v1/namespaces/default/pods/a/b/c'), 404, 'NotFound');
    assertStatus(await request(api, 'PUT', '/api/v1/namespaces/default/configmaps', { body: {} }), 405, 'MethodNotAllowed');
    assertStatus(await request(api, 'POST', '/api/v1/namespaces/default/configmaps', { body: configMap('Not_Valid') }), 422, 'Invalid');
    assertStatus(await request(api, 'POST', '/api/v1/namespaces/nowhere/configmaps', { body: configMap('x') }), 404, 'NotFound');
    assertStatus(await request(api, 'POST', '/api/v1/namespaces/default/configmaps', { body: { ...configMap('x'), kind: 'Secret' } }), 400, 'BadRequest');
    const big = JSON.stringify(configMap('big', { blob: 'x'.repeat(4 * 1024 * 1024) }));
    assertStatus(await request(api, 'POST', '/api/v1/namespaces/default/configmaps', { body: big }), 413, 'RequestEntityTooLarge');
    assert.equal((await request(api, 'GET', '/version')).status, 200, 'still serving');
  });
});

// ---- fault injection and the bulk load

describe('test controls', { timeout: 30000 }, () => {
  let api;

  before(async () => {
    api = await startFakeApiServer({ dir: tempDir('fake-apiserver-controls-'), crds: 'all' });
  });
  after(() => api.close());

  test('failNext, stats, setToken, and the same over /fake/', async () => {
    api.resetStats();
    api.failNext(2, 503);
    const path = '/api/v1/namespaces/default/configmaps';
    assertStatus(await request(api, 'GET', path), 503, 'ServiceUnavailable');
    assertStatus(await request(api, 'GET', path), 503, 'ServiceUnavailable');
    assert.equal((await request(api, 'GET', path)).status, 200);
    await ok(api, 'POST', '/fake/fail?n=1&code=429');
    const limited = await request(api, 'GET', path);
    assertStatus(limited, 429, 'TooManyRequests');
    assert.equal(limited.headers['retry-after'], '1');
    const stats = await ok(api, 'GET', '/fake/stats');
    assert.equal(stats.requests['list configmaps'], 4);
    assert.equal(stats.total, 4, '/fake/ requests are not counted');
    api.setToken('rotated');
    assert.equal((await request(api, 'GET', path, { token: 'rotated' })).status, 200);
    assert.equal((await request(api, 'GET', path, { token: api.token })).status, 200);
    assert.equal((await request(api, 'GET', path, { token: 'old' })).status, 401);
    await ok(api, 'POST', '/fake/token?token=again');
    assert.equal(api.token, 'again');
  });

  test('stop() and restart() keep state and the port; watches end; clients resume', async () => {
    const base = `/apis/${gw}/v1/namespaces/default/httproutes`;
    const created = await ok(api, 'POST', base, { body: route('survivor', 'default') });
    const port = api.port;
    const watch = new WatchStream(api, `${base}?watch=true&resourceVersion=${api.resourceVersion}`);
    await watch.response;
    await api.stop();
    await watch.closed();
    await assert.rejects(request(api, 'GET', '/version'), /ECONNREFUSED/);
    await api.restart();
    assert.equal(api.port, port);
    const got = await ok(api, 'GET', `${base}/survivor`);
    assert.equal(got.metadata.resourceVersion, created.metadata.resourceVersion);
    const resumed = new WatchStream(api, `${base}?watch=true&resourceVersion=${created.metadata.resourceVersion}`);
    await ok(api, 'DELETE', `${base}/survivor`);
    assert.equal((await resumed.next()).type, 'DELETED');
    resumed.close();
    const restarts = api.stats().restarts;
    await ok(api, 'POST', '/fake/restart?downMs=50');
    await eventually(() => api.stats().restarts === restarts + 1, 'the restart over /fake/restart');
    assert.equal((await request(api, 'GET', '/version')).status, 200);
  });

  test('direct store access: put, get, list, delete emit events like API writes', async () => {
    const ref = { apiVersion: 'inference.networking.x-k8s.io/v1alpha2', kind: 'InferencePool', namespace: 'default', name: 'direct' };
    const watch = new WatchStream(api, `/apis/inference.networking.x-k8s.io/v1alpha2/namespaces/default/inferencepools?watch=true&resourceVersion=${api.resourceVersion}`);
    await watch.response;
    const put = api.put({ apiVersion: ref.apiVersion, kind: ref.kind, metadata: { name: 'direct', namespace: 'default' },
      spec: { targetPortNumber: 8000 }, status: { parent: [] } });
    assert.deepEqual(put.status, { parent: [] }, 'direct puts keep status');
    assert.equal((await watch.next()).type, 'ADDED');
    api.put({ ...put, spec: { targetPortNumber: 9000 } });
    const modified = await watch.next();
    assert.equal(modified.type, 'MODIFIED');
    assert.equal(modified.object.metadata.generation, 2);
    assert.equal(api.get(ref).spec.targetPortNumber, 9000);
    assert.equal(api.list({ apiVersion: ref.apiVersion, kind: ref.kind, namespace: 'default' }).length, 1);
    assert.equal(api.delete(ref).metadata.name, 'direct');
    assert.equal((await watch.next()).type, 'DELETED');
    assert.equal(api.get(ref), undefined);
    watch.close();
  });

  test('bulk load: 10,000 HTTPRoutes, 1,000 InferencePools, 20,000 Pods; paging 20,000 pods by 500', async (t) => {
    const start = Date.now();
    api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'bench' } });
    const routes = Array.from({ length: 10000 }, (_, i) => route(`route-${i}`, 'bench', { hostnames: [`h${i}.example`] }));
    const pools = Array.from({ length: 1000 }, (_, i) => ({ apiVersion: 'inference.networking.k8s.io/v1', kind: 'InferencePool',
      metadata: { name: `pool-${i}`, namespace: 'bench' }, spec: { selector: { matchLabels: { pool: String(i) } }, targetPorts: [{ number: 8000 }] } }));
    const pods = Array.from({ length: 20000 }, (_, i) => ({ apiVersion: 'v1', kind: 'Pod',
      metadata: { name: `pod-${String(i).padStart(5, '0')}`, namespace: 'bench', labels: { pool: String(i % 1000) } },
      spec: { containers: [{ name: 'engine', image: 'sim' }] }, status: { phase: 'Running', podIP: `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}` } }));
    const loaded = api.bulkLoad([...routes, ...pools, ...pods]);
    assert.equal(loaded.count, 31000);
    const loadMs = Date.now() - start;
    const names = [];
    const rvs = new Set();
    let token = '';
    do {
      const page = await ok(api, 'GET', `/api/v1/namespaces/bench/pods?limit=500${token ? `&continue=${encodeURIComponent(token)}` : ''}`);
      names.push(...page.items.map((p) => p.metadata.name));
      rvs.add(page.metadata.resourceVersion);
      token = page.metadata.continue ?? '';
    } while (token);
    t.diagnostic(`bulk load ${loadMs} ms, paging 20,000 pods ${Date.now() - start - loadMs} ms`);
    assert.equal(names.length, 20000);
    assert.equal(new Set(names).size, 20000);
    assert.equal(names[0], 'pod-00000');
    assert.equal(names.at(-1), 'pod-19999');
    assert.equal(rvs.size, 1);
    const selected = await ok(api, 'GET', '/api/v1/pods?labelSelector=pool%3D7');
    assert.equal(selected.items.length, 20);
    assert.equal(selected.items[0].status.phase, 'Running');
    const routeCount = await ok(api, 'GET', `/apis/${gw}/v1/namespaces/bench/httproutes?limit=1`);
    assert.equal(routeCount.metadata.remainingItemCount, 9999);
  });
});

// ---- CLI

test('CLI: writes a ready file, serves with the given token, exits on SIGTERM', { timeout: 20000 }, async () => {
  const dir = tempDir('fake-apiserver-cli-');
  const p = spawn(process.execPath, [fakeCli, '--dir', dir, '--token', 'cli-token', '--crds', 'gateway,inference', '--port', '0'],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal })));
  try {
    const readyFile = join(dir, 'apiserver.ready');
    await eventually(() => existsSync(readyFile) || p.exitCode !== null, 'the ready file', 10000);
    assert.ok(existsSync(readyFile), stderr);
    const ready = JSON.parse(readFileSync(readyFile, 'utf8'));
    assert.equal(ready.url, `https://127.0.0.1:${ready.port}`);
    assert.equal(ready.token, 'cli-token');
    const api = { port: ready.port, ca: readFileSync(ready.caFile), token: 'cli-token', dir, kubeconfig: ready.kubeconfig };
    const groups = (await ok(api, 'GET', '/apis')).groups.map((g) => g.name);
    assert.ok(groups.includes(gw) && groups.includes('inference.networking.k8s.io'));
    assert.ok(!groups.includes('networking.serving.volcano.sh'));
    assert.match(await kubectlOk(api, ['get', 'crd', '-o', 'name']), /httproutes.gateway.networking.k8s.io/);
  } finally {
    p.kill('SIGTERM');
  }
  assert.deepEqual(await exited, { code: 0, signal: null });
});
