// The admin status page (/ui) in Debian's headless Chromium, driven by playwright-core: the
// real router on the quickstart manifests in front of real sluice-sim engines. The page
// renders with no script errors under its own Content-Security-Policy, shows the Gateway's
// conditions and every endpoint, follows an engine's load as it rises and falls, lists the
// requests' traffic and scheduling decisions, adds a reload when a manifest changes, and shows
// hostile strings as text. Screenshots go to SLUICE_UI_SCREENSHOTS (docs/images when run by
// hand) or this run's temporary directory.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { Processes, waitForFile, freePort } from './helpers.mjs';

const bin = process.env.SLUICE_BIN_DIR;
assert.ok(bin, 'SLUICE_BIN_DIR must point at build/bin');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const examples = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'examples');
const dir = mkdtempSync(join(tmpdir(), 'sluice-e2e-ui-'));
const shots = process.env.SLUICE_UI_SCREENSHOTS ?? dir;
const manifests = join(dir, 'manifests');
const processes = new Processes(bin);
let simPort;
let gwPort;
let admin;
let metricsPort;
let browser;
let page;
const problems = [];  // console errors, page errors, dialogs: each one fails the run

const engine = (i) => `127.0.0.1${1 + i}:${simPort}`;
const endpointRow = (address) => `[data-pool="InferencePool/default/llama"] [data-endpoint="${address}"]`;

async function chat(body, signal) {
  return fetch(`http://127.0.0.1:${gwPort}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal,
  });
}

before(async () => {
  assert.ok(existsSync(chromiumPath), `${chromiumPath} is missing: scripts/install-deps.sh installs chromium`);
  simPort = await freePort('127.0.0.11');
  gwPort = await freePort('127.0.0.1');
  const simReady = join(dir, 'sim.ready');
  const sim = processes.start('sluice-sim', ['--replicas', '3', '--address', '127.0.0.11', '--port',
    String(simPort), '--model', 'sim-llama', '--ready-file', simReady, '--step-overhead-ms', '2']);
  await waitForFile(simReady, sim);
  mkdirSync(manifests);
  for (const f of readdirSync(join(examples, 'quickstart'))) {
    const text = readFileSync(join(examples, 'quickstart', f), 'utf8')
      .replace('port: 8080', `port: ${gwPort}`).replace('number: 8000', `number: ${simPort}`);
    writeFileSync(join(manifests, f), text);
  }
  const config = join(dir, 'sluice.yaml');
  writeFileSync(config, ['manifests_debounce: 10ms', 'access_log: {path: off}',
    'metrics_fetcher: {interval: 50ms}', 'scheduler: {decisions: 20}'].join('\n'));
  const routerReady = join(dir, 'router.ready');
  const router = processes.start('sluice', ['serve', '--config', config, '--manifests', manifests,
    '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--metrics', '127.0.0.1:0',
    '--workers', '2', '--ready-file', routerReady]);
  ({ admin, metrics: metricsPort } = JSON.parse(await waitForFile(routerReady, router)));

  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('dialog', async (d) => { problems.push(`dialog: ${d.message()}`); await d.dismiss(); });
  page.on('request', (r) => {
    if (!r.url().startsWith(`http://127.0.0.1:${admin}/`)) problems.push(`request elsewhere: ${r.url()}`);
  });
  await page.goto(`http://127.0.0.1:${admin}/ui?interval=100`);
});

after(async () => {
  await browser?.close();
  await processes.stopAll();
  rmSync(dir, { recursive: true, force: true });
});

