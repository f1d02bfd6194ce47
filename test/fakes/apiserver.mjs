// A test Kubernetes API server: the real REST protocol (discovery, typed paths, list/watch,
// create/update/patch/delete, status subresources, CRDs) over HTTPS with bearer tokens, backed
// by an in-memory store, with fault injection for client tests. Node 20, no dependencies.
//
// As a module:
//   import { startFakeApiServer } from '../fakes/apiserver.mjs';
//   const api = await startFakeApiServer({ dir, token, crds: 'all' });
//
// Options (all optional):
//   dir                 where certificates and kubeconfigs go (default: a new temp directory,
//                       removed by close())
//   token               the bearer token accepted (default: random)
//   crds                'all' (default), 'none', or CRD set/group names (see crds.mjs)
//   port                0 (default: chosen by the OS), kept across restart()
//   bookmarkIntervalMs  how often watches with allowWatchBookmarks get a BOOKMARK (1000)
//   historySize         events kept for watch resumption before compaction (10000)
//   requireNamespaces   namespaced creates need the namespace to exist, as for real (true)
//   verbose             log each request to stderr (false)
//
// The returned server:
//   url, port, dir, token, caFile, ca (PEM)
//   kubeconfig          DIR/kubeconfig: CA by file path, inline token
//   kubeconfigData      DIR/kubeconfig-data: certificate-authority-data, inline token
//   writeKubeconfig(path, { token, tokenFile, inlineCa })  another kubeconfig (e.g. a wrong
//                       token, or users[].user.tokenFile); returns path
//   resourceVersion     the current global resourceVersion (number)
//   closeWatches()      ends every open watch stream (clients see EOF and must re-watch)
//   compact()           forgets history: watches from older resourceVersions get 410 Expired,
//                       and outstanding continue tokens expire
//   sendBookmarks()     a BOOKMARK now on every watch that allows them
//   setToken(t)         accepts t (only) from now on
//   failNext(n, code)   the next n authenticated API requests (not /fake/) get `code` as a
//                       Status (429 comes with Retry-After: 1)
//   stop()              closes the listener and every connection; state is kept
//   restart()           stop() if needed, then listens again on the same port
//   close()             stop() for good (timers too; the temp directory if it made one)
//   stats()             { total, discovery, openWatches, resourceVersion, listening, restarts,
//                         requests: { 'patch httproutes/status': n, 'list pods': n, ... },
//                         byGroupResource: { 'get inferencepools.inference.networking.k8s.io': n } }
//                       by kube verb (get list watch create update patch delete
//                       deletecollection), counted before failNext; resetStats() zeroes them
// The store, without HTTP (namespace defaults to "default" for namespaced kinds; objects in
// and out are copied):
//   get({ apiVersion, kind, namespace, name })  the object or undefined
//   list({ apiVersion, kind, namespace })       all namespaces when namespace is omitted
//   put(object)         create or replace; server-owned metadata filled in, status kept as
//                       given, generation bumped on spec changes, events emitted
//   delete({ apiVersion, kind, namespace, name })  at once (finalizers ignored); the object
//   bulkLoad(objects)   put() for many, fast (31,000 objects in about a second);
//                       { count, resourceVersion }
//
// Over HTTP, with the same bearer token: GET /fake/stats, POST /fake/stats/reset,
// /fake/close-watches, /fake/compact, /fake/bookmarks, /fake/token?token=T,
// /fake/fail?n=N&code=C, /fake/restart?downMs=N, /fake/bulk (body: a JSON array or {items}).
//
// As a CLI: node test/fakes/apiserver.mjs --dir DIR [--token T] [--crds all|none|a,b] [--port 0]
//   [--bookmark-ms N] [--verbose]; writes DIR/apiserver.ready (JSON: port, url, caFile,
//   kubeconfig, kubeconfigData, token, pid) once listening and runs until SIGTERM or SIGINT.
//
// Not implemented: aggregated discovery, Table output, protobuf, managedFields, OpenAPI
// schemas (/openapi/v3 only advertises server-side field validation; /openapi/v2 is 404),
// schema validation and conversion, admission, RBAC. Everything is JSON.
import { createServer } from 'node:https';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { ApiError, errors } from './apiserver/errors.mjs';
import { Registry, defKey, splitApiVersion } from './apiserver/registry.mjs';
import { Store } from './apiserver/store.mjs';
import { WatchHub } from './apiserver/watch.mjs';
import { Rest } from './apiserver/rest.mjs';
import { Handlers, discoveryDoc, parseRoute, resolveDef } from './apiserver/handlers.mjs';
import { makeCertificates, writeKubeconfig } from './apiserver/tls.mjs';
import { groupVersionDoc, openApiIndex, parseOpenApiPath } from './apiserver/openapi.mjs';
import { crdsFor } from './crds.mjs';

