// End to end with both of Sluice's Inference Extension roles chained: `sluice serve` is the
// gateway, and the InferencePool's endpointPickerRef names a Service whose Pod is where
// `sluice epp` (the same manifest directory) listens; in front of real sluice-sim engines,
// driven by the official `openai` client. The picker makes the decisions (its InferenceModelRewrite
// turns the client's "llama" into the engines' "sim-llama", and the client sees "llama" back),
// which its /metrics shows: inference_objective_request_total grows per request, and
// sluice_epp_endpoint_in_flight_requests counts a request until the gateway ends its stream at
// the end of the response.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import OpenAI from 'openai';
import { Processes, waitForFile, freePort } from './helpers.mjs';

const bin = process.env.SLUICE_BIN_DIR;
assert.ok(bin, 'SLUICE_BIN_DIR must point at build/bin');
const dir = mkdtempSync(join(tmpdir(), 'sluice-e2e-epp-chain-'));
const processes = new Processes(bin);
const SIM_IPS = ['127.0.0.61', '127.0.0.62', '127.0.0.63'];
const EPP_IP = '127.0.0.60';
let gwPort;
let simPort;
let eppInfo;       // the picker's ready file: {listener, health, admin, metrics}
let routerInfo;    // the gateway's ready file
let client;

// Polls `fn` until it returns a truthy value (bounded).
async function eventually(fn, what, tries = 500) {
  let last;
  for (let i = 0; i < tries; i++) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) { last = e; }
    await delay(20);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ''}`);
}

function canListen(host, port) {
  return new Promise((resolve) => {
    const s = createServer();
    s.on('error', () => resolve(false));
    s.listen({ port, host, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

// A free port (helpers.freePort's range) on every one of `hosts`.
async function freePortOn(hosts) {
  for (let i = 0; i < 50; i++) {
    const port = await freePort(hosts[0]);
    if ((await Promise.all(hosts.slice(1).map((h) => canListen(h, port)))).every(Boolean)) return port;
  }
  throw new Error(`no port free on all of ${hosts}`);
}

// The samples of a Prometheus text page: [{name, labels, value}].
async function scrape(port) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || line.startsWith('#')) continue;
    const labels = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function sum(samples, name, labels = {}) {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

const requestTotal = async () => sum(await scrape(eppInfo.metrics), 'inference_objective_request_total',
  { model_name: 'llama', target_model_name: 'sim-llama' });
// The picker's in-flight load over the pool's endpoints (one series per endpoint, always).
const inFlight = async () => {
  const series = (await scrape(eppInfo.metrics)).filter((s) => s.name === 'sluice_epp_endpoint_in_flight_requests');
  assert.equal(series.length, 3, `in-flight series: ${JSON.stringify(series)}`);
  return series.reduce((a, s) => a + s.value, 0);
};

before(async () => {
  simPort = await freePortOn(SIM_IPS);
  gwPort = await freePort('127.0.0.1');
  const grpcPort = await freePort(EPP_IP);
  const healthPort = await freePort(EPP_IP);
  const simReady = join(dir, 'sim.ready');
  const sim = processes.start('sluice-sim', ['--replicas', '3', '--address', SIM_IPS[0],
    '--port', String(simPort), '--model', 'sim-llama', '--ready-file', simReady,
    '--step-overhead-ms', '2']);
  await waitForFile(simReady, sim);

  const manifests = join(dir, 'manifests');
  mkdirSync(manifests);
  const pod = (name, ip, app) => `apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: default, labels: {app: ${app}}}
status: {podIP: ${ip}, phase: Running, conditions: [{type: Ready, status: "True"}]}
`;
  writeFileSync(join(manifests, 'all.yaml'), [
    `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: inference, namespace: default}
spec:
  gatewayClassName: sluice
  listeners: [{name: http, port: ${gwPort}, protocol: HTTP}]
`,
    ...SIM_IPS.map((ip, i) => pod(`llama-${i}`, ip, 'llama')),
    pod('llama-epp', EPP_IP, 'llama-epp'),
    `apiVersion: v1
kind: Service
metadata: {name: llama-epp, namespace: default}
spec:
  selector: {app: llama-epp}
  ports: [{name: grpc, port: 9002, targetPort: ${grpcPort}, appProtocol: http2}]
`,
    `apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: llama, namespace: default}
spec:
  selector: {matchLabels: {app: llama}}
  targetPorts: [{number: ${simPort}}]
  endpointPickerRef: {name: llama-epp, port: {number: 9002}, failureMode: FailClose}
`,
    `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: llm, namespace: default}
spec:
  parentRefs: [{name: inference}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: llama}]
`,
    `apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: llama-name, namespace: default}
spec:
  poolRef: {name: llama}
  rules:
  - matches: [{model: {value: llama}}]
    targets: [{modelRewrite: sim-llama}]
