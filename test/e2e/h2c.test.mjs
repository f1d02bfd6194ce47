// End to end over HTTP/2 cleartext: the real sluice binary in front of an InferencePool whose
// appProtocol is kubernetes.io/h2c, the pool's "engine" a Node http2 server (prior knowledge, no
// TLS) that records what it receives. Streams share one connection, large bodies cross in both
// directions under flow control, GOAWAY and refused streams are retried on a fresh connection,
// and a client that leaves gets its upstream stream reset.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import http from 'node:http';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { Processes, freePort, startRouterOnManifests } from './helpers.mjs';

const bin = process.env.SLUICE_BIN_DIR;
assert.ok(bin, 'SLUICE_BIN_DIR must point at build/bin');
const dir = mkdtempSync(join(tmpdir(), 'sluice-e2e-h2c-'));
const processes = new Processes(bin);
let gwPort;
let engine;
const seen = [];            // {headers, body, session}
const postSessions = new Set();
let sessionIds = 0;
let nextBehaviour = [];     // one-shot behaviours for the next chat requests
const closedStreams = [];   // rstCode of streams the router ended early

const METRICS = 'vllm:num_requests_running 0\nvllm:num_requests_waiting 0\nvllm:gpu_cache_usage_perc 0\n';

function answer(stream, headers, body, sessionId) {
  const req = JSON.parse(body.toString() || '{}');
  seen.push({ headers, body, session: sessionId });
  postSessions.add(sessionId);
  const behaviour = nextBehaviour.shift();
  if (behaviour === 'refuse') {
    stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
    return;
  }
  if (behaviour === 'huge-head') {
    stream.respond({ ':status': 200, 'x-a': 'a'.repeat(35000), 'x-b': 'a'.repeat(35000) });
    stream.end('{}');
    return;
  }
  if (req.big_response) {
    const chunk = 'x'.repeat(64 * 1024);
    stream.respond({ ':status': 200, 'content-type': 'text/plain' });
    let left = req.big_response;
    const pump = () => {
      while (left > 0) {
        left -= 1;
        if (!stream.write(chunk)) { stream.once('drain', pump); return; }
      }
      stream.end();
    };
    pump();
    return;
  }
  if (req.stream) {
    stream.respond({ ':status': 200, 'content-type': 'text/event-stream' });
    let i = 0;
    const tick = () => {
      if (stream.destroyed || stream.closed) return;
      if (i < (req.max_tokens || 3)) {
        stream.write(`data: {"id":"c","model":"${req.model}","choices":[{"index":0,"delta":{"content":"t${i} "}}]}\n\n`);
        i += 1;
        setTimeout(tick, req.slow ? 50 : 1);
      } else {
        stream.end('data: [DONE]\n\n');
      }
    };
    tick();
    return;
  }
  const digest = createHash('sha256').update(body).digest('hex');
  const out = JSON.stringify({
    id: 'c', object: 'chat.completion', model: req.model,
    choices: [{ index: 0, message: { role: 'assistant', content: 'hi' } }],
    usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 },
    request_bytes: body.length, request_sha256: digest,
  });
  stream.respond({ ':status': 200, 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
  stream.end(out);
  if (behaviour === 'goaway') stream.session.goaway(http2.constants.NGHTTP2_NO_ERROR);
}

function post(body, { signal, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const r = http.request({ host: '127.0.0.1', port: gwPort, method: 'POST', path: '/v1/chat/completions',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...headers }, signal }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    r.on('error', reject);
    r.end(data);
  });
}

before(async () => {
  engine = http2.createServer({ maxSendHeaderBlockLength: 1 << 20 });
  engine.on('session', (s) => { s.id = ++sessionIds; });
  engine.on('stream', (stream, headers) => {
    const sessionId = stream.session.id;
    stream.on('close', () => { if (stream.rstCode !== 0) closedStreams.push(stream.rstCode); });
    stream.on('error', () => {});  // the refused stream: closed on purpose
    if (headers[':path'] === '/metrics') {
      stream.respond({ ':status': 200, 'content-type': 'text/plain' });
      stream.end(METRICS);
      return;
    }
    if (headers[':path'] === '/v1/models') {
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end('{"object":"list","data":[{"id":"h2-model","object":"model"}]}');
      return;
    }
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => answer(stream, headers, Buffer.concat(chunks), sessionId));
  });
  await new Promise((r) => engine.listen(0, '127.0.0.1', r));
  const enginePort = engine.address().port;
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
kind: Pod
metadata: {name: engine, namespace: default, labels: {app: h2}}
status: {podIP: 127.0.0.1}
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: h2-pool, namespace: default}
spec:
  selector: {matchLabels: {app: h2}}
  targetPorts: [{number: ${enginePort}}]
  appProtocol: kubernetes.io/h2c
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: h2-pool}]
  - matches: [{headers: [{name: x-mirror, value: "yes"}]}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {group: inference.networking.k8s.io, kind: InferencePool, name: h2-pool}}
    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: h2-pool}]
