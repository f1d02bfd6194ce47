// Minimal CustomResourceDefinitions for the kinds the router reads: the real names, scopes and
// versions, a status subresource on every version, and a schema that accepts anything (the
// fake API server does not validate custom objects against schemas).
//
// Sets, by short name or by API group:
//   gateway      gateway.networking.k8s.io      GatewayClass, Gateway, HTTPRoute, ReferenceGrant
//   inference    inference.networking.k8s.io    InferencePool (v1)
//   inference-x  inference.networking.x-k8s.io  InferencePool, InferenceObjective,
//                                               InferenceModelRewrite, InferenceModel (v1alpha2)
//   kthena       networking.serving.volcano.sh  ModelRoute, ModelServer, ExternalModelProvider
//
//   import { allCrds, crdSets, crdsFor } from './crds.mjs';
//   crdsFor(['gateway', 'inference'])  // the CRDs of those sets, in install order
//   crdsFor('all'), crdsFor('none')    // every CRD, none

const anySchema = { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } };

// versions: served version names, the first one stored.
function crd(group, kind, plural, versions, { scope = 'Namespaced', shortNames = [], categories } = {}) {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${plural}.${group}` },
    spec: {
      group,
      names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List`, shortNames, ...(categories ? { categories } : {}) },
      scope,
      versions: versions.map((name, i) => ({
        name, served: true, storage: i === 0, subresources: { status: {} }, schema: anySchema,
      })),
    },
  };
}

const gatewayGroup = 'gateway.networking.k8s.io';
const inferenceGroup = 'inference.networking.k8s.io';
const inferenceXGroup = 'inference.networking.x-k8s.io';
const kthenaGroup = 'networking.serving.volcano.sh';

export const crdSets = {
  gateway: [
    crd(gatewayGroup, 'GatewayClass', 'gatewayclasses', ['v1', 'v1beta1'], { scope: 'Cluster', shortNames: ['gc'] }),
    crd(gatewayGroup, 'Gateway', 'gateways', ['v1', 'v1beta1'], { shortNames: ['gtw'] }),
    crd(gatewayGroup, 'HTTPRoute', 'httproutes', ['v1', 'v1beta1']),
    crd(gatewayGroup, 'ReferenceGrant', 'referencegrants', ['v1beta1', 'v1'], { shortNames: ['refgrant'] }),
  ],
  inference: [
    crd(inferenceGroup, 'InferencePool', 'inferencepools', ['v1'], { shortNames: ['infpool'] }),
  ],
  'inference-x': [
    crd(inferenceXGroup, 'InferencePool', 'inferencepools', ['v1alpha2']),
    crd(inferenceXGroup, 'InferenceObjective', 'inferenceobjectives', ['v1alpha2']),
    crd(inferenceXGroup, 'InferenceModelRewrite', 'inferencemodelrewrites', ['v1alpha2']),
    crd(inferenceXGroup, 'InferenceModel', 'inferencemodels', ['v1alpha2']),
  ],
  // As deploy/kubernetes/crds/ ships them, less the schemas.
  kthena: [
    crd(kthenaGroup, 'ModelRoute', 'modelroutes', ['v1alpha1'], { shortNames: ['mr'], categories: ['kthena'] }),
    crd(kthenaGroup, 'ModelServer', 'modelservers', ['v1alpha1'], { shortNames: ['ms'], categories: ['kthena'] }),
    crd(kthenaGroup, 'ExternalModelProvider', 'externalmodelproviders', ['v1alpha1'], { shortNames: ['emp'], categories: ['kthena'] }),
  ],
};

const setByGroup = {
  [gatewayGroup]: 'gateway', [inferenceGroup]: 'inference', [inferenceXGroup]: 'inference-x', [kthenaGroup]: 'kthena',
};

export const allCrds = Object.values(crdSets).flat();

// names: 'all', 'none', or set names and/or API group names. Returns fresh copies.
export function crdsFor(names) {
  if (names === 'all') return structuredClone(allCrds);
  if (names === 'none' || names === undefined || names === null) return [];
  const list = typeof names === 'string' ? names.split(',') : names;
  const sets = new Set(list.map((n) => {
    const set = crdSets[n] ? n : setByGroup[n];
    if (!set) throw new Error(`unknown CRD set or group "${n}" (sets: ${Object.keys(crdSets).join(', ')})`);
    return set;
  }));
  return structuredClone(Object.keys(crdSets).filter((s) => sets.has(s)).flatMap((s) => crdSets[s]));
}
