// Which resources the server serves, under which group versions: the built-in kinds the router
// reads plus one entry per established CustomResourceDefinition, and the discovery documents
// (legacy, non-aggregated shapes) derived from them.
//
// A resource definition ("def") is keyed by group and plural, independent of version:
//   { group, plural, singular, kind, listKind, namespaced, shortNames, categories, versions (served,
//     preferred first), verbs, status (has a /status subresource), builtin, generation
//     (metadata.generation is maintained), returnDeleted (DELETE answers with the object
//     rather than a Success Status), createOnUpdate (PUT may create), selectableFields }

const allVerbs = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

function builtin(group, version, plural, kind, more = {}) {
  return {
    group, plural, singular: kind.toLowerCase(), kind, listKind: `${kind}List`, namespaced: true,
    shortNames: [], versions: [version], verbs: allVerbs, status: false, builtin: true,
    generation: false, returnDeleted: false, createOnUpdate: false, selectableFields: [], ...more,
  };
}

// generation/returnDeleted/createOnUpdate follow the v1.32 registry strategies of each kind.
export const builtinDefs = [
  builtin('', 'v1', 'namespaces', 'Namespace', { namespaced: false, shortNames: ['ns'], status: true,
    returnDeleted: true, verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
    selectableFields: ['status.phase'] }),
  builtin('', 'v1', 'pods', 'Pod', { shortNames: ['po'], status: true, returnDeleted: true,
    selectableFields: ['spec.nodeName', 'spec.restartPolicy', 'spec.schedulerName', 'spec.serviceAccountName',
      'status.phase', 'status.podIP', 'status.nominatedNodeName'] }),
  builtin('', 'v1', 'services', 'Service', { shortNames: ['svc'], status: true, returnDeleted: true }),
  builtin('', 'v1', 'secrets', 'Secret', { selectableFields: ['type'] }),
  builtin('', 'v1', 'configmaps', 'ConfigMap', { shortNames: ['cm'] }),
  builtin('', 'v1', 'endpoints', 'Endpoints', { shortNames: ['ep'], singular: 'endpoints', createOnUpdate: true }),
  builtin('discovery.k8s.io', 'v1', 'endpointslices', 'EndpointSlice', { generation: true }),
  builtin('coordination.k8s.io', 'v1', 'leases', 'Lease'),
  builtin('apiextensions.k8s.io', 'v1', 'customresourcedefinitions', 'CustomResourceDefinition', {
    namespaced: false, shortNames: ['crd', 'crds'], status: true, generation: true, returnDeleted: true }),
];

// Kubernetes version order: GA before beta before alpha, higher numbers first, then the rest
// alphabetically (apimachinery's CompareKubeAwareVersionStrings).
function versionRank(v) {
  const m = /^v(\d+)(?:(alpha|beta)(\d+))?$/.exec(v);
  if (!m) return [3, 0, 0, v];
  const stage = m[2] === 'alpha' ? 2 : m[2] === 'beta' ? 1 : 0;
  return [stage, -Number(m[1]), -Number(m[3] ?? 0), v];
}

export function compareVersions(a, b) {
  const ra = versionRank(a);
  const rb = versionRank(b);
  for (let i = 0; i < 3; i++) if (ra[i] !== rb[i]) return ra[i] - rb[i];
  return ra[3] < rb[3] ? -1 : ra[3] > rb[3] ? 1 : 0;
}

// The def a CRD object describes, or null when it serves nothing.
export function defFromCrd(crd) {
  const { group, names = {}, scope, versions = [] } = crd.spec ?? {};
  const served = versions.filter((v) => v.served);
  if (!group || !names.plural || !names.kind || served.length === 0) return null;
  return {
    group, plural: names.plural, singular: names.singular || names.kind.toLowerCase(), kind: names.kind,
    listKind: names.listKind || `${names.kind}List`, namespaced: scope !== 'Cluster',
    shortNames: names.shortNames ?? [], categories: names.categories ?? [],
    versions: served.map((v) => v.name).sort(compareVersions),
    verbs: allVerbs, status: served.some((v) => v.subresources?.status !== undefined), builtin: false,
    generation: true, returnDeleted: false, createOnUpdate: false, selectableFields: [],
    crdName: crd.metadata.name,
  };
}

export class Registry {
  constructor() {
    this.defs = new Map(); // "group/plural" -> def
    for (const def of builtinDefs) this.defs.set(defKey(def), def);
  }

  // Replaces whatever the CRD served before; returns the keys whose def went away or changed.
  applyCrd(crdName, def) {
    const changed = [];
    for (const [key, d] of this.defs) {
      if (d.crdName === crdName) { this.defs.delete(key); changed.push(key); }
    }
    if (def) this.defs.set(defKey(def), def);
    return changed;
  }

  lookup(group, version, plural) {
    const def = this.defs.get(`${group}/${plural}`);
    return def && def.versions.includes(version) ? def : null;
  }

  byKind(apiVersion, kind) {
    const [group, version] = splitApiVersion(apiVersion);
    for (const def of this.defs.values()) {
      if (def.group === group && def.kind === kind && def.versions.includes(version)) return def;
    }
    return null;
  }

  groups() {
    const byGroup = new Map();
    for (const def of this.defs.values()) {
      if (!def.group) continue;
      const versions = byGroup.get(def.group) ?? new Set();
      def.versions.forEach((v) => versions.add(v));
      byGroup.set(def.group, versions);
    }
    return [...byGroup].map(([name, versions]) => ({ name, versions: [...versions].sort(compareVersions) }));
  }

  defsIn(group, version) {
    return [...this.defs.values()].filter((d) => d.group === group && d.versions.includes(version));
  }
}

export function defKey(def) {
  return `${def.group}/${def.plural}`;
}

export function splitApiVersion(apiVersion = '') {
  const slash = apiVersion.indexOf('/');
  return slash < 0 ? ['', apiVersion] : [apiVersion.slice(0, slash), apiVersion.slice(slash + 1)];
}

export function groupVersion(group, version) {
  return group ? `${group}/${version}` : version;
}

function groupDoc(name, versions) {
  const list = versions.map((version) => ({ groupVersion: `${name}/${version}`, version }));
  return { name, versions: list, preferredVersion: list[0] };
}

export const discovery = {
  apiVersions: (address) => ({
    kind: 'APIVersions', versions: ['v1'],
    serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: address }],
  }),
  apiGroupList: (registry) => ({
    kind: 'APIGroupList', apiVersion: 'v1',
    groups: registry.groups().map((g) => groupDoc(g.name, g.versions)),
  }),
  apiGroup: (registry, name) => {
    const group = registry.groups().find((g) => g.name === name);
    return group && { kind: 'APIGroup', apiVersion: 'v1', ...groupDoc(group.name, group.versions) };
  },
  apiResourceList: (registry, group, version) => {
    const defs = registry.defsIn(group, version);
    if (defs.length === 0) return null;
    const resources = [];
    for (const def of defs) {
      resources.push({
        name: def.plural, singularName: def.singular, namespaced: def.namespaced, kind: def.kind,
        verbs: def.verbs, ...(def.shortNames.length ? { shortNames: def.shortNames } : {}),
        ...(def.categories?.length ? { categories: def.categories } : {}),
      });
      if (def.status) {
        resources.push({ name: `${def.plural}/status`, singularName: '', namespaced: def.namespaced,
          kind: def.kind, verbs: ['get', 'patch', 'update'] });
      }
    }
    return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: groupVersion(group, version), resources };
  },
};