`].join('---\n'));

  const eppReady = join(dir, 'epp.ready');
  const epp = processes.start('sluice', ['epp', '--pool-name', 'llama', '--pool-namespace', 'default',
    '--manifests', manifests, '--grpc', `${EPP_IP}:${grpcPort}`, '--health', `${EPP_IP}:${healthPort}`,
    '--metrics', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--workers', '1', '--ready-file', eppReady]);
  eppInfo = JSON.parse(await waitForFile(eppReady, epp));
  assert.equal(eppInfo.listener, grpcPort);
  assert.equal(eppInfo.health, healthPort);
  // Ready once synced, the pool known and the engines scraped.
  await eventually(async () => (await fetch(`http://127.0.0.1:${eppInfo.admin}/readyz`)).status === 200,
    "the picker's readiness");
  await eventually(async () => {
    const eps = (await (await fetch(`http://127.0.0.1:${eppInfo.admin}/debug/endpoints`)).json()).endpoints;
    return eps.filter((e) => e.scraped && e.healthy).length === 3;
  }, 'the picker to scrape the three engines');

  const config = join(dir, 'sluice.yaml');
  writeFileSync(config, 'manifests_debounce: 10ms\naccess_log: {path: off}\n');
  const routerReady = join(dir, 'router.ready');
  const router = processes.start('sluice', ['serve', '--config', config, '--manifests', manifests,
    '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--metrics', '127.0.0.1:0',
    '--workers', '1', '--ready-file', routerReady]);
  routerInfo = JSON.parse(await waitForFile(routerReady, router));
  client = new OpenAI({ apiKey: 'unused', baseURL: `http://127.0.0.1:${gwPort}/v1`, maxRetries: 0 });
  await eventually(async () => {
    const r = await fetch(`http://127.0.0.1:${gwPort}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'warm up' }], max_tokens: 1 }),
    });
    return r.status === 200;
  }, 'the gateway to serve through the picker');
  await eventually(async () => (await inFlight()) === 0, 'the warm-up to complete in the picker');
});

after(async () => {
  await processes.stopAll();
  rmSync(dir, { recursive: true, force: true });
});

test('chat completions through gateway and picker: the rewrite is the picker\'s, "llama" comes back', async () => {
  const before = await requestTotal();
  const n = 12;
  const all = await Promise.all(Array.from({ length: n }, (_, i) => client.chat.completions.create({
    model: 'llama', messages: [{ role: 'user', content: `question ${i}: ${'context '.repeat(20 * i)}` }],
    max_tokens: 3,
  })));
  for (const r of all) {
    assert.equal(r.model, 'llama');
    assert.equal(r.usage.completion_tokens, 3);
    assert.equal(r.choices[0].finish_reason, 'length');
  }
  await eventually(async () => (await requestTotal()) - before >= n, 'the picker to count the requests');
  assert.equal((await requestTotal()) - before, n);
  await eventually(async () => (await inFlight()) === 0, 'the picker to release every request');
});

test('streams through gateway and picker, with usage; the picker holds the load until the end', async () => {
  const before = await requestTotal();
  const stream = await client.chat.completions.create({
    model: 'llama', messages: [{ role: 'user', content: 'stream slowly' }], max_tokens: 120,
    stream: true, stream_options: { include_usage: true },
  });
  let chunks = 0;
  let usage = null;
  let duringStream = null;
  for await (const c of stream) {
    assert.equal(c.model, 'llama');
    if (chunks === 0) duringStream = await inFlight();
    chunks += 1;
    if (c.usage) usage = c.usage;
  }
  assert.equal(duringStream, 1, 'the picker counts the open stream as in flight');
  assert.ok(chunks >= 120, `only ${chunks} chunks`);
  assert.equal(usage?.completion_tokens, 120);
  await eventually(async () => (await inFlight()) === 0, 'the picker to release the stream');
  assert.equal((await requestTotal()) - before, 1);

  // Several at once, streamed and not.
  const before2 = await requestTotal();
  const jobs = Array.from({ length: 8 }, async (_, i) => {
    if (i % 2) {
      const r = await client.chat.completions.create({ model: 'llama', messages: [{ role: 'user', content: `n${i}` }], max_tokens: 2 });
      assert.equal(r.model, 'llama');
      return;
    }
    const s = await client.chat.completions.create({ model: 'llama', messages: [{ role: 'user', content: `s${i}` }], max_tokens: 4, stream: true });
    let k = 0;
    for await (const c of s) { assert.equal(c.model, 'llama'); k += 1; }
    assert.ok(k >= 4);
  });
  await Promise.all(jobs);
  await eventually(async () => (await requestTotal()) - before2 >= 8, 'the picker to count 8 more');
  assert.equal((await requestTotal()) - before2, 8);
  await eventually(async () => (await inFlight()) === 0, 'the picker to release all of them');
});

test('completions through the picker; its view of the pool', async () => {
  const before = await scrape(eppInfo.metrics);
  const rs = await Promise.all(Array.from({ length: 9 }, (_, i) => client.completions.create({
    model: 'llama', prompt: `prompt ${i} `.repeat(30 + i), max_tokens: 2,
  })));
  for (const r of rs) assert.equal(r.model, 'llama');
  const after = await eventually(async () => {
    const s = await scrape(eppInfo.metrics);
    return sum(s, 'inference_objective_request_total', { model_name: 'llama' })
      - sum(before, 'inference_objective_request_total', { model_name: 'llama' }) >= 9 && s;
  }, 'the picker to count the completions');
  assert.equal(sum(after, 'inference_objective_request_total', { model_name: 'llama', target_model_name: 'sim-llama' })
    - sum(before, 'inference_objective_request_total', { model_name: 'llama', target_model_name: 'sim-llama' }), 9);
  // The picker's view of the pool: three ready pods.
  assert.equal(sum(after, 'inference_pool_ready_pods'), 3);
  await eventually(async () => (await inFlight()) === 0, 'the picker to release the completions');
});

test('an unknown model is the engines\' 404, through the picker', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }], max_tokens: 1 }),
    (e) => e.status === 404);
  await eventually(async () => (await inFlight()) === 0, 'the picker to release the refused request');
});