test('the page files are served with a policy that allows only themselves', async () => {
  const r = await fetch(`http://127.0.0.1:${admin}/ui`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/html/);
  const csp = r.headers.get('content-security-policy');
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'/);
  assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
  const html = await r.text();
  assert.doesNotMatch(html, /https?:\/\//, 'no external assets');
  for (const path of ['/ui/status.js', '/ui/status.css']) {
    const a = await fetch(`http://127.0.0.1:${admin}${path}`);
    assert.equal(a.status, 200, path);
    assert.doesNotMatch(await a.text(), /https?:\/\//, `${path}: no external assets`);
  }
  assert.equal((await fetch(`http://127.0.0.1:${admin}/ui/nope.js`)).status, 404);
  // The metrics listener serves metrics, not the admin page.
  assert.equal((await fetch(`http://127.0.0.1:${metricsPort}/ui`)).status, 404);
});

test('renders the Gateway with its conditions and every endpoint of the pool', async () => {
  await page.waitForSelector('#live[data-state="ok"]');
  const gw = page.locator('[data-object="Gateway/default/inference"]');
  await gw.locator('.conditions [data-type="Programmed"][data-status="True"]').waitFor();
  await gw.locator('.conditions [data-type="Accepted"][data-status="True"]').waitFor();
  await page.locator('[data-object="HTTPRoute/default/llm"] [data-parent="Gateway/default/inference"]')
    .waitFor();
  for (let i = 0; i < 3; i++) {
    await page.locator(`${endpointRow(engine(i))} [data-field="health"] [data-state="ok"]`).waitFor();
  }
  assert.match(await page.locator('#ready').textContent(), /ready/);
  await page.screenshot({ path: join(shots, 'status-page.png'), fullPage: true });
});

test('follows an engine\'s load as it rises and falls', async () => {
  const running = page.locator(`${endpointRow(engine(0))} [data-field="running"]`);
  await page.waitForFunction((sel) => document.querySelector(sel)?.dataset.value === '0',
    `${endpointRow(engine(0))} [data-field="running"]`);
  // Long generations sent to the first engine directly: its own running count goes up.
  const abort = new AbortController();
  const pending = [1, 2].map(() => fetch(`http://${engine(0)}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, signal: abort.signal,
    body: JSON.stringify({ model: 'sim-llama', messages: [{ role: 'user', content: 'go on' }],
      max_tokens: 20000, stream: true }),
  }).then((r) => r.body.getReader().read()).catch(() => null));
  await Promise.all(pending);  // both are streaming
  await page.waitForFunction((sel) => Number(document.querySelector(sel)?.dataset.value) === 2,
    `${endpointRow(engine(0))} [data-field="running"]`);
  assert.equal(await running.textContent(), '2');
  await page.click('#pause');  // a still page for the picture
  await page.waitForSelector('#live[data-state="warn"]');
  await page.locator(`[data-pool="InferencePool/default/llama"]`)
    .screenshot({ path: join(shots, 'status-pool-busy.png') });
  await page.click('#pause');
  await page.waitForSelector('#live[data-state="ok"]');
  abort.abort();
  await page.waitForFunction((sel) => document.querySelector(sel)?.dataset.value === '0',
    `${endpointRow(engine(0))} [data-field="running"]`);
});

test('shows the router\'s own in-flight count while requests are open', async () => {
  const abort = new AbortController();
  const open = await chat({ model: 'llama', messages: [{ role: 'user', content: 'long' }],
    max_tokens: 20000, stream: true }, abort.signal);
  assert.equal(open.status, 200);
  await open.body.getReader().read();
  await page.waitForFunction(() => [...document.querySelectorAll('[data-pool="InferencePool/default/llama"] [data-field="in_flight"]')]
    .reduce((n, e) => n + Number(e.dataset.value), 0) === 1);
  abort.abort();
  await page.waitForFunction(() => [...document.querySelectorAll('[data-pool="InferencePool/default/llama"] [data-field="in_flight"]')]
    .every((e) => e.dataset.value === '0'));
});

test('lists traffic and scheduling decisions; hostile strings stay text', async () => {
  const hostile = '<img/src=x/onerror=alert(1)>"';  // x-request-id takes no spaces
  for (let i = 0; i < 3; i++) {
    const r = await chat({ model: 'llama', messages: [{ role: 'user', content: `hi ${i}` }], max_tokens: 2 });
    assert.equal(r.status, 200);
  }
  const r = await fetch(`http://127.0.0.1:${gwPort}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': hostile },
    body: JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'x' }], max_tokens: 1 }),
  });
  assert.equal(r.status, 200);
  const series = '[data-backend="InferencePool/default/llama"][data-model="llama"] [data-field="requests"]';
  await page.waitForFunction((sel) => Number(document.querySelector(sel)?.textContent) >= 4, series);
  const decision = page.locator('#decisions tr[data-request]').filter({ hasText: 'onerror' });
  await decision.first().waitFor();
  assert.equal(await decision.first().locator('td').first().textContent(), hostile);
  assert.equal(await page.locator('#decisions img').count(), 0, 'no element made from a request id');
});

test('a manifest change adds a reload; a broken route shows its problem', async () => {
  const before = Number(await page.locator('#reloads tr[data-trigger]').count());
  const text = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: default}
spec:
  parentRefs: [{name: inference}]
  rules: [{backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: missing}]}]
`;
  writeFileSync(join(dir, 'broken.tmp'), text);
  renameSync(join(dir, 'broken.tmp'), join(manifests, 'broken.yaml'));
  const row = page.locator('[data-object="HTTPRoute/default/broken"]');
  await row.locator('[data-type="ResolvedRefs"][data-status="False"]').waitFor();
  const reload = page.locator('#reloads tr[data-trigger="objects"][data-applied="true"]').first();
  await reload.filter({ hasText: 'HTTPRoute/default/broken' }).waitFor();
  assert.ok(await page.locator('#reloads tr[data-trigger]').count() > before);
  assert.deepEqual(problems, []);
  await page.screenshot({ path: join(shots, 'status-page-reload.png'), fullPage: true });
});
