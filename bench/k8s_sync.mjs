// Kubernetes source at scale, against the test API server: the initial sync of N HTTPRoutes,
// M InferencePools and P Pods to a ready router, the router's memory, and how fast Pod
// readiness changes reach the routing snapshot (watch event -> published snapshot, measured by
// the router's own "rebuilt in" log lines plus the debounce), with Pod updates streaming in.
// Usage: node bench/k8s_sync.mjs [routes=10000] [pools=1000] [pods=20000] [flips=50]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { startFakeApiServer } from '../test/fakes/apiserver.mjs';
import { freePort } from '../test/e2e/helpers.mjs';

const [routes = 10000, pools = 1000, pods = 20000, flips = 50] = process.argv.slice(2).map(Number);
const bin = process.env.SLUICE_BIN_DIR || 'build/bin';
const dir = mkdtempSync(join(tmpdir(), 'sluice-k8s-bench-'));
const gwPort = await freePort('127.0.0.1');
const children = [];
process.on('exit', () => children.forEach((c) => c.kill('SIGKILL')));  // even when a step throws
const api = await startFakeApiServer({ dir, crds: 'all', bookmarkIntervalMs: 60000 });

const podIp = (i) => `127.${1 + Math.floor(i / 65025) % 200}.${Math.floor(i / 255) % 255}.${1 + (i % 254)}`;
const pod = (i, ready) => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name: `pod-${i}`, namespace: 'default', labels: { pool: `p${i % pools}` } },
  spec: { containers: [{ name: 'engine', image: 'vllm' }] },
  status: { podIP: podIp(i), phase: 'Running', conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
});
const objects = [
  { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GatewayClass', metadata: { name: 'sluice' },
    spec: { controllerName: 'sluice.dev/gateway-controller' } },
  { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: 'gw', namespace: 'default' },
    spec: { gatewayClassName: 'sluice', listeners: [{ name: 'http', port: gwPort, protocol: 'HTTP' }] } },
];
for (let i = 0; i < pools; i++) {
  objects.push({ apiVersion: 'inference.networking.k8s.io/v1', kind: 'InferencePool',
    metadata: { name: `p${i}`, namespace: 'default' },
    spec: { selector: { matchLabels: { pool: `p${i}` } }, targetPorts: [{ number: 8000 }] } });
}
for (let i = 0; i < routes; i++) {
  objects.push({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute',
    metadata: { name: `r${i}`, namespace: 'default' },
    spec: { parentRefs: [{ name: 'gw' }], rules: [{
      matches: [{ path: { type: 'PathPrefix', value: `/r${i}/` } }],
      backendRefs: [{ group: 'inference.networking.k8s.io', kind: 'InferencePool', name: `p${i % pools}` }] }] } });
}
for (let i = 0; i < pods; i++) objects.push(pod(i, true));
let t = performance.now();
api.bulkLoad(objects);
console.log(`loaded ${objects.length} objects into the test API server in ${(performance.now() - t).toFixed(0)} ms`);

const config = join(dir, 'sluice.yaml');
// No status writes (10,000 patches at the client QPS would measure the QPS limit) and no
// scraping of 20,000 addresses where nothing listens: this measures the source and the rebuild.
writeFileSync(config, 'kubernetes: {write_status: false, debounce: 20ms, qps: 1000, burst: 1000}\n' +
  'metrics_fetcher: {enabled: false}\naccess_log: {path: off}\n');
const ready = join(dir, 'router.ready');
t = performance.now();
const router = spawn(join(bin, 'sluice'), ['serve', '--kubeconfig', api.kubeconfig, '--config', config,
  '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--metrics', '127.0.0.1:0', '--workers', '1',
  '--ready-file', ready], { stdio: ['ignore', 'ignore', 'pipe'] });
