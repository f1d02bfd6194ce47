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

const metricValue = async (name) => {
  const text = await (await fetch(`http://127.0.0.1:${ports.metrics}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : 0;
};
const eventually = async (check, what) => {
  for (let i = 0; i < 500; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
};

test('the access log stays valid JSON whatever bytes the request path carried', async () => {
  const { connect } = await import('node:net');
  const raw = Buffer.concat([Buffer.from('GET /v1/'), Buffer.from([0xff, 0xc3, 0x28]),
    Buffer.from('"x\\ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n')]);
  await new Promise((resolve, reject) => {
    const sock = connect(ports.listener, '127.0.0.1', () => sock.end(raw));
    sock.on('data', () => {});
    sock.on('close', resolve);
    sock.on('error', reject);
  });
  const log = join(dir, 'access.log');
  await eventually(() => readFileSync(log, 'utf8').includes('\\ufffd'), 'the access log line');
  for (const line of readFileSync(log, 'utf8').trim().split('\n')) {
    const record = JSON.parse(line);  // throws on an invalid line
    assert.ok(record.request_id);
  }
  const record = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).find((r) => r.path.includes('\ufffd'));
  assert.equal(record.path, '/v1/\ufffd\ufffd("x\\');
});

test('SIGHUP: an empty file or one that removes every route is refused; a good one applies', async () => {
  const config = join(dir, 'sluice.yaml');
  const good = readFileSync(config, 'utf8');
  const served = async (model) => (await fetch(`http://127.0.0.1:${ports.listener}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'x' }], max_tokens: 1 }),
  })).status;
  for (const text of ['', '\n  \n', 'listener: {address: 127.0.0.1, port: 0}\nmodels: []\n']) {
    const errors = await metricValue('sluice_config_reload_errors_total');
    writeFileSync(config, text);
    router.kill('SIGHUP');
    await eventually(async () => (await metricValue('sluice_config_reload_errors_total')) === errors + 1,
      `the reload of ${JSON.stringify(text)} to be refused`);
    assert.equal(await served('llama'), 200);
  }
  assert.match(router.stderrText(), /reload of .* refused: the file is empty/);
  assert.match(router.stderrText(), /refused: it names no models and no manifests, so it would remove every route/);
  const reloads = await metricValue('sluice_config_reloads_total');
  writeFileSync(config, good.replace('name: llama', 'name: llama-renamed'));
  router.kill('SIGHUP');
  await eventually(async () => (await metricValue('sluice_config_reloads_total')) === reloads + 1, 'the good reload');
  // Workers take the new generation with their next message: served once it has arrived.
  await eventually(async () => (await served('llama-renamed')) === 200, 'the renamed model served');
  writeFileSync(config, good);
  router.kill('SIGHUP');
  await eventually(async () => (await metricValue('sluice_config_reloads_total')) === reloads + 2, 'the restoring reload');
  // Both workers: ten answers in a row from the restored configuration.
  await eventually(async () => {
    for (let i = 0; i < 10; i++) if ((await served('llama')) !== 200) return false;
    return true;
  }, 'the original configuration back on every worker');
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
