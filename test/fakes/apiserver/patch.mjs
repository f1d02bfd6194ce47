// The patch formats kube-apiserver accepts. Inputs are never mutated: every function returns
// a new document that may share untouched subtrees with its input.
import { errors } from './errors.mjs';

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// RFC 7386: objects merge recursively, null removes a member, anything else replaces.
export function mergePatch(target, patch) {
  if (!isObject(patch)) return patch;
  const out = isObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

// Strategic merge patch without the OpenAPI schema: the list fields of built-in kinds that
// merge by key in the real schema do so here too (kubectl's client-side apply sends only the
// changed list elements), and directive keys are honoured or dropped instead of stored.
const mergeKeys = {
  containers: ['name'], initContainers: ['name'], ephemeralContainers: ['name'], volumes: ['name'],
  env: ['name'], imagePullSecrets: ['name'], volumeMounts: ['mountPath'], volumeDevices: ['devicePath'],
  conditions: ['type'], ownerReferences: ['uid'], hostAliases: ['ip'], ports: ['containerPort', 'port'],
};
const mergedPrimitiveLists = new Set(['finalizers']);

export function strategicMergePatch(target, patch) {
  if (!isObject(patch)) return patch;
  if (patch.$patch === 'replace') return stripDirectives(patch);
  if (patch.$patch === 'delete') return undefined;
  const out = isObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith('$deleteFromPrimitiveList/')) {
      const field = key.slice('$deleteFromPrimitiveList/'.length);
      if (Array.isArray(out[field])) out[field] = out[field].filter((v) => !value.includes(v));
    } else if (key.startsWith('$')) {
      continue; // $setElementOrder, $retainKeys, $patch: ordering and pruning hints only
    } else if (value === null) {
      delete out[key];
    } else if (Array.isArray(value)) {
      out[key] = mergeList(key, out[key], value);
    } else {
      const merged = strategicMergePatch(out[key], value);
      if (merged === undefined) delete out[key];
      else out[key] = merged;
    }
  }
  return out;
}

function stripDirectives(value) {
  if (Array.isArray(value)) return value.map(stripDirectives);
  if (!isObject(value)) return value;
  return Object.fromEntries(Object.entries(value).filter(([k]) => !k.startsWith('$'))
    .map(([k, v]) => [k, stripDirectives(v)]));
}

function mergeList(field, current, patch) {
  if (mergedPrimitiveLists.has(field) && Array.isArray(current) && patch.every((v) => !isObject(v))) {
    return [...current, ...patch.filter((v) => !current.includes(v))];
  }
  const key = mergeKeyOf(field, current, patch);
  if (!key) return stripDirectives(patch);
  if (patch.some((e) => e.$patch === 'replace')) return stripDirectives(patch.filter((e) => e.$patch !== 'replace'));
  const out = [...current];
  for (const element of patch) {
    const at = out.findIndex((e) => e[key] === element[key]);
    if (element.$patch === 'delete') {
      if (at >= 0) out.splice(at, 1);
    } else if (at >= 0) {
      out[at] = strategicMergePatch(out[at], element);
    } else {
      out.push(stripDirectives(element));
    }
  }
  return out;
}

function mergeKeyOf(field, current, patch) {
  if (!Array.isArray(current) || !mergeKeys[field]) return null;
  const all = [...current, ...patch];
  if (!all.every(isObject)) return null;
  return mergeKeys[field].find((k) => all.every((e) => k in e || e.$patch)) ?? null;
}

// RFC 6902 with RFC 6901 pointers.
export function jsonPatch(doc, ops) {
  if (!Array.isArray(ops)) throw errors.badRequest('json: cannot unmarshal object into Go value of type jsonpatch.Patch');
  let out = structuredClone(doc);
  for (const op of ops) out = applyOperation(out, op);
  return out;
}

function parsePointer(pointer) {
  if (typeof pointer !== 'string' || (pointer !== '' && !pointer.startsWith('/'))) {
    throw patchFailed(`invalid JSON pointer "${pointer}"`);
  }
  return pointer === '' ? [] : pointer.slice(1).split('/').map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function patchFailed(message) {
  return errors.unprocessable(`the server rejected our request due to an error in our request: ${message}`);
}

function resolveParent(doc, tokens, pointer) {
  let node = doc;
  for (const t of tokens.slice(0, -1)) {
    node = Array.isArray(node) ? node[arrayIndex(node, t, false, pointer)] : isObject(node) ? node[t] : undefined;
    if (node === undefined) throw patchFailed(`path ${pointer} does not exist`);
  }
  if (!Array.isArray(node) && !isObject(node)) throw patchFailed(`path ${pointer} does not exist`);
  return node;
}

function arrayIndex(array, token, forInsert, pointer) {
  if (forInsert && token === '-') return array.length;
  if (!/^(0|[1-9]\d*)$/.test(token)) throw patchFailed(`invalid array index "${token}" in ${pointer}`);
  const i = Number(token);
  if (i > array.length || (!forInsert && i === array.length)) throw patchFailed(`index ${i} out of range in ${pointer}`);
  return i;
}

function getAt(doc, pointer) {
  const tokens = parsePointer(pointer);
  if (tokens.length === 0) return doc;
  const parent = resolveParent(doc, tokens, pointer);
  const last = tokens.at(-1);
  const value = Array.isArray(parent) ? parent[arrayIndex(parent, last, false, pointer)] : parent[last];
  if (value === undefined) throw patchFailed(`path ${pointer} does not exist`);
  return value;
}

function removeAt(doc, pointer) {
  const tokens = parsePointer(pointer);
  if (tokens.length === 0) throw patchFailed('cannot remove the whole document');
  const parent = resolveParent(doc, tokens, pointer);
  const last = tokens.at(-1);
  if (Array.isArray(parent)) {
    parent.splice(arrayIndex(parent, last, false, pointer), 1);
  } else {
    if (!(last in parent)) throw patchFailed(`path ${pointer} does not exist`);
    delete parent[last];
  }
  return doc;
}

function addAt(doc, pointer, value, replace) {
  const tokens = parsePointer(pointer);
  if (tokens.length === 0) return value;
  const parent = resolveParent(doc, tokens, pointer);
  const last = tokens.at(-1);
  if (Array.isArray(parent)) {
    const i = arrayIndex(parent, last, !replace, pointer);
    parent.splice(i, replace ? 1 : 0, value);
  } else {
    if (replace && !(last in parent)) throw patchFailed(`path ${pointer} does not exist`);
    parent[last] = value;
  }
  return doc;
}

function deepEqual(a, b) {
  return canonicalJson(a) === canonicalJson(b);
}

function applyOperation(doc, op) {
  if (!isObject(op)) throw patchFailed('each operation must be an object');
  switch (op.op) {
    case 'add': return addAt(doc, op.path, structuredClone(op.value), false);
    case 'replace': return addAt(doc, op.path, structuredClone(op.value), true);
    case 'remove': return removeAt(doc, op.path);
    case 'copy': return addAt(doc, op.path, structuredClone(getAt(doc, op.from)), false);
    case 'move': {
      const value = getAt(doc, op.from);
      return addAt(removeAt(doc, op.from), op.path, value, false);
    }
    case 'test':
      if (!deepEqual(getAt(doc, op.path), op.value)) throw patchFailed(`testing value ${op.path} failed`);
      return doc;
    default:
      throw patchFailed(`unexpected kind: ${op.op}`);
  }
}

// JSON with object keys sorted: equal documents give equal text whatever their key order.
export function canonicalJson(value) {
  return JSON.stringify(value, (_key, v) => (isObject(v)
    ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]])) : v));
}