children.push(router);
let log = '';
router.stderr.on('data', (d) => { log += d; });
while (!existsSync(ready)) await delay(5);
const ports = JSON.parse(readFileSync(ready, 'utf8'));
for (;;) {
  const r = await fetch(`http://127.0.0.1:${ports.admin}/readyz`).catch(() => null);
  if (r && r.status === 200) break;
  await delay(5);
}
const syncMs = performance.now() - t;
const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${router.pid}/status`, 'utf8'))[1]) / 1024;
console.log(`initial sync to ready: ${syncMs.toFixed(0)} ms (target < 5000); router RSS ${rss.toFixed(0)} MiB`);

if (process.env.PERF_PID_FILE) writeFileSync(process.env.PERF_PID_FILE, String(router.pid));
if (process.env.FLIP_PAUSE_MS) await delay(Number(process.env.FLIP_PAUSE_MS));
// Pod readiness flips, one at a time, each measured by the rebuild it causes.
const rebuilds = () => [...log.matchAll(/(?:rebuilt|changed) in ([\d.]+) ms/g)].map((m) => Number(m[1]));
const samples = [];
for (let k = 0; k < flips; k++) {
  const before = rebuilds().length;
  const sent = performance.now();
  api.put(pod(Math.floor(k / 2), k % 2 === 1));  // down, then up again: every put a change
  const deadline = performance.now() + 30000;
  while (rebuilds().length === before) {
    if (performance.now() > deadline) throw new Error(`no rebuild after a Pod update:\n${log.slice(-3000)}`);
    await delay(1);
  }
  samples.push(performance.now() - sent);
}
samples.sort((a, b) => a - b);
const q = (p) => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))];
console.log(`pod readiness change -> new snapshot (${flips} flips): p50 ${q(0.5).toFixed(1)} ms, p99 ${q(0.99).toFixed(1)} ms, max ${samples.at(-1).toFixed(1)} ms (target p99 < 100)`);
const r = rebuilds();
console.log(`rebuild alone: last ${r.at(-1)} ms`);
if (process.env.DIAG) console.log(log.split('\n').filter((l) => /changed in|rebuilt in/.test(l)).slice(0, 8).join('\n'));

// Churn under load: three simulated engines behind their own pool and route take requests
// from 8 loops while 1,000 Pod updates stream in (readiness flips of other pools' Pods, and
// annotation changes of the serving Pods); every request must succeed.
const simPort = await freePort('127.0.0.11');
const sim = spawn(join(bin, 'sluice-sim'), ['--replicas', '3', '--address', '127.0.0.11', '--port',
  String(simPort), '--model', 'sim'], { stdio: 'ignore' });
children.push(sim);
const livePod = (i, n) => ({ apiVersion: 'v1', kind: 'Pod',
  metadata: { name: `live-${i}`, namespace: 'default', labels: { pool: 'live' }, annotations: { rev: String(n) } },
  spec: { containers: [{ name: 'engine', image: 'vllm' }] },
  status: { podIP: `127.0.0.${11 + i}`, phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] } });
for (let i = 0; i < 3; i++) api.put(livePod(i, 0));
api.put({ apiVersion: 'inference.networking.k8s.io/v1', kind: 'InferencePool', metadata: { name: 'live', namespace: 'default' },
  spec: { selector: { matchLabels: { pool: 'live' } }, targetPorts: [{ number: simPort }] } });
api.put({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'live', namespace: 'default' },
  spec: { parentRefs: [{ name: 'gw' }], rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/v1' } }],
    backendRefs: [{ group: 'inference.networking.k8s.io', kind: 'InferencePool', name: 'live' }] }] } });
const url = `http://127.0.0.1:${gwPort}/v1/chat/completions`;
const body = JSON.stringify({ model: 'sim', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 });
const send = () => fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json' } })
  .then(async (r) => {
    const text = await r.text();
    if (r.status !== 200 && !globalThis.firstFailure) globalThis.firstFailure = `${r.status} ${text}`;
    return r.status;
  }).catch((e) => { globalThis.firstFailure ||= String(e); return 0; });
for (let i = 0; i < 2000 && (await send()) !== 200; i++) await delay(10);
let ok = 0, failed = 0, churning = true;
const statuses = {};
const loop = async () => {
  while (churning) {
    const st = await send();
    st === 200 ? ok++ : failed++;
    statuses[st] = (statuses[st] || 0) + 1;
  }
};
const loops = Array.from({ length: 8 }, loop);
t = performance.now();
for (let n = 0; n < 1000; n++) {
  api.put(n % 4 === 0 ? livePod(n % 3, n) : pod(1000 + (n % 500), n % 2 === 1));
  await delay(2);
}
await delay(1000);
churning = false;
await Promise.all(loops);
console.log(`1,000 Pod updates in ${((performance.now() - t) / 1000).toFixed(1)} s under load: ${ok} requests ok, ${failed} failed (target 0), ${rebuilds().length} rebuilds; statuses ${JSON.stringify(statuses)}${failed ? `; first failure: ${globalThis.firstFailure}` : ''}`);
if (process.env.DIAG) {
  const after = [];
  for (let i = 0; i < 10; i++) after.push(await send());
  console.log('after churn:', after.join(' '));
  const st = await (await fetch(`http://127.0.0.1:${ports.admin}/debug/status`)).text();
  console.log(st.split('},{').filter((x) => x.includes('live')).join('\n'));
}
sim.kill('SIGTERM');
router.kill('SIGTERM');
await new Promise((res) => router.on('exit', res));
api.close();
