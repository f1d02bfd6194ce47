// End to end through an ExternalModelProvider: the official `openai` client talks to the real
// sluice binary, which reaches a stand-in for a public API over TLS (a Node https server with a
// certificate made by `openssl` at run time and trusted through upstream.ca_file) and an
// in-cluster sluice-sim engine, split by a ModelRoute's weights. The provider sees its own key
// and model, never the client's key; the client sees its model name in every answer.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { Processes, waitForFile, freePort, startRouterOnManifests } from './helpers.mjs';

const bin = process.env.SLUICE_BIN_DIR;
assert.ok(bin, 'SLUICE_BIN_DIR must point at build/bin');
const dir = mkdtempSync(join(tmpdir(), 'sluice-e2e-providers-'));
const processes = new Processes(bin);
let gwPort;
let provider;
const received = [];

function answer(req, res, body) {
  received.push({ path: req.url, headers: req.headers, body });
  const r = JSON.parse(body);
  if (r.stream) {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write(`data: {"id":"p","object":"chat.completion.chunk","model":"${r.model}","choices":[{"index":0,"delta":{"content":"from the cloud"},"finish_reason":null}]}\n\n`);
    res.write(`data: {"id":"p","object":"chat.completion.chunk","model":"${r.model}","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}\n\n`);
    res.end('data: [DONE]\n\n');
    return;
  }
  const out = JSON.stringify({ id: 'p', object: 'chat.completion', created: 0, model: r.model,
    choices: [{ index: 0, message: { role: 'assistant', content: 'from the cloud' }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 } });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
  res.end(out);
}

before(async () => {
  // A certificate for "localhost", made now.
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost'], { encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
  provider = https.createServer({ key: readFileSync(key), cert: readFileSync(cert) }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => answer(req, res, Buffer.concat(chunks).toString()));
  });
  await new Promise((r) => provider.listen(0, '127.0.0.1', r));
  const simReady = join(dir, 'sim.ready');
  const sim = processes.start('sluice-sim', ['--replicas', '1', '--address', '127.0.0.1', '--port', '0',
    '--model', 'local-llama', '--ready-file', simReady, '--step-overhead-ms', '2']);
  const simPort = (await waitForFile(simReady, sim)).trim().split('\n')[0].split(':')[1];
  gwPort = await freePort('127.0.0.1');
  const manifests = join(dir, 'manifests');
  mkdirSync(manifests);
  writeFileSync(join(manifests, 'all.yaml'), `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: sluice
  listeners: [{name: http, port: ${gwPort}, protocol: HTTP}]
---
apiVersion: v1
kind: Secret
metadata: {name: cloud-key, namespace: default}
stringData: {api-key: sk-provider-secret}
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ExternalModelProvider
metadata: {name: cloud, namespace: default}
spec:
  baseURL: https://localhost:${provider.address().port}/v1
  model: cloud-model
  auth: {scheme: Bearer, secretRef: {name: cloud-key, key: api-key}}
---
apiVersion: v1
kind: Pod
metadata: {name: engine, namespace: default, labels: {app: local}}
status: {podIP: 127.0.0.1}
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelServer
metadata: {name: local, namespace: default}
spec:
  model: local-llama
  inferenceEngine: vLLM
  workloadSelector: {matchLabels: {app: local}}
  workloadPort: {port: ${simPort}}
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelRoute
metadata: {name: assistant, namespace: default}
spec:
  modelName: assistant
  rules:
  - targetModels:
    - {modelServerName: local, weight: 50}
    - {externalModelProviderName: cloud, weight: 50}
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelRoute
metadata: {name: cloud-only, namespace: default}
spec:
  modelName: cloud-only
  rules: [{targetModels: [{externalModelProviderName: cloud}]}]
`);
  await startRouterOnManifests(processes, dir, manifests, `access_log: {path: off}\nupstream: {ca_file: ${cert}}\n`, 2);
});

after(async () => {
  await processes.stopAll();
  provider.close();
  rmSync(dir, { recursive: true, force: true });
});

test('the OpenAI client reaches a provider over TLS with the provider key and model', async () => {
  const client = new OpenAI({ apiKey: 'sk-client-key', baseURL: `http://127.0.0.1:${gwPort}/v1`, maxRetries: 0 });
  const r = await client.chat.completions.create({ model: 'cloud-only', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(r.model, 'cloud-only');
  assert.equal(r.choices[0].message.content, 'from the cloud');
  const got = received.at(-1);
  assert.equal(got.path, '/v1/chat/completions');
  assert.equal(got.headers.authorization, 'Bearer sk-provider-secret');
  assert.equal(JSON.parse(got.body).model, 'cloud-model');
  assert.ok(!JSON.stringify(got.headers).includes('sk-client-key'));

  const stream = await client.chat.completions.create({ model: 'cloud-only', stream: true,
    messages: [{ role: 'user', content: 'hi' }] });
  let text = '';
  for await (const chunk of stream) {
    assert.equal(chunk.model, 'cloud-only');
    assert.equal(chunk.usage, undefined);  // the router asked for usage; the client did not
    text += chunk.choices[0]?.delta?.content ?? '';
  }
  assert.equal(text, 'from the cloud');
});

test('a ModelRoute splits between the in-cluster engine and the provider', async () => {
  const client = new OpenAI({ apiKey: 'unused', baseURL: `http://127.0.0.1:${gwPort}/v1`, maxRetries: 0 });
  const before = received.length;
  let local = 0;
  for (let i = 0; i < 30; i++) {
    const r = await client.chat.completions.create({ model: 'assistant', max_tokens: 3,
      messages: [{ role: 'user', content: `q${i}` }] });
    assert.equal(r.model, 'assistant');
    if (r.choices[0].message.content !== 'from the cloud') local++;
  }
  const cloud = received.length - before;
  assert.equal(local + cloud, 30);
  assert.ok(local > 0 && cloud > 0, `local ${local}, cloud ${cloud}`);
});