const maxBody = 3 * 1024 * 1024;
const maxControlBody = 512 * 1024 * 1024;
const bootNamespaces = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];

// Objects are JSON by definition, and this is faster than structuredClone for them.
const copy = (value) => JSON.parse(JSON.stringify(value));

export async function startFakeApiServer(opts = {}) {
  const server = new FakeApiServer(opts);
  await server.start();
  return server;
}

function parseUrl(raw) {
  try {
    return new URL(raw, 'https://127.0.0.1');
  } catch {
    throw errors.badRequest('malformed request URL');
  }
}

function headers(extra = {}) {
  return { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', 'Audit-Id': randomUUID(), ...extra };
}

function sendJson(res, code, body, extra) {
  const text = JSON.stringify(body);
  res.writeHead(code, headers({ 'Content-Length': Buffer.byteLength(text), ...extra }));
  res.end(text);
}

function sendError(res, error) {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const apiError = error instanceof ApiError ? error : new ApiError(500, 'InternalError', `Internal error occurred: ${error.message}`);
  const extra = apiError.code === 429 ? { 'Retry-After': '1' } : {};
  sendJson(res, apiError.code, apiError.toStatus(), extra);
}

// The request body as text. An oversized body is still read to its end before the 413 goes
// out, so the client sees the answer rather than a reset; a huge one drops the connection.
function readBody(req, limit) {
  return new Promise((resolveBody, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
      else if (size > 16 * limit) req.destroy();
    });
    req.on('end', () => (size > limit ? reject(errors.tooLarge(limit)) : resolveBody(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
    req.on('close', () => { if (!req.complete) reject(errors.tooLarge(limit)); });
  });
}

class FakeApiServer {
  constructor(opts) {
    this.ownsDir = !opts.dir;
    this.dir = opts.dir ? resolve(opts.dir) : mkdtempSync(join(tmpdir(), 'fake-apiserver-'));
    mkdirSync(this.dir, { recursive: true });
    this.token = opts.token ?? randomBytes(16).toString('hex');
    this.port = opts.port ?? 0;
    this.verbose = Boolean(opts.verbose);
    this.crdsOption = opts.crds ?? 'all';
    this.registry = new Registry();
    this.store = new Store({ historySize: opts.historySize ?? 10000 });
    this.hub = new WatchHub(this.store, { bookmarkIntervalMs: opts.bookmarkIntervalMs ?? 1000 });
    this.rest = new Rest({ registry: this.registry, store: this.store, hub: this.hub,
      requireNamespaces: opts.requireNamespaces ?? true });
    this.handlers = new Handlers(this.rest);
    this.failures = { n: 0, code: 500 };
    this.sockets = new Set();
    this.server = null;
    this.closed = false;
    this.listens = 0;
    this.resetStats();
  }

  async start() {
    const certs = await makeCertificates(this.dir);
    Object.assign(this, { caFile: certs.caFile, ca: certs.ca, tls: { key: certs.key, cert: certs.cert } });
    for (const name of bootNamespaces) this.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
    for (const crd of crdsFor(this.crdsOption)) this.put(crd);
    await this.listen();
    this.kubeconfig = this.writeKubeconfig(join(this.dir, 'kubeconfig'));
    this.kubeconfigData = this.writeKubeconfig(join(this.dir, 'kubeconfig-data'), { inlineCa: true });
  }

  get url() {
    return `https://127.0.0.1:${this.port}`;
  }

  get resourceVersion() {
    return this.store.rv;
  }

  writeKubeconfig(path, { token = this.token, tokenFile, inlineCa = false } = {}) {
    const user = tokenFile ? { tokenFile } : { token };
    return writeKubeconfig(path, { server: this.url, caFile: this.caFile, user, inlineCa });
  }

  // ---- listener lifecycle

  async listen() {
    // HTTP/1.1 only: the protocol the router's client speaks (no h2 via ALPN).
    const server = createServer({ ...this.tls, ALPNProtocols: ['http/1.1'] }, (req, res) => this.handle(req, res));
    server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    // Unparseable HTTP: a bare 400, as Go's server answers, then the connection goes.
    server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request');
      else socket.destroy();
    });
    server.on('tlsClientError', () => {});
    await new Promise((resolveListen, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => {
        server.off('error', reject);
        resolveListen();
      });
    });
    this.port = server.address().port;
    this.server = server;
    this.listens++;
  }

  async stop() {
    const server = this.server;
    if (!server) return;
    this.server = null;
    this.hub.closeAll();
    const closed = new Promise((r) => server.close(r));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }

  async restart() {
    if (this.closed) throw new Error('the fake API server is closed');
    await this.stop();
    await this.listen();
  }

  async close() {
    this.closed = true;
    await this.stop();
    this.hub.dispose();
    if (this.ownsDir) rmSync(this.dir, { recursive: true, force: true });
  }

  // ---- test controls

  closeWatches() {
    this.hub.closeAll();
  }

  compact() {
    this.store.compact();
  }

  sendBookmarks() {
    this.hub.sendBookmarks();
  }

  setToken(token) {
    this.token = token;
  }

  failNext(n, code = 500) {
    this.failures = { n, code };
  }

  resetStats() {
    this.counters = { total: 0, discovery: 0, requests: new Map(), byGroupResource: new Map() };
  }

  stats() {
    return {
      total: this.counters.total, discovery: this.counters.discovery,
      requests: Object.fromEntries(this.counters.requests),
      byGroupResource: Object.fromEntries(this.counters.byGroupResource),
      openWatches: this.hub.count, resourceVersion: this.store.rv,
      listening: this.server !== null, restarts: Math.max(0, this.listens - 1),
    };
  }

  count(route) {
    const sub = route.subresource ? `/${route.subresource}` : '';
    const bump = (map, key) => map.set(key, (map.get(key) ?? 0) + 1);
    bump(this.counters.requests, `${route.verb} ${route.plural}${sub}`);
    bump(this.counters.byGroupResource, `${route.verb} ${route.plural}${route.group ? `.${route.group}` : ''}${sub}`);
  }

  // ---- direct store access (no HTTP, no validation beyond the kind being served)

  defOf(ref) {
    const def = this.registry.byKind(ref.apiVersion, ref.kind);
    if (!def) throw new Error(`no resource serves ${ref.apiVersion} ${ref.kind}`);
    return def;
  }

  namespaceOf(def, namespace) {
    return def.namespaced ? namespace || 'default' : undefined;
  }

  get(ref) {
    const def = this.defOf(ref);
    const obj = this.store.get(defKey(def), this.namespaceOf(def, ref.namespace), ref.name);
    return obj && copy({ ...obj, apiVersion: ref.apiVersion });
  }

  list(ref) {
    const def = this.defOf(ref);
    return this.store.list(defKey(def), def.namespaced ? ref.namespace : undefined)
      .map((o) => copy({ ...o, apiVersion: ref.apiVersion }));
  }

  put(object) {
    return copy(this.putObject(copy(object)));
  }

  putObject(obj) {
    const def = this.defOf(obj);
    return this.rest.put(def, splitApiVersion(obj.apiVersion)[1], obj);
  }

  delete(ref) {
    const def = this.defOf(ref);
    const old = this.store.get(defKey(def), this.namespaceOf(def, ref.namespace), ref.name);
    if (!old) return undefined;
    if (def.plural === 'namespaces' && !def.group) this.rest.emptyNamespace(old.metadata.name);
    return copy(this.rest.commit(def, 'DELETED', old, old));
  }

  bulkLoad(objects) {
    for (const obj of objects) this.putObject(copy(obj));
    return { count: objects.length, resourceVersion: this.store.rv };
  }

  // ---- HTTP

  authorized(req) {
    return req.headers.authorization === `Bearer ${this.token}`;
  }

  async handle(req, res) {
    const started = Date.now();
    if (this.verbose) {
      const type = req.headers['content-type'] ? ` (${req.headers['content-type']})` : '';
      res.on('close', () => process.stderr.write(`fake-apiserver: ${req.method} ${req.url}${type} ${res.statusCode} ${Date.now() - started}ms\n`));
    }
    try {
      const url = parseUrl(req.url);
      const control = url.pathname.startsWith('/fake/');
      const text = await readBody(req, control ? maxControlBody : maxBody);
      if (!this.authorized(req)) throw errors.unauthorized();
      if (control) return this.control(req, res, url, text);
      this.counters.total++;
      const route = parseRoute(req.method, url.pathname, url.searchParams);
      if (route?.verb) this.count(route);
      if (this.failures.n > 0) {
        this.failures.n--;
        throw errors.injected(this.failures.code);
      }
      return this.dispatch(req, res, url, route, text);
    } catch (e) {
      if (!(e instanceof ApiError) && this.verbose) process.stderr.write(`fake-apiserver: ${e.stack}\n`);
      sendError(res, e);
    }
    return undefined;
  }

  dispatch(req, res, url, route, text) {
    const path = url.pathname;
    if (path === '/version') return sendJson(res, 200, versionInfo());
    if (path === '/healthz' || path === '/readyz' || path === '/livez') {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
      return res.end('ok');
    }
    if (path === '/openapi/v3' || path.startsWith('/openapi/v3/')) return this.openApi(res, path);
    if (!route) throw errors.notFoundPath();
    if (route.discovery) {
      if (req.method !== 'GET') throw errors.methodNotAllowed();
      this.counters.discovery++;
      const doc = discoveryDoc(route, this.registry, `127.0.0.1:${this.port}`);
      if (!doc) throw errors.notFoundPath();
      return sendJson(res, 200, doc);
    }
    const def = resolveDef(route, this.registry);
    const answer = this.handlers[route.verb](def, route, req, url.searchParams, res, text);
    if (answer) sendJson(res, answer.code, answer.body);
    return undefined;
  }

  openApi(res, path) {
    this.counters.discovery++;
    if (path === '/openapi/v3') return sendJson(res, 200, openApiIndex(this.registry));
    const gv = parseOpenApiPath(path);
    const doc = gv && groupVersionDoc(this.registry, gv.group, gv.version);
    if (!doc) throw errors.notFoundPath();
    return sendJson(res, 200, doc);
  }

  control(req, res, url, text) {
    const q = url.searchParams;
    const action = url.pathname.slice('/fake/'.length);
    const actions = {
      'GET stats': () => this.stats(),
      'POST stats/reset': () => this.resetStats(),
      'POST close-watches': () => this.closeWatches(),
      'POST compact': () => this.compact(),
      'POST bookmarks': () => this.sendBookmarks(),
      'POST token': () => this.setToken(q.get('token') ?? ''),
      'POST fail': () => this.failNext(Number(q.get('n') ?? 1), Number(q.get('code') ?? 500)),
      'POST bulk': () => {
        const body = JSON.parse(text);
        return this.bulkLoad(Array.isArray(body) ? body : body.items ?? []);
      },
      'POST restart': () => {
        // Answer first: the restart drops this very connection.
        res.on('finish', () => setImmediate(() => this.restartAfter(Number(q.get('downMs') ?? 0))));
        return { restarting: true };
      },
    };
    const known = Object.keys(actions).some((k) => k.endsWith(` ${action}`));
    if (!known) throw errors.notFoundPath();
    if (!actions[`${req.method} ${action}`]) throw errors.methodNotAllowed();
    let result;
    try {
      result = actions[`${req.method} ${action}`]();
    } catch (e) {
      if (e instanceof SyntaxError) throw errors.badRequest(`invalid JSON: ${e.message}`);
      if (!(e instanceof ApiError)) throw errors.badRequest(e.message);
      throw e;
    }
    sendJson(res, 200, result ?? { ok: true });
  }

  async restartAfter(downMs) {
    await this.stop();
    if (downMs > 0) await delay(downMs);
    if (this.closed) return;
    await this.listen().catch((e) => process.stderr.write(`fake-apiserver: listen again failed: ${e.message}\n`));
  }
}

