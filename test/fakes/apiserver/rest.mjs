// The REST semantics of resource endpoints, shared by the HTTP handlers and the direct store
// API: what create, update, patch and delete do to an object (metadata the server owns,
// status subresource rules, generation, optimistic concurrency, finalizers, no-op writes) and
// how lists page and watches start.
import { randomUUID, randomBytes } from 'node:crypto';
import { errors } from './errors.mjs';
import { defFromCrd, defKey, groupVersion, splitApiVersion } from './registry.mjs';
import { canonicalJson, jsonPatch, mergePatch, strategicMergePatch } from './patch.mjs';
import { objectFilter } from './selectors.mjs';
import { parseYaml } from './yaml.mjs';

const subdomain = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const label = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const namespaceKey = '/namespaces';
const crdKey = 'apiextensions.k8s.io/customresourcedefinitions';

// RFC 3339 to the second, as metadata timestamps are; formatted once a second at most.
let clock = { second: -1, text: '' };
export function now() {
  const second = Math.floor(Date.now() / 1000);
  if (second !== clock.second) clock = { second, text: new Date(second * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z') };
  return clock.text;
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

function without(obj, ...keys) {
  const out = { ...obj };
  for (const k of keys) delete out[k];
  return out;
}

// What metadata.generation tracks: everything but metadata (and status, if it is a subresource).
function specOf(def, obj) {
  const spec = without(obj, 'metadata', 'apiVersion', 'kind');
  return def.status ? without(spec, 'status') : spec;
}

// Everything but the resourceVersion, key order ignored: a write that changes nothing else is
// not a write (etcd3 store's GuaranteedUpdate skips it, so no event and no new RV).
function sameObject(a, b) {
  const strip = (o) => ({ ...o, apiVersion: undefined, metadata: { ...o.metadata, resourceVersion: undefined } });
  return canonicalJson(strip(a)) === canonicalJson(strip(b));
}

function randomSuffix() {
  const alphabet = 'bcdfghjklmnpqrstvwxz2456789';
  return [...randomBytes(5)].map((b) => alphabet[b % alphabet.length]).join('');
}

export class Rest {
  constructor({ registry, store, hub, requireNamespaces = true }) {
    Object.assign(this, { registry, store, hub, requireNamespaces });
  }

  // ---- object preparation: builds the next object or throws an ApiError; writes nothing

  checkType(def, body, expectedVersion) {
    if (!isObject(body)) throw errors.badRequest('the body of the request must be a JSON object');
    if (!body.kind) throw errors.badRequest(`Object 'Kind' is missing in '${JSON.stringify(body).slice(0, 200)}'`);
    const [group, version] = splitApiVersion(body.apiVersion);
    if (!body.apiVersion || group !== def.group || !def.versions.includes(version)) {
      throw errors.badRequest(`the API version in the data (${body.apiVersion ?? ''}) does not match the expected API version (${groupVersion(def.group, expectedVersion)})`);
    }
    if (body.kind !== def.kind) {
      throw errors.badRequest(`the kind in the data (${body.kind}) does not match the expected kind (${def.kind})`);
    }
    if (body.metadata !== undefined && !isObject(body.metadata)) throw errors.badRequest('metadata must be an object');
  }

  checkName(def, name) {
    const pattern = def.plural === 'namespaces' || def.plural === 'services' ? label : subdomain;
    const max = pattern === label ? 63 : 253;
    if (name.length <= max && pattern.test(name)) return;
    const what = pattern === label ? 'RFC 1123 label' : 'RFC 1123 subdomain';
    throw errors.invalid(def, name, [{ field: 'metadata.name',
      message: `Invalid value: "${name}": a lowercase ${what} must consist of lower case alphanumeric characters, '-'${pattern === label ? '' : " or '.'"}, and must start and end with an alphanumeric character` }]);
  }

  checkNamespace(def, body, namespace) {
    const given = body.metadata?.namespace;
    if (def.namespaced && given && given !== namespace) {
      throw errors.badRequest('the namespace of the provided object does not match the namespace sent on the request');
    }
  }

  prepareCreate(def, version, body, namespace) {
    this.checkType(def, body, version);
    this.checkNamespace(def, body, namespace);
    const given = body.metadata ?? {};
    const name = given.name || (given.generateName ? `${given.generateName}${randomSuffix()}` : '');
    if (!name) {
      throw errors.invalid(def, '', [{ field: 'metadata.name', reason: 'FieldValueRequired',
        message: 'Required value: name or generateName is required' }]);
    }
    this.checkName(def, name);
    if (def.namespaced && this.requireNamespaces && !this.store.get(namespaceKey, '', namespace)) {
      throw errors.namespaceNotFound(namespace);
    }
    const rest = without(given, 'resourceVersion', 'uid', 'creationTimestamp', 'deletionTimestamp', 'selfLink',
      'managedFields', 'generation');
    const metadata = { name, ...rest, ...(def.namespaced ? { namespace } : {}), uid: randomUUID(), resourceVersion: '' };
    if (!def.namespaced) delete metadata.namespace;
    if (def.generation) metadata.generation = 1;
    metadata.creationTimestamp = now();
    if (def.plural === 'namespaces') metadata.labels = { ...metadata.labels, 'kubernetes.io/metadata.name': name };
    const content = without(body, 'apiVersion', 'kind', 'metadata');
    const obj = { apiVersion: groupVersion(def.group, def.versions[0]), kind: def.kind, metadata, ...content };
    if (def.status) delete obj.status;
    return this.initialStatus(def, normalize(def, obj));
  }

  // What the real server's create strategies put in status.
  initialStatus(def, obj) {
    if (def.plural === 'namespaces') return { ...obj, status: { phase: 'Active' } };
    if (defKey(def) !== crdKey) return obj;
    const names = obj.spec?.names ?? {};
    const at = obj.metadata.creationTimestamp;
    const condition = (type, reason, message) => ({ type, status: 'True', lastTransitionTime: at, reason, message });
    return { ...obj, status: {
      conditions: [condition('NamesAccepted', 'NoConflicts', 'no conflicts found'),
        condition('Established', 'InitialNamesAccepted', 'the initial names have been accepted')],
      acceptedNames: { ...names, singular: names.singular || names.kind?.toLowerCase(), listKind: names.listKind || `${names.kind}List` },
      storedVersions: (obj.spec?.versions ?? []).filter((v) => v.storage).map((v) => v.name),
    } };
  }

  checkCrd(def, obj) {
    if (defKey(def) !== crdKey) return;
    const spec = obj.spec ?? {};
    const names = spec.names ?? {};
    const causes = [];
    if (!spec.group) causes.push({ field: 'spec.group', message: 'Required value' });
    if (!names.plural) causes.push({ field: 'spec.names.plural', message: 'Required value' });
    if (!names.kind) causes.push({ field: 'spec.names.kind', message: 'Required value' });
    if (!['Namespaced', 'Cluster'].includes(spec.scope)) causes.push({ field: 'spec.scope', message: `Unsupported value: "${spec.scope}": supported values: "Cluster", "Namespaced"` });
    const versions = Array.isArray(spec.versions) ? spec.versions : [];
    if (versions.filter((v) => v.storage).length !== 1) causes.push({ field: 'spec.versions', message: 'Invalid value: must have exactly one version marked as storage version' });
    if (names.plural && spec.group && obj.metadata.name !== `${names.plural}.${spec.group}`) {
      causes.push({ field: 'metadata.name', message: `Invalid value: "${obj.metadata.name}": must be spec.names.plural+"."+spec.group` });
    }
    const served = names.plural && spec.group && this.registry.defs.get(`${spec.group}/${names.plural}`);
    if (served?.builtin) causes.push({ field: 'spec.group', message: `Invalid value: "${spec.group}": ${names.plural} is a built-in resource` });
    if (causes.length) throw errors.invalid(def, obj.metadata.name, causes);
  }

  // The object a PUT (or a patch, once applied) leaves, or `old` itself when nothing changes.
  // subresource: '' (the main resource), 'status', or 'all' (spec and status: direct puts).
  prepareUpdate(def, version, old, body, subresource) {
    this.checkType(def, body, version);
    this.checkNamespace(def, body, old.metadata.namespace);
    const given = body.metadata ?? {};
    if (given.name !== undefined && given.name !== old.metadata.name) {
      throw errors.badRequest(`the name of the object (${given.name}) does not match the name on the URL (${old.metadata.name})`);
    }
    if (given.resourceVersion && given.resourceVersion !== old.metadata.resourceVersion) throw errors.stale(def, old.metadata.name);
    if (given.uid && given.uid !== old.metadata.uid) {
      throw errors.conflict(def, old.metadata.name, `Precondition failed: UID in precondition: ${given.uid}, UID in object meta: ${old.metadata.uid}`);
    }
    const next = subresource === 'status' ? this.statusUpdate(old, body) : this.mainUpdate(def, old, body, subresource === 'all');
    if (def.generation && canonicalJson(specOf(def, next)) !== canonicalJson(specOf(def, old))) {
      next.metadata.generation = (old.metadata.generation ?? 0) + 1;
    }
    this.checkCrd(def, next);
    return sameObject(next, old) ? old : next;
  }

  // The status subresource changes status and nothing else.
  statusUpdate(old, body) {
    const next = { ...old, metadata: { ...old.metadata } };
    if (body.status === undefined) delete next.status;
    else next.status = body.status;
    return next;
  }

  mainUpdate(def, old, body, takeStatus) {
    const kept = ['name', 'namespace', 'uid', 'creationTimestamp', 'generation', 'deletionTimestamp',
      'deletionGracePeriodSeconds', 'resourceVersion'];
    const metadata = without(body.metadata ?? {}, 'managedFields', 'selfLink');
    for (const k of kept) {
      if (old.metadata[k] === undefined) delete metadata[k];
      else metadata[k] = old.metadata[k];
    }
    if (def.plural === 'namespaces') metadata.labels = { ...metadata.labels, 'kubernetes.io/metadata.name': old.metadata.name };
    const content = without(body, 'apiVersion', 'kind', 'metadata');
    const next = normalize(def, { apiVersion: old.apiVersion, kind: old.kind, metadata, ...content });
    if (def.status && !(takeStatus && body.status !== undefined)) {
      if (old.status === undefined) delete next.status;
      else next.status = old.status;
    }
    return next;
  }

  // ---- commits: the only place objects enter or leave the store

  commit(def, type, obj, old) {
    const stored = this.store.commit(defKey(def), type, obj, old);
    if (defKey(def) === crdKey) this.syncCrd(stored, type);
    return stored;
  }

  // A CRD's resources appear once it is stored and go (with every instance) once it is gone.
  syncCrd(crd, type) {
    const def = type === 'DELETED' ? null : defFromCrd(crd);
    const before = [...this.registry.defs.values()].find((d) => d.crdName === crd.metadata.name);
    this.registry.applyCrd(crd.metadata.name, def);
    if (!before) return;
    const key = defKey(before);
    const stillServed = (w) => def && defKey(def) === key && def.versions.includes(w.version);
    if (!def || defKey(def) !== key) {
      for (const obj of this.store.list(key)) this.store.commit(key, 'DELETED', obj, obj);
    }
    this.hub.closeAll((w) => w.key === key && !stillServed(w));
  }

  // Create or replace with none of the API's checks but the CRD's, keeping status: fixtures.
  put(def, version, obj) {
    const meta = obj.metadata ?? {};
    if (!meta.name) throw new Error('put: metadata.name is required');
    const metadata = { ...meta };
    if (def.namespaced) metadata.namespace = meta.namespace || 'default';
    else delete metadata.namespace;
    const old = this.store.get(defKey(def), metadata.namespace, meta.name);
    if (old) {
      const body = { ...obj, metadata: { ...metadata, resourceVersion: undefined } };
      return this.update(def, old, this.prepareUpdate(def, version, old, body, 'all'), false);
    }
    const created = normalize(def, { ...obj, apiVersion: groupVersion(def.group, def.versions[0]), metadata: {
      ...metadata, uid: meta.uid ?? randomUUID(), resourceVersion: '',
      ...(def.generation ? { generation: meta.generation ?? 1 } : {}), creationTimestamp: meta.creationTimestamp ?? now() } });
    this.checkCrd(def, created);
    return this.commit(def, 'ADDED', created.status === undefined ? this.initialStatus(def, created) : created);
  }

  create(def, obj, dryRun) {
    this.checkCrd(def, obj);
    if (this.store.get(defKey(def), obj.metadata.namespace, obj.metadata.name)) throw errors.alreadyExists(def, obj.metadata.name);
    return dryRun ? obj : this.commit(def, 'ADDED', obj);
  }

  update(def, old, next, dryRun) {
    if (next === old || dryRun) return next;
    if (next.metadata.deletionTimestamp && !(next.metadata.finalizers?.length)) {
      return this.commit(def, 'DELETED', next, old);
    }
    return this.commit(def, 'MODIFIED', next, old);
  }

  // Objects with finalizers only get a deletionTimestamp; the last finalizer removed deletes them.
  remove(def, old, { dryRun = false, preconditions = {} } = {}) {
    if (preconditions.uid && preconditions.uid !== old.metadata.uid) {
      throw errors.conflict(def, old.metadata.name, `Precondition failed: UID in precondition: ${preconditions.uid}, UID in object meta: ${old.metadata.uid}`);
    }
    if (preconditions.resourceVersion && preconditions.resourceVersion !== old.metadata.resourceVersion) {
      throw errors.conflict(def, old.metadata.name, `Precondition failed: ResourceVersion in precondition: ${preconditions.resourceVersion}, ResourceVersion in object meta: ${old.metadata.resourceVersion}`);
    }
    if (old.metadata.finalizers?.length) {
      if (old.metadata.deletionTimestamp || dryRun) return { obj: old, gone: false };
      const next = { ...old, metadata: { ...old.metadata, deletionTimestamp: now(), deletionGracePeriodSeconds: 0 } };
      return { obj: this.commit(def, 'MODIFIED', next, old), gone: false };
    }
    if (dryRun) return { obj: old, gone: true };
    if (def.plural === 'namespaces' && !def.group) this.emptyNamespace(old.metadata.name);
    return { obj: this.commit(def, 'DELETED', old, old), gone: true };
  }

  // The namespace controller's job, done at once: everything in the namespace goes first.
  emptyNamespace(namespace) {
    for (const def of this.registry.defs.values()) {
      if (!def.namespaced) continue;
      for (const obj of this.store.list(defKey(def), namespace)) this.commit(def, 'DELETED', obj, obj);
    }
  }

  // ---- patches

  patchedBody(def, version, old, contentType, text) {
    const served = { ...old, apiVersion: groupVersion(def.group, version) };
    switch (contentType) {
      case 'application/merge-patch+json':
        return mergePatch(served, parseJsonBody(text));
      case 'application/strategic-merge-patch+json':
        if (!def.builtin) throw unsupportedPatch(def);
        return strategicMergePatch(served, parseJsonBody(text));
      case 'application/json-patch+json':
        return jsonPatch(served, parseJsonBody(text));
      case 'application/apply-patch+yaml':
        return mergePatch(served, parseApplyBody(text));
      default:
        throw unsupportedPatch(def);
    }
  }

  // ---- lists and watches

  list(def, version, namespace, query) {
    const filter = objectFilter(query, def);
    const limit = Math.max(0, Number.parseInt(query.get('limit') ?? '0', 10) || 0);
    const token = query.get('continue');
    const scope = `${defKey(def)}/${namespace ?? ''}`;
    let items;
    let start = 0;
    let rv;
    let id;
    if (token) {
      ({ id, start, rv } = decodeContinue(token));
      const snap = this.store.snapshot(id);
      if (!snap) throw expiredContinue();
      if (snap.scope !== scope) throw errors.badRequest('continue key is not valid: it belongs to another list');
      items = snap.items;
    } else {
      items = this.store.list(defKey(def), namespace);
      if (filter) items = items.filter(filter);
      rv = this.store.rv;
    }
    const end = limit ? Math.min(start + limit, items.length) : items.length;
    const metadata = { resourceVersion: String(rv) };
    if (end < items.length) {
      id ??= this.store.saveSnapshot(items, rv, scope);
      metadata.continue = encodeContinue({ id, start: end, rv });
      if (!filter) metadata.remainingItemCount = items.length - end;
    }
    const gv = groupVersion(def.group, version);
    const page = items.slice(start, end).map((o) => listItem(def, gv, o));
    return { kind: def.listKind, apiVersion: gv, metadata, items: page };
  }

  // Opens a watch stream on `res` and plays what precedes the live events: the current state
  // (no resourceVersion, "0", or sendInitialEvents=true) or the history after the given one.
  watch(def, version, namespace, name, query, res) {
    const selected = objectFilter(query, def);
    const filter = name ? (o) => o.metadata.name === name && (!selected || selected(o)) : selected;
    const rvParam = query.get('resourceVersion') ?? '';
    const initial = query.get('sendInitialEvents');
    const bookmarks = parseBool(query.get('allowWatchBookmarks'));
    const timeoutMs = Number(query.get('timeoutSeconds') ?? 0) * 1000;
    const w = this.hub.open({ res, def, key: defKey(def), version, namespace, filter, bookmarks, timeoutMs });
    const sendState = initial === null ? rvParam === '' || rvParam === '0' : parseBool(initial);
    if (sendState) {
      for (const obj of this.store.list(defKey(def), namespace)) if (w.matches(obj)) w.send('ADDED', obj);
      if (parseBool(initial)) w.bookmark({ 'k8s.io/initial-events-end': 'true' });
      return w;
    }
    if (rvParam === '' || rvParam === '0') return w;
    const events = this.store.eventsAfter(Number(rvParam));
    if (!events) {
      w.error(410, 'Expired', `too old resource version: ${rvParam} (${this.store.compactedRv + 1})`);
      w.close();
      return w;
    }
    for (const e of events) w.deliver(e);
    return w;
  }
}

// The defaulting the real server does that clients depend on: Secret stringData is write-only
// (merged into data, base64), and a Secret without a type is Opaque.
export function normalize(def, obj) {
  if (def.group !== '' || def.plural !== 'secrets') return obj;
  const out = { ...without(obj, 'stringData'), type: obj.type || 'Opaque' };
  if (isObject(obj.stringData)) {
    out.data = { ...obj.data };
    for (const [k, v] of Object.entries(obj.stringData)) out.data[k] = Buffer.from(String(v)).toString('base64');
  }
  return out;
}

export function parseBool(v) {
  return v === 'true' || v === '1' || v === 'True' || v === 'TRUE' || v === 't' || v === 'T';
}

export function listItem(def, gv, obj) {
  return def.builtin ? without(obj, 'apiVersion', 'kind') : { ...obj, apiVersion: gv };
}

export function parseJsonBody(text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw errors.badRequest(`couldn't get version/kind; json parse error: ${e.message}`);
  }
}

// kubectl sends JSON under the apply content type; other clients send YAML.
function parseApplyBody(text) {
  try {
    return JSON.parse(text);
  } catch {
    try {
      return parseYaml(text);
    } catch (e) {
      throw errors.badRequest(`error decoding YAML: ${e.message}`);
    }
  }
}

function unsupportedPatch(def) {
  const types = ['application/json-patch+json', 'application/merge-patch+json', 'application/apply-patch+yaml'];
  return errors.unsupportedMediaType(def.builtin ? [...types, 'application/strategic-merge-patch+json'] : types);
}

function encodeContinue({ id, start, rv }) {
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv, start, id })).toString('base64');
}

function decodeContinue(token) {
  let parsed;
  try {
    parsed = JSON.parse(Buffer.from(token, 'base64').toString('utf8'));
  } catch {
    parsed = null;
  }
  if (!parsed || parsed.v !== 'meta.k8s.io/v1' || !Number.isInteger(parsed.id) || !Number.isInteger(parsed.start)) {
    throw errors.badRequest('continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)');
  }
  return parsed;
}

function expiredContinue() {
  return errors.expired('The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.');
}
