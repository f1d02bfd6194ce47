// URL routing and the per-verb handlers of the Kubernetes REST API. A handler gets a parsed
// request and answers with { code, body } (or streams, for watches); errors are thrown as
// ApiErrors and turned into Status objects by the server.
import { errors } from './errors.mjs';
import { defKey, discovery, groupVersion } from './registry.mjs';
import { listItem, parseBool, parseJsonBody } from './rest.mjs';
import { parseYaml } from './yaml.mjs';

// { discovery: 'api' | 'apis' | 'group' | 'resources', group, version } or a resource route
// { group, version, namespace, plural, name, subresource, verb }.
export function parseRoute(method, pathname, query) {
  let segs;
  try {
    segs = pathname.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    throw errors.badRequest('malformed URL path');
  }
  let group = '';
  let rest;
  if (segs[0] === 'api') {
    if (segs.length === 1) return { discovery: 'api' };
    rest = segs.slice(2);
  } else if (segs[0] === 'apis') {
    if (segs.length === 1) return { discovery: 'apis' };
    group = segs[1];
    if (segs.length === 2) return { discovery: 'group', group };
    rest = segs.slice(3);
  } else {
    return null;
  }
  const version = segs[segs[0] === 'api' ? 1 : 2];
  if (rest.length === 0) return { discovery: 'resources', group, version };
  let namespace = '';
  const namespaceSubresource = group === '' && rest.length === 3 && ['status', 'finalize'].includes(rest[2]);
  if (rest[0] === 'namespaces' && rest.length >= 3 && !namespaceSubresource) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  if (rest.length > 3) throw errors.notFoundPath();
  const [plural, name = '', subresource = ''] = rest;
  return { group, version, namespace, plural, name, subresource, verb: verbOf(method, name, subresource, query) };
}

function verbOf(method, name, subresource, query) {
  switch (method) {
    case 'GET': return parseBool(query.get('watch')) ? 'watch' : name ? 'get' : 'list';
    case 'POST': return name ? null : 'create';
    case 'PUT': return name ? 'update' : null;
    case 'PATCH': return name ? 'patch' : null;
    case 'DELETE': return subresource ? null : name ? 'delete' : 'deletecollection';
    default: return null;
  }
}

export function discoveryDoc(route, registry, address) {
  switch (route.discovery) {
    case 'api': return discovery.apiVersions(address);
    case 'apis': return discovery.apiGroupList(registry);
    case 'group': return discovery.apiGroup(registry, route.group);
    default: return discovery.apiResourceList(registry, route.group, route.version);
  }
}

// The def a resource route names, with scope and subresource checked.
export function resolveDef(route, registry) {
  const def = registry.lookup(route.group, route.version, route.plural);
  if (!def) throw errors.notFoundPath();
  if (route.namespace && !def.namespaced) throw errors.notFoundPath();
  if (def.namespaced && route.name && !route.namespace) throw errors.notFoundPath();
  if (route.subresource && (route.subresource !== 'status' || !def.status)) throw errors.notFoundPath();
  if (!route.verb || (!route.subresource && !def.verbs.includes(route.verb))) throw errors.methodNotAllowed();
  return def;
}