`);
  await startRouterOnManifests(processes, dir, manifests, 'access_log: {path: off}\n', 1);
});

after(async () => {
  await processes.stopAll();
  engine.close();
  rmSync(dir, { recursive: true, force: true });
});

test('requests and streams reach an h2c engine, with HTTP/2 headers', async () => {
  const r = await post({ model: 'h2-model', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(r.status, 200, r.body.toString());
  const json = JSON.parse(r.body);
  assert.equal(json.model, 'h2-model');
  const got = seen.at(-1).headers;
  assert.equal(got[':method'], 'POST');
  assert.equal(got[':scheme'], 'http');
  assert.equal(got[':path'], '/v1/chat/completions');
  assert.match(got[':authority'], /^127\.0\.0\.1:\d+$/);
  assert.ok(got['x-request-id']);
  assert.equal(got['x-forwarded-for'], '127.0.0.1');
  assert.equal(got.connection, undefined);
  assert.equal(Number(got['content-length']), seen.at(-1).body.length);

  const s = await post({ model: 'h2-model', stream: true, max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(s.status, 200);
  assert.equal(s.headers['content-type'], 'text/event-stream');
  const text = s.body.toString();
  assert.equal((text.match(/^data: \{/gm) || []).length, 5);
  assert.match(text, /data: \[DONE\]/);
});

test('concurrent requests share one connection', async () => {
  postSessions.clear();
  const all = await Promise.all(Array.from({ length: 40 }, (_, i) =>
    post({ model: 'h2-model', stream: i % 2 === 0, max_tokens: 4, messages: [{ role: 'user', content: `n${i}` }] })));
  for (const r of all) assert.equal(r.status, 200);
  assert.equal(postSessions.size, 1, `requests came on ${postSessions.size} connections`);
});

test('large bodies cross intact both ways', async () => {
  const prompt = 'p'.repeat(3 * 1024 * 1024);  // over the initial windows several times
  const body = { model: 'h2-model', messages: [{ role: 'user', content: prompt }] };
  const r = await post(body);
  assert.equal(r.status, 200);
  const sent = Buffer.from(JSON.stringify(body));
  const json = JSON.parse(r.body);
  assert.equal(json.request_bytes, sent.length);
  assert.equal(json.request_sha256, createHash('sha256').update(sent).digest('hex'));
  const big = await post({ model: 'h2-model', big_response: 64, messages: [] });  // 4 MiB back
  assert.equal(big.status, 200);
  assert.equal(big.body.length, 64 * 64 * 1024);
});

test('GOAWAY and a refused stream are retried on a fresh connection', async () => {
  const before = sessionIds;
  nextBehaviour = ['goaway'];
  assert.equal((await post({ model: 'h2-model', messages: [] })).status, 200);
  // The connection was told to go away: the next request opens another one and succeeds.
  assert.equal((await post({ model: 'h2-model', messages: [] })).status, 200);
  assert.ok(sessionIds > before);
  nextBehaviour = ['refuse'];
  const r = await post({ model: 'h2-model', messages: [] });
  assert.equal(r.status, 200, r.body.toString());
});

test('a client that leaves mid-stream gets its upstream stream reset', async () => {
  closedStreams.length = 0;
  const controller = new AbortController();
  const pending = post({ model: 'h2-model', stream: true, slow: true, max_tokens: 200, messages: [] },
    { signal: controller.signal }).catch(() => 'aborted');
  await delay(200);
  controller.abort();
  assert.equal(await pending, 'aborted');
  for (let i = 0; i < 100 && closedStreams.length === 0; i++) await delay(20);
  assert.deepEqual(closedStreams, [http2.constants.NGHTTP2_CANCEL]);
});

test('a response head over 64 KB fails that request only', async () => {
  nextBehaviour = ['huge-head'];
  const before = seen.length;
  const r = await post({ model: 'h2-model', messages: [] });
  assert.equal(r.status, 502, r.body.toString());
  assert.equal(seen.length - before, 1, 'a failed stream is not resent');
  assert.match(r.body.toString(), /upstream_unavailable/);
  // The connection and the next request are unaffected.
  assert.equal((await post({ model: 'h2-model', messages: [] })).status, 200);
});

test('a RequestMirror to an h2c pool sends its copy over HTTP/2', async () => {
  const before = seen.length;
  const r = await post({ model: 'h2-model', messages: [{ role: 'user', content: 'mirror me' }] },
    { headers: { 'x-mirror': 'yes' } });
  assert.equal(r.status, 200);
  for (let i = 0; i < 100 && seen.length - before < 2; i++) await delay(20);
  const copies = seen.slice(before);
  assert.equal(copies.length, 2, 'the request and its mirror');
  assert.equal(copies[0].headers['x-request-id'], copies[1].headers['x-request-id']);
  assert.equal(copies[0].body.toString(), copies[1].body.toString());
});
