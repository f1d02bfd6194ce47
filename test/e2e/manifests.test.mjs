// End to end on manifests: the real sluice binary started on a manifest directory (the
// quickstart example with ports chosen at run time) in front of real sluice-sim engines on
// their own loopback addresses, driven by the official `openai` client; every example
// directory validates; a directory change opens a new Gateway listener.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, readdirSync, rmSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import OpenAI from 'openai';
import { Processes, waitForFile, freePort } from './helpers.mjs';

const bin = process.env.SLUICE_BIN_DIR;
assert.ok(bin, 'SLUICE_BIN_DIR must point at build/bin');
const examples = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'examples');
const dir = mkdtempSync(join(tmpdir(), 'sluice-e2e-manifests-'));
const manifests = join(dir, 'manifests');
const processes = new Processes(bin);
const start = (cmd, args) => processes.start(cmd, args);
let gwPort;
let admin;




// Polls `fn` until it returns true (bounded): for changes applied by the file watcher.
async function eventually(fn, what) {
  for (let i = 0; i < 500; i++) {
    try { if (await fn()) return; } catch { /* not yet */ }
    await delay(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

before(async () => {
  const simPort = await freePort('127.0.0.11');
  gwPort = await freePort('127.0.0.1');
  const simReady = join(dir, 'sim.ready');
  const sim = start('sluice-sim', ['--replicas', '3', '--address', '127.0.0.11', '--port', String(simPort),
    '--model', 'sim-llama', '--ready-file', simReady, '--step-overhead-ms', '2']);
  await waitForFile(simReady, sim);
  // The quickstart, with this run's ports.
  spawnSync('mkdir', ['-p', manifests]);
  for (const f of readdirSync(join(examples, 'quickstart'))) {
    const text = readFileSync(join(examples, 'quickstart', f), 'utf8')
      .replace('port: 8080', `port: ${gwPort}`).replace('number: 8000', `number: ${simPort}`);
    writeFileSync(join(manifests, f), text);
  }
  const config = join(dir, 'sluice.yaml');
  writeFileSync(config, 'manifests_debounce: 10ms\naccess_log: {path: off}\n');
  const routerReady = join(dir, 'router.ready');
  const router = start('sluice', ['serve', '--config', config, '--manifests', manifests,
    '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--metrics', '127.0.0.1:0',
    '--workers', '2', '--ready-file', routerReady]);
  admin = JSON.parse(await waitForFile(routerReady, router)).admin;
});

after(async () => {
  await processes.stopAll();
  rmSync(dir, { recursive: true, force: true });
});

test('quickstart: HTTPRoute to an InferencePool, model rewritten and written back', async () => {
  const client = new OpenAI({ apiKey: 'unused', baseURL: `http://127.0.0.1:${gwPort}/v1`, maxRetries: 0 });
  const r = await client.chat.completions.create({
    model: 'llama', messages: [{ role: 'user', content: 'Say hello' }], max_tokens: 4,
  });
  assert.equal(r.model, 'llama');
  assert.equal(r.usage.completion_tokens, 4);
  const stream = await client.chat.completions.create({
    model: 'llama', messages: [{ role: 'user', content: 'Stream' }], max_tokens: 3, stream: true,
  });
  let chunks = 0;
  for await (const c of stream) { assert.equal(c.model, 'llama'); chunks++; }
  assert.ok(chunks >= 3);
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ['llama']);
  await assert.rejects(client.chat.completions.create({ model: 'nope', messages: [] }),
    (e) => e.status === 404);
});

test('status is served on the admin listener', async () => {
  const r = await fetch(`http://127.0.0.1:${admin}/debug/status`);
  const status = await r.json();
  const pool = status.objects.find((o) => o.object === 'InferencePool/default/llama');
  assert.ok(pool);
  assert.equal(pool.parents[0].parentRef, 'Gateway/default/inference');
  assert.ok(pool.conditions.some((c) => c.type === 'Ready' && c.status === 'True'));
});

test('a new Gateway in the directory opens its listener', async () => {
  const port = await freePort('127.0.0.1');
  const text = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: second, namespace: default}
spec:
  gatewayClassName: sluice
  listeners: [{name: http, port: ${port}, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: second, namespace: default}
spec:
  parentRefs: [{name: second}]
  rules: [{backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: llama}]}]
`;
  writeFileSync(join(dir, 'second.tmp'), text);
  renameSync(join(dir, 'second.tmp'), join(manifests, 'second.yaml'));
  await eventually(async () => {
    const r = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }),
    });
    return r.status === 200 && (await r.json()).model === 'llama';
  }, 'the second Gateway to serve');
});

test('100 rewrites of the directory under load fail no request', async () => {
  const version = async () => (await (await fetch(`http://127.0.0.1:${admin}/debug/config`)).json()).version;
  const gateway = readFileSync(join(manifests, 'gateway.yaml'), 'utf8');
  let stop = false;
  let ok = 0;
  const failures = [];
  const client = new OpenAI({ apiKey: 'unused', baseURL: `http://127.0.0.1:${gwPort}/v1`, maxRetries: 0 });
  const worker = async () => {
    while (!stop) {
      try {
        const r = await client.chat.completions.create({
          model: 'llama', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2,
        });
        if (r.model === 'llama') ok++; else failures.push(`model ${r.model}`);
      } catch (e) {
        failures.push(String(e));
      }
    }
  };
  const workers = [worker(), worker(), worker(), worker()];
  for (let i = 0; i < 100; i++) {
    const before = await version();
    // Alternate the alias weights and the objective priority: a real change each time.
    const text = gateway.replace('priority: 10', `priority: ${i}`);
    writeFileSync(join(dir, 'gw.tmp'), text);
    renameSync(join(dir, 'gw.tmp'), join(manifests, 'gateway.yaml'));
    await eventually(async () => (await version()) > before, `rewrite ${i} to apply`);
  }
  stop = true;
  await Promise.all(workers);
  assert.deepEqual(failures, []);
  assert.ok(ok > 100, `only ${ok} requests completed`);
});

test('every example directory validates; a broken one does not', () => {
  for (const name of readdirSync(examples)) {
    if (name === 'router-config') continue;
    const r = spawnSync(join(bin, 'sluice'), ['validate', '--manifests', join(examples, name)], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${name}: ${r.stdout}${r.stderr}`);
  }
  const broken = join(dir, 'broken');
  spawnSync('mkdir', ['-p', broken]);
  writeFileSync(join(broken, 'route.yaml'), `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: svc, port: 80, weight: 5000000}]}]
`);
  const r = spawnSync(join(bin, 'sluice'), ['validate', '--manifests', broken], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stdout, /spec\.rules\[0\]\.backendRefs\[0\]\.weight: must be 0\.\.1000000/);
});