function mediaType(req) {
  return (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
}

// POST and PUT bodies: JSON or YAML, like the real server's serializers.
function writeBody(req, text) {
  const type = mediaType(req);
  if (type === 'application/yaml') {
    try {
      return parseYaml(text);
    } catch (e) {
      throw errors.badRequest(`error converting YAML to JSON: ${e.message}`);
    }
  }
  if (type === '' || type === 'application/json' || type === '*/*') return parseJsonBody(text);
  throw errors.unsupportedMediaType(['application/json', 'application/yaml']);
}

const present = (def, version, obj) => ({ ...obj, apiVersion: groupVersion(def.group, version) });

function isDryRun(query, options) {
  return query.getAll('dryRun').includes('All') || (Array.isArray(options?.dryRun) && options.dryRun.includes('All'));
}

export class Handlers {
  constructor(rest) {
    this.rest = rest;
    this.store = rest.store;
  }

  current(def, route) {
    const obj = this.store.get(defKey(def), route.namespace, route.name);
    if (!obj) throw errors.notFound(def, route.name);
    return obj;
  }

  get(def, route) {
    return { code: 200, body: present(def, route.version, this.current(def, route)) };
  }

  list(def, route, req, query) {
    return { code: 200, body: this.rest.list(def, route.version, route.namespace, query) };
  }

  watch(def, route, req, query, res) {
    const rv = query.get('resourceVersion') ?? '';
    if (rv !== '' && !/^\d+$/.test(rv)) throw errors.badRequest(`invalid resource version "${rv}"`);
    const timeout = query.get('timeoutSeconds');
    if (timeout !== null && !/^\d+$/.test(timeout)) throw errors.badRequest(`invalid timeoutSeconds "${timeout}"`);
    this.rest.watch(def, route.version, route.namespace, route.name, query, res);
    return null;
  }

  create(def, route, req, query, res, text) {
    const body = writeBody(req, text);
    const obj = this.rest.prepareCreate(def, route.version, body, route.namespace);
    return { code: 201, body: present(def, route.version, this.rest.create(def, obj, isDryRun(query))) };
  }

  update(def, route, req, query, res, text) {
    const body = writeBody(req, text);
    const old = this.store.get(defKey(def), route.namespace, route.name);
    if (!old && def.createOnUpdate && !route.subresource) {
      const obj = this.rest.prepareCreate(def, route.version, body, route.namespace);
      return { code: 201, body: present(def, route.version, this.rest.create(def, obj, isDryRun(query))) };
    }
    if (!old) throw errors.notFound(def, route.name);
    const next = this.rest.prepareUpdate(def, route.version, old, body, route.subresource);
    return { code: 200, body: present(def, route.version, this.rest.update(def, old, next, isDryRun(query))) };
  }

  patch(def, route, req, query, res, text) {
    const type = mediaType(req);
    const apply = type === 'application/apply-patch+yaml';
    if (apply && !query.get('fieldManager')) {
      throw errors.invalid({ group: 'meta.k8s.io', kind: 'PatchOptions' }, '', [{ field: 'fieldManager',
        reason: 'FieldValueRequired', message: 'Required value: is required for apply patch' }]);
    }
    const old = this.store.get(defKey(def), route.namespace, route.name);
    if (!old && apply && !route.subresource) return this.applyCreate(def, route, query, text);
    if (!old) throw errors.notFound(def, route.name);
    const patched = this.rest.patchedBody(def, route.version, old, type, text);
    if (patched?.metadata?.resourceVersion && patched.metadata.resourceVersion !== old.metadata.resourceVersion) {
      throw errors.stale(def, route.name);
    }
    const next = this.rest.prepareUpdate(def, route.version, old, patched, route.subresource);
    return { code: 200, body: present(def, route.version, this.rest.update(def, old, next, isDryRun(query))) };
  }

  // Server-side apply of an object that does not exist yet creates it.
  applyCreate(def, route, query, text) {
    const body = this.rest.patchedBody(def, route.version, {}, 'application/apply-patch+yaml', text);
    if (body?.metadata?.name !== undefined && body.metadata.name !== route.name) {
      throw errors.badRequest(`the name of the object (${body.metadata.name}) does not match the name on the URL (${route.name})`);
    }
    const obj = this.rest.prepareCreate(def, route.version,
      { ...body, metadata: { ...body?.metadata, name: route.name } }, route.namespace);
    return { code: 201, body: present(def, route.version, this.rest.create(def, obj, isDryRun(query))) };
  }

  delete(def, route, req, query, res, text) {
    const options = text.trim() ? parseJsonBody(text) : {};
    const old = this.current(def, route);
    const { obj, gone } = this.rest.remove(def, old, { dryRun: isDryRun(query, options), preconditions: options?.preconditions ?? {} });
    if (!gone || def.returnDeleted) return { code: 200, body: present(def, route.version, obj) };
    const details = { name: obj.metadata.name, ...(def.group ? { group: def.group } : {}), kind: def.plural, uid: obj.metadata.uid };
    return { code: 200, body: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details } };
  }

  deletecollection(def, route, req, query, res, text) {
    const options = text.trim() ? parseJsonBody(text) : {};
    const dryRun = isDryRun(query, options);
    const all = this.rest.list(def, route.version, route.namespace, new URLSearchParams({
      labelSelector: query.get('labelSelector') ?? '', fieldSelector: query.get('fieldSelector') ?? '' }));
    const gv = groupVersion(def.group, route.version);
    const items = [];
    for (const item of all.items) {
      const old = this.store.get(defKey(def), item.metadata.namespace, item.metadata.name);
      if (old) items.push(listItem(def, gv, this.rest.remove(def, old, { dryRun }).obj));
    }
    return { code: 200, body: { kind: def.listKind, apiVersion: gv, metadata: { resourceVersion: String(this.store.rv) }, items } };
  }
}
