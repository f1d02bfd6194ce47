// Kubernetes API errors as the real server reports them: every failure is a meta/v1 Status
// whose code, reason, message and details match what kube-apiserver sends, because clients
// (kubectl, client-go, the router's own client) branch on reason and code, not on text.

const reasonByCode = {
  400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound',
  405: 'MethodNotAllowed', 406: 'NotAcceptable', 409: 'Conflict', 410: 'Gone',
  413: 'RequestEntityTooLarge', 415: 'UnsupportedMediaType', 422: 'Invalid',
  429: 'TooManyRequests', 500: 'InternalError', 503: 'ServiceUnavailable', 504: 'Timeout',
};

export function reasonFor(code) {
  return reasonByCode[code] ?? (code >= 500 ? 'InternalError' : 'BadRequest');
}

export function failureStatus(code, reason, message, details) {
  const status = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason };
  if (details) status.details = details;
  status.code = code;
  return status;
}

export class ApiError extends Error {
  constructor(code, reason, message, details) {
    super(message);
    this.code = code;
    this.reason = reason;
    this.details = details;
  }

  toStatus() {
    return failureStatus(this.code, this.reason, this.message, this.details);
  }
}

// "pods" for the core group, "httproutes.gateway.networking.k8s.io" otherwise, as in messages.
export function qualifiedResource(def) {
  return def.group ? `${def.plural}.${def.group}` : def.plural;
}

function resourceDetails(def, name) {
  const details = { name };
  if (def.group) details.group = def.group;
  details.kind = def.plural;
  return details;
}

export const errors = {
  badRequest: (message) => new ApiError(400, 'BadRequest', message),
  unauthorized: () => new ApiError(401, 'Unauthorized', 'Unauthorized'),
  notFoundPath: () => new ApiError(404, 'NotFound', 'the server could not find the requested resource', {}),
  notFound: (def, name) =>
    new ApiError(404, 'NotFound', `${qualifiedResource(def)} "${name}" not found`, resourceDetails(def, name)),
  namespaceNotFound: (ns) =>
    new ApiError(404, 'NotFound', `namespaces "${ns}" not found`, { name: ns, kind: 'namespaces' }),
  methodNotAllowed: () =>
    new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource', {}),
  alreadyExists: (def, name) =>
    new ApiError(409, 'AlreadyExists', `${qualifiedResource(def)} "${name}" already exists`, resourceDetails(def, name)),
  conflict: (def, name, why) =>
    new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${qualifiedResource(def)} "${name}": ${why}`,
      resourceDetails(def, name)),
  stale: (def, name) => errors.conflict(def, name,
    'the object has been modified; please apply your changes to the latest version and try again'),
  expired: (message) => new ApiError(410, 'Expired', message),
  tooLarge: (limit) => new ApiError(413, 'RequestEntityTooLarge', `Request entity too large: limit is ${limit}`),
  unsupportedMediaType: (accepted) => new ApiError(415, 'UnsupportedMediaType',
    `the body of the request was in an unknown format - accepted media types include: ${accepted.join(', ')}`),
  // causes: [{ field, message }] as field.ErrorList renders them.
  invalid: (def, name, causes) => {
    const kind = def.group ? `${def.kind}.${def.group}` : def.kind;
    const text = causes.map((c) => `${c.field}: ${c.message}`).join(', ');
    const details = { name, ...(def.group ? { group: def.group } : {}), kind: def.kind,
      causes: causes.map((c) => ({ reason: c.reason ?? 'FieldValueInvalid', message: c.message, field: c.field })) };
    return new ApiError(422, 'Invalid', `${kind} "${name}" is invalid: ${text}`, details);
  },
  unprocessable: (message) => new ApiError(422, 'Invalid', message),
  injected: (code) => {
    const reason = reasonFor(code);
    const details = code === 429 ? { retryAfterSeconds: 1 } : undefined;
    return new ApiError(code, reason, `injected failure (${code} ${reason})`, details);
  },
};
