// End to end: a global rate limit shared by two router processes through a real redis-server,
// all started here on free loopback ports.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import OpenAI from 'openai';
import { Processes, waitForFile, freePort } from './helpers.mjs';

const bin = process.env.SLUICE_BIN_DIR;
assert.ok(bin, 'SLUICE_BIN_DIR must point at build/bin');
const hasRedis = existsSync('/usr/bin/redis-server');
const dir = mkdtempSync(join(tmpdir(), 'sluice-e2e-redis-'));
const processes = new Processes(bin);
let redis;
const routers = [];

async function listening(port) {
  for (let i = 0; i < 500; i++) {
    const ok = await new Promise((resolve) => {
      const s = connect(port, '127.0.0.1', () => { s.end(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await delay(10);
  }
  throw new Error(`nothing listens on ${port}`);
}

before(async () => {
  if (!hasRedis) return;
  const redisPort = await freePort('127.0.0.1');
  redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no'], { stdio: 'ignore' });
  await listening(redisPort);
  const simReady = join(dir, 'sim.ready');
  const sim = processes.start('sluice-sim', ['--replicas', '1', '--address', '127.0.0.1', '--port', '0',
    '--model', 'sim-llama', '--ready-file', simReady]);
  const endpoint = (await waitForFile(simReady, sim)).trim();
  for (const name of ['a', 'b']) {
    const config = join(dir, `${name}.yaml`);
    writeFileSync(config, [
      'listener: {address: 127.0.0.1, port: 0}',
      'admin: {address: 127.0.0.1, port: 0}',
      'metrics: {address: 127.0.0.1, port: 0}',
      'workers: 1',
      'access_log: {path: "off"}',
      'rate_limits:',
      `  - {name: fleet, per: [model], requests: 6, unit: hour, global: {redis: "127.0.0.1:${redisPort}", lease: 1, fail: closed}}`,
      'models:',
      `  - {name: llama, upstream_model: sim-llama, endpoints: [${endpoint}]}`,
    ].join('\n'));
    const ready = join(dir, `${name}.ready`);
    const p = processes.start('sluice', ['serve', '--config', config, '--ready-file', ready]);
    routers.push(JSON.parse(await waitForFile(ready, p)).listener);
  }
});

after(async () => {
  await processes.stopAll();
  if (redis) {
    redis.kill('SIGKILL');
    await new Promise((r) => (redis.exitCode !== null ? r() : redis.on('exit', r)));
  }
  rmSync(dir, { recursive: true, force: true });
});

test('two router processes share one global limit exactly', { skip: !hasRedis && 'redis-server missing' }, async () => {
  let ok = 0;
  let limited = 0;
  for (let i = 0; i < 12; i++) {
    const client = new OpenAI({ apiKey: 'x', baseURL: `http://127.0.0.1:${routers[i % 2]}/v1`, maxRetries: 0 });
    try {
      await client.chat.completions.create({ model: 'llama', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 });
      ok++;
    } catch (e) {
      assert.equal(e.status, 429);
      limited++;
    }
  }
  assert.equal(ok, 6);
  assert.equal(limited, 6);
});
