// End to end: the real sluice and sluice-sim binaries on loopback, ports chosen at run time,
// driven by the official `openai` npm client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { Processes, waitForFile } from './helpers.mjs';

const bin = process.env.SLUICE_BIN_DIR;
assert.ok(bin, 'SLUICE_BIN_DIR must point at build/bin');

const dir = mkdtempSync(join(tmpdir(), 'sluice-e2e-'));
const processes = new Processes(bin);
const start = (cmd, args) => processes.start(cmd, args);
let ports;
let client;
let router;



before(async () => {
  const simReady = join(dir, 'sim.ready');
  const sim = start('sluice-sim', ['--replicas', '3', '--address', '127.0.0.1', '--port', '0',
    '--model', 'sim-llama', '--ready-file', simReady, '--step-overhead-ms', '2']);
  const endpoints = (await waitForFile(simReady, sim)).trim().split('\n');
  const config = join(dir, 'sluice.yaml');
  writeFileSync(config, [
    'listener: {address: 127.0.0.1, port: 0}',
    'admin: {address: 127.0.0.1, port: 0}',
    'metrics: {address: 127.0.0.1, port: 0}',
    'workers: 2',
    `access_log: {path: ${join(dir, 'access.log')}}`,
    'models:',
    '  - name: llama',
    '    upstream_model: sim-llama',
    `    endpoints: [${endpoints.join(', ')}]`,
  ].join('\n'));
  const routerReady = join(dir, 'router.ready');
  router = start('sluice', ['serve', '--config', config, '--ready-file', routerReady]);
  ports = JSON.parse(await waitForFile(routerReady, router));
  client = new OpenAI({ apiKey: 'unused', baseURL: `http://127.0.0.1:${ports.listener}/v1`, maxRetries: 0 });
});

after(async () => {
  await processes.stopAll();
  rmSync(dir, { recursive: true, force: true });
});

test('chat completion, not streamed', async () => {
  const r = await client.chat.completions.create({
    model: 'llama', messages: [{ role: 'user', content: 'Say hello' }], max_tokens: 4,
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.content, 'tok0 tok1 tok2 tok3 ');
  assert.equal(r.usage.completion_tokens, 4);
});

test('chat completion, streamed, usage hidden unless asked', async () => {
  const stream = await client.chat.completions.create({
    model: 'llama', messages: [{ role: 'user', content: 'Stream please' }], max_tokens: 5, stream: true,
  });
  let text = '';
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.ok(!chunk.usage, 'the router hides the usage chunk it asked for');
    text += chunk.choices[0]?.delta?.content ?? '';
  }
  assert.equal(chunks, 5);
  assert.equal(text, 'tok0 tok1 tok2 tok3 tok4 ');

  const withUsage = await client.chat.completions.create({
    model: 'llama', messages: [{ role: 'user', content: 'x' }], max_tokens: 2, stream: true,
    stream_options: { include_usage: true },
  });
  let usage;
  for await (const chunk of withUsage) usage = chunk.usage ?? usage;
  assert.equal(usage.completion_tokens, 2);
});

test('completions', async () => {
  const r = await client.completions.create({ model: 'llama', prompt: 'Once upon a time', max_tokens: 3 });
  assert.equal(r.choices[0].text, 'tok0 tok1 tok2 ');
});

test('model listing', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, ['llama']);
});

test('unknown model is an OpenAI NotFoundError', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-nope', messages: [{ role: 'user', content: 'x' }] }),
    (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError);
      assert.equal(err.status, 404);
      assert.equal(err.code, 'model_not_found');
      return true;
    });
});

test('metrics and access log record the traffic', async () => {
  const metrics = await (await fetch(`http://127.0.0.1:${ports.metrics}/metrics`)).text();
  assert.match(metrics, /sluice_requests_total\{model="llama",code="200"\} \d+/);
  assert.match(metrics, /sluice_time_to_first_token_seconds_count\{model="llama"\} [1-9]/);
  const ready = await fetch(`http://127.0.0.1:${ports.admin}/readyz`);
  assert.equal(ready.status, 200);
});

test('SIGTERM drains: an in-flight stream finishes, then the router exits 0', async () => {
  const stream = await client.chat.completions.create({
    model: 'llama', messages: [{ role: 'user', content: 'long answer' }], max_tokens: 150, stream: true,
  });
  const exited = new Promise((resolve) => router.on('exit', (code, signal) => resolve({ code, signal })));
  let chunks = 0;
  for await (const chunk of stream) {
    if (chunks++ === 0) router.kill('SIGTERM');
    assert.ok(chunk.choices.length > 0);
  }
  assert.equal(chunks, 150);
  const { code, signal } = await exited;
  assert.equal(signal, null);
  assert.equal(code, 0);
});