function versionInfo() {
  return {
    major: '1', minor: '32', gitVersion: 'v1.32.0-sluice-fake', gitCommit: '0000000000000000000000000000000000000000',
    gitTreeState: 'clean', buildDate: '2025-01-01T00:00:00Z', goVersion: 'go1.23.0', compiler: 'gc',
    platform: 'linux/amd64',
  };
}

// ---- CLI

function parseArgs(argv) {
  const opts = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[++i];
    };
    if (arg === '--dir') opts.dir = value();
    else if (arg === '--token') opts.token = value();
    else if (arg === '--crds') opts.crds = ['all', 'none'].includes(argv[i + 1]) ? value() : value().split(',');
    else if (arg === '--port') opts.port = Number(value());
    else if (arg === '--bookmark-ms') opts.bookmarkIntervalMs = Number(value());
    else if (arg === '--verbose') opts.verbose = true;
    else throw new Error(`unknown argument ${arg}`);
  }
  if (!opts.dir) throw new Error('--dir is required');
  return opts;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${e.message}\nusage: node apiserver.mjs --dir DIR [--token T] [--crds all|none|a,b] [--port 0] [--bookmark-ms N] [--verbose]\n`);
    process.exit(2);
  }
  const api = await startFakeApiServer(opts);
  const ready = { port: api.port, url: api.url, caFile: api.caFile, kubeconfig: api.kubeconfig,
    kubeconfigData: api.kubeconfigData, token: api.token, pid: process.pid };
  // Renamed into place so a reader never sees half a file.
  const path = join(api.dir, 'apiserver.ready');
  writeFileSync(`${path}.tmp`, JSON.stringify(ready));
  renameSync(`${path}.tmp`, path);
  const shutdown = () => api.close().then(() => process.exit(0));
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    process.stderr.write(`fake-apiserver: ${e.stack}\n`);
    process.exit(1);
  });
}
