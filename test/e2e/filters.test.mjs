// End to end: the real sluice binary with API keys, a token limit and flow control, driven by
// the official `openai` client against real sluice-sim engines.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import OpenAI from 'openai';
import { Processes, waitForFile } from './helpers.mjs';

const bin = process.env.SLUICE_BIN_DIR;
assert.ok(bin, 'SLUICE_BIN_DIR must point at build/bin');
const dir = mkdtempSync(join(tmpdir(), 'sluice-e2e-filters-'));
const processes = new Processes(bin);
const start = (cmd, args) => processes.start(cmd, args);
let base;



const sha = (s) => createHash('sha256').update(s).digest('hex');

before(async () => {
  const simReady = join(dir, 'sim.ready');
  const sim = start('sluice-sim', ['--replicas', '2', '--address', '127.0.0.1', '--port', '0',
    '--model', 'sim-llama', '--ready-file', simReady, '--step-overhead-ms', '2']);
  const endpoints = (await waitForFile(simReady, sim)).trim().split('\n');
  const config = join(dir, 'sluice.yaml');
  writeFileSync(config, [
    'listener: {address: 127.0.0.1, port: 0}',
    'admin: {address: 127.0.0.1, port: 0}',
    'metrics: {address: 127.0.0.1, port: 0}',
    'workers: 2',
    `access_log: {path: ${join(dir, 'access.log')}}`,
    'auth:',
    '  mode: required',
    '  api_keys:',
    `    - {id: alice, key_sha256: ${sha('sk-alice')}, models: [llama]}`,
    `    - {id: bob, key_sha256: ${sha('sk-bob')}, limits: {total_tokens: 300, unit: hour}}`,
    'flow_control: {max_in_flight_per_endpoint: 64}',
    'models:',
    '  - name: llama',
    '    upstream_model: sim-llama',
    `    endpoints: [${endpoints.join(', ')}]`,
    '  - name: other',
    '    upstream_model: sim-llama',
    `    endpoints: [${endpoints.join(', ')}]`,
  ].join('\n'));
  const routerReady = join(dir, 'router.ready');
  const router = start('sluice', ['serve', '--config', config, '--ready-file', routerReady]);
  const ports = JSON.parse(await waitForFile(routerReady, router));
  base = `http://127.0.0.1:${ports.listener}/v1`;
});

after(async () => {
  await processes.stopAll();
  rmSync(dir, { recursive: true, force: true });
});

const ask = (key, model = 'llama', max_tokens = 4) => new OpenAI({ apiKey: key, baseURL: base, maxRetries: 0 })
  .chat.completions.create({ model, messages: [{ role: 'user', content: 'hello' }], max_tokens });

test('a valid key is served; a wrong key gets 401; a model outside the key gets 403', async () => {
  const r = await ask('sk-alice');
  assert.equal(r.model, 'llama');
  await assert.rejects(ask('sk-mallory'), (e) => e.status === 401 && e.code === 'invalid_api_key');
  await assert.rejects(ask('sk-alice', 'other'), (e) => e.status === 403 && e.code === 'model_not_allowed');
});

test('a token budget runs out with 429 and Retry-After', async () => {
  // 300 tokens per hour: a few small requests pass, then the budget is gone.
  let refused;
  for (let i = 0; i < 20 && !refused; i++) {
    try {
      await ask('sk-bob', 'llama', 40);
    } catch (e) {
      refused = e;
    }
  }
  assert.ok(refused, 'the budget never ran out');
  assert.equal(refused.status, 429);
  const h = refused.headers;
  const retryAfter = typeof h?.get === 'function' ? h.get('retry-after') : h?.['retry-after'];
  assert.ok(Number(retryAfter) >= 1, `Retry-After: ${retryAfter}`);
});

test('the access log names identities by hash, never by key', async () => {
  await ask('sk-alice');
  // The flusher writes records in batches: poll (bounded) until they are there.
  let log = '';
  for (let i = 0; i < 250 && !log.includes('"identity"'); i++) {
    await delay(20);
    log = readFileSync(join(dir, 'access.log'), 'utf8');
  }
  assert.ok(!log.includes('sk-alice') && !log.includes('sk-bob'));
  assert.match(log, /"identity":"[0-9a-f]{12}"/);
});
