// Label and field selectors with the syntax kube-apiserver accepts (k8s.io/apimachinery
// labels.Parse and fields.ParseSelector), parsed once per request into predicates.
import { errors } from './errors.mjs';

const keyPattern = '[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?';
const valuePattern = '([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?';
const setTerm = new RegExp(`^(${keyPattern})\\s+(in|notin)\\s+\\(([^()]*)\\)$`);
const equalityTerm = new RegExp(`^(${keyPattern})\\s*(==|=|!=)\\s*(${valuePattern})$`);
const numericTerm = new RegExp(`^(${keyPattern})\\s*(>|<)\\s*(-?\\d+)$`);
const existsTerm = new RegExp(`^(!?)\\s*(${keyPattern})$`);
const valueOnly = new RegExp(`^${valuePattern}$`);

// Commas separate requirements except inside the parentheses of a set.
function splitTopLevel(text) {
  const parts = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '(') depth++;
    else if (text[i] === ')') depth--;
    else if (text[i] === ',' && depth === 0) { parts.push(text.slice(start, i)); start = i + 1; }
  }
  parts.push(text.slice(start));
  return parts.map((p) => p.trim());
}

function parseRequirement(term, selector) {
  let m = setTerm.exec(term);
  if (m) {
    const values = m[4].split(',').map((v) => v.trim()).filter((v) => v !== '');
    if (values.some((v) => !valueOnly.test(v))) throw badLabelSelector(selector);
    const set = new Set(values);
    return m[3] === 'in' ? (l) => set.has(l[m[1]]) : (l) => !(m[1] in l) || !set.has(l[m[1]]);
  }
  m = equalityTerm.exec(term);
  if (m) {
    const [, key, , op, value] = m;
    return op === '!=' ? (l) => l[key] !== value : (l) => key in l && l[key] === value;
  }
  m = numericTerm.exec(term);
  if (m) {
    const [, key, , op, n] = m;
    const bound = Number(n);
    return (l) => key in l && /^-?\d+$/.test(l[key]) && (op === '>' ? Number(l[key]) > bound : Number(l[key]) < bound);
  }
  m = existsTerm.exec(term);
  if (m) {
    const [, not, key] = m;
    return not ? (l) => !(key in l) : (l) => key in l;
  }
  throw badLabelSelector(selector);
}

function badLabelSelector(selector) {
  return errors.badRequest(`unable to parse requirement: found '${selector}', expected: in, notin, =, ==, !=, gt, lt`);
}

// Returns a predicate on an object's labels, or null when the selector selects everything.
export function parseLabelSelector(selector) {
  if (!selector || !selector.trim()) return null;
  const reqs = splitTopLevel(selector).map((t) => {
    if (t === '') throw badLabelSelector(selector);
    return parseRequirement(t, selector);
  });
  return (labels) => reqs.every((r) => r(labels ?? {}));
}

function fieldValue(obj, path) {
  let v = obj;
  for (const part of path.split('.')) v = v?.[part];
  return v === undefined || v === null ? '' : String(v);
}

// `allowed` lists the fields a resource supports beyond metadata.name and metadata.namespace.
export function parseFieldSelector(selector, allowed = []) {
  if (!selector || !selector.trim()) return null;
  const supported = new Set(['metadata.name', 'metadata.namespace', ...allowed]);
  const reqs = selector.split(',').map((term) => {
    const m = /^\s*([A-Za-z0-9.]+)\s*(==|=|!=)\s*(.*?)\s*$/.exec(term);
    if (!m) throw errors.badRequest(`invalid selector: '${selector}'; can't understand '${term}'`);
    const [, field, op, value] = m;
    if (!supported.has(field)) throw errors.badRequest(`field label not supported: ${field}`);
    return op === '!=' ? (o) => fieldValue(o, field) !== value : (o) => fieldValue(o, field) === value;
  });
  return (obj) => reqs.every((r) => r(obj));
}

// One predicate on whole objects from both selectors (null: everything matches).
export function objectFilter(query, def) {
  const labels = parseLabelSelector(query.get('labelSelector'));
  const fields = parseFieldSelector(query.get('fieldSelector'), def.selectableFields);
  if (!labels && !fields) return null;
  return (obj) => (!labels || labels(obj.metadata?.labels)) && (!fields || fields(obj));
}
