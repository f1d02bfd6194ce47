// Drain under SIGTERM with a deadline shorter than the streams: the real router and simulator.
// A stream still open at `timeouts.drain` ends with an SSE error event naming the shutdown and
// its last chunk; a request still waiting for its first byte gets a 503; the process exits 3.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Processes, waitForFile } from './helpers.mjs';

const bin = process.env.SLUICE_BIN_DIR;
assert.ok(bin, 'SLUICE_BIN_DIR must point at build/bin');
const dir = mkdtempSync(join(tmpdir(), 'sluice-drain-'));
const processes = new Processes(bin);

after(async () => {
  await processes.stopAll();
  rmSync(dir, { recursive: true, force: true });
});

test('the drain deadline ends open streams with an error event and exits 3', async () => {
  // 50 ms per step: a 400-token stream takes 20 s, far beyond the 500 ms drain deadline.
  const simReady = join(dir, 'sim.ready');
  const sim = processes.start('sluice-sim', ['--replicas', '1', '--address', '127.0.0.1', '--port', '0',
    '--model', 'm', '--step-overhead-ms', '50', '--ready-file', simReady]);
  const [endpoint] = (await waitForFile(simReady, sim)).trim().split('\n');
  const config = join(dir, 'sluice.yaml');
  writeFileSync(config, [
    'listener: {address: 127.0.0.1, port: 0}',
    'admin: {address: 127.0.0.1, port: 0}',
    'metrics: {address: 127.0.0.1, port: 0}',
    'workers: 1',
    'timeouts: {drain: 500ms}',
    'models:',
    `  - {name: m, endpoints: [${endpoint}]}`,
  ].join('\n'));
  const ready = join(dir, 'router.ready');
  const router = processes.start('sluice', ['serve', '--config', config, '--ready-file', ready]);
  const ports = JSON.parse(await waitForFile(ready, router));
  const exited = new Promise((resolve) => router.on('exit', (code, signal) => resolve({ code, signal })));

  const response = await fetch(`http://127.0.0.1:${ports.listener}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x' }], max_tokens: 400, stream: true }),
  });
  assert.equal(response.status, 200);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  let signalled = false;
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;  // the stream's end: the last chunk arrived (fetch errors on a cut body)
    text += decoder.decode(value, { stream: true });
    if (!signalled && text.includes('tok1')) {
      router.kill('SIGTERM');
      signalled = true;
    }
  }
  assert.ok(signalled, 'the stream started');
  assert.ok(!text.includes('[DONE]'), 'the stream was cut before its end');
  assert.match(text, /event: error\ndata: \{"error":\{"message":"the router is shutting down: the stream was cut at the drain deadline"/);
  const { code, signal } = await exited;
  assert.equal(signal, null);
  assert.equal(code, 3, 'the exit status says the drain was cut short');
  assert.match(router.stderrText(), /drain deadline reached: 1 request\(s\) and stream\(s\) cut/);
});
