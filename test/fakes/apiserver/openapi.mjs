// A minimal OpenAPI v3 index: one document per group version whose object paths carry PATCH
// operations tagged with their group-version-kind and a fieldValidation parameter. That is all
// kubectl (1.27+) reads to conclude that the server validates fields itself, so `kubectl apply`
// works without --validate=false and sends fieldValidation=Strict instead of downloading
// schemas. No schemas are served: kubectl then builds patches from its compiled-in types.
import { createHash } from 'node:crypto';

function gvPath(group, version) {
  return group ? `apis/${group}/${version}` : `api/${version}`;
}

function objectPath(def, version) {
  const base = `/${gvPath(def.group, version)}`;
  return def.namespaced ? `${base}/namespaces/{namespace}/${def.plural}/{name}` : `${base}/${def.plural}/{name}`;
}

function patchOperation(def, version) {
  return {
    'x-kubernetes-group-version-kind': { group: def.group, kind: def.kind, version },
    parameters: [{ name: 'fieldValidation', in: 'query', schema: { type: 'string', uniqueItems: true } }],
    responses: { 200: { description: 'OK' } },
  };
}

export function groupVersionDoc(registry, group, version) {
  const defs = registry.defsIn(group, version);
  if (defs.length === 0) return null;
  const paths = {};
  for (const def of defs) {
    paths[objectPath(def, version)] = { patch: patchOperation(def, version) };
    if (def.status) paths[`${objectPath(def, version)}/status`] = { patch: patchOperation(def, version) };
  }
  return { openapi: '3.0.0', info: { title: 'Kubernetes', version: 'v1.32.0' }, paths, components: { schemas: {} } };
}

export function openApiIndex(registry) {
  const gvs = [{ group: '', version: 'v1' }];
  for (const g of registry.groups()) for (const version of g.versions) gvs.push({ group: g.name, version });
  const paths = {};
  for (const { group, version } of gvs) {
    const hash = createHash('sha256').update(JSON.stringify(groupVersionDoc(registry, group, version))).digest('hex').slice(0, 32).toUpperCase();
    paths[gvPath(group, version)] = { serverRelativeURL: `/openapi/v3/${gvPath(group, version)}?hash=${hash}` };
  }
  return { paths };
}

// `/openapi/v3/api/v1` or `/openapi/v3/apis/g/v` -> { group, version }, else null.
export function parseOpenApiPath(pathname) {
  const m = /^\/openapi\/v3\/(?:api\/([^/]+)|apis\/([^/]+)\/([^/]+))$/.exec(pathname);
  if (!m) return null;
  return m[1] ? { group: '', version: m[1] } : { group: m[2], version: m[3] };
}
