// The YAML that Kubernetes manifests use: block mappings and sequences, plain and quoted
// scalars, literal/folded block scalars, flow collections, comments, and `---` documents.
// Anchors, tags and multi-line plain scalars are not supported (they throw).

export class YamlError extends Error {}

// Every document of a stream; JSON text parses too, since JSON is YAML.
export function parseYamlDocuments(text) {
  const docs = [];
  let current = [];
  for (const raw of text.split(/\r?\n/)) {
    if (/^---(\s|$)/.test(raw) || /^\.\.\.(\s|$)/.test(raw)) {
      docs.push(current);
      current = [];
      const rest = raw.slice(3).trim();
      if (rest && !rest.startsWith('#')) current.push(rest);
    } else {
      current.push(raw);
    }
  }
  docs.push(current);
  return docs.map((lines) => new BlockParser(lines).document()).filter((d) => d !== undefined);
}

export function parseYaml(text) {
  const docs = parseYamlDocuments(text);
  if (docs.length > 1) throw new YamlError('expected a single YAML document');
  return docs[0] ?? null;
}

// A `#` starts a comment at the line start or after whitespace, outside quotes.
function stripComment(line) {
  let quote = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = null;
    } else if (c === '"' || c === "'") {
      quote = c;
    } else if (c === '#' && (i === 0 || /\s/.test(line[i - 1]))) {
      return line.slice(0, i).trimEnd();
    }
  }
  return line.trimEnd();
}

class BlockParser {
  constructor(lines) {
    this.raw = lines;
    this.lines = lines.map((text, n) => {
      const body = stripComment(text);
      return { n, indent: body.length - body.trimStart().length, text: body.trim() };
    }).filter((l) => l.text !== '');
    this.i = 0;
  }

  document() {
    if (this.lines.length === 0) return undefined;
    const value = this.node(this.lines[0].indent);
    if (this.i < this.lines.length) throw new YamlError(`unexpected content at line ${this.lines[this.i].n + 1}`);
    return value;
  }

  node(indent) {
    const line = this.lines[this.i];
    if (!line || line.indent < indent) return null;
    if (isSequenceItem(line.text)) return this.sequence(line.indent);
    if (splitKey(line.text)) return this.mapping(line.indent);
    this.i++;
    return parseInline(line.text);
  }

  sequence(indent) {
    const out = [];
    while (this.i < this.lines.length) {
      const line = this.lines[this.i];
      if (line.indent !== indent || !isSequenceItem(line.text)) break;
      const rest = line.text.slice(1).trimStart();
      if (rest === '') {
        this.i++;
        out.push(this.node(indent + 1));
      } else {
        // "- key: v" opens a nested node at the column of its content.
        const column = line.indent + line.text.length - rest.length;
        this.lines[this.i] = { n: line.n, indent: column, text: rest };
        out.push(this.node(column));
      }
    }
    return out;
  }

  mapping(indent) {
    const out = {};
    while (this.i < this.lines.length) {
      const line = this.lines[this.i];
      if (line.indent !== indent || isSequenceItem(line.text)) break;
      const kv = splitKey(line.text);
      if (!kv) throw new YamlError(`expected a mapping key at line ${line.n + 1}`);
      this.i++;
      out[kv.key] = this.mappingValue(kv.rest, line);
    }
    return out;
  }

  mappingValue(rest, line) {
    if (/^[|>][-+]?$/.test(rest)) return this.blockScalar(rest, line);
    if (rest !== '') return parseInline(rest);
    const next = this.lines[this.i];
    if (!next) return null;
    // A sequence may sit at the same indentation as its key.
    if (next.indent > line.indent || (next.indent === line.indent && isSequenceItem(next.text))) {
      return this.node(next.indent);
    }
    return null;
  }

  // The raw lines (comments are content here) after the key that are blank or deeper than it.
  blockScalar(header, line) {
    const body = [];
    let r = line.n + 1;
    for (; r < this.raw.length; r++) {
      const text = this.raw[r];
      if (text.trim() !== '' && indentOf(text) <= line.indent) break;
      body.push(text);
    }
    while (this.i < this.lines.length && this.lines[this.i].n < r) this.i++;
    const indents = body.filter((t) => t.trim() !== '').map(indentOf);
    const indent = indents.length ? Math.min(...indents) : 0;
    const lines = body.map((t) => (t.trim() === '' ? '' : t.slice(indent)));
    let trailing = 0;
    while (lines.length && lines.at(-1) === '') { lines.pop(); trailing++; }
    const text = header[0] === '|' ? lines.join('\n') : foldLines(lines);
    if (header[1] === '-' || lines.length === 0) return text;
    return text + (header[1] === '+' ? '\n'.repeat(trailing + 1) : '\n');
  }
}

function indentOf(text) {
  return text.length - text.trimStart().length;
}

function foldLines(lines) {
  return lines.reduce((acc, l, k) => (k === 0 ? l : acc + (l === '' || lines[k - 1] === '' ? '\n' : ' ') + l), '');
}

function isSequenceItem(text) {
  return text === '-' || text.startsWith('- ');
}

// "key: rest" with a plain or quoted key; null when the line is not a mapping entry.
function splitKey(text) {
  if (text[0] === '"' || text[0] === "'") {
    const end = quotedEnd(text, 0);
    if (end < 0 || text[end + 1] !== ':' || !(end + 2 === text.length || text[end + 2] === ' ')) return null;
    return { key: parseQuoted(text.slice(0, end + 1)), rest: text.slice(end + 2).trim() };
  }
  if (text[0] === '{' || text[0] === '[') return null;
  const m = /^([^:#]*?[^\s:])\s*:(?:\s+(.*)|$)/.exec(text);
  return m ? { key: m[1], rest: (m[2] ?? '').trim() } : null;
}

function quotedEnd(text, start) {
  const q = text[start];
  for (let i = start + 1; i < text.length; i++) {
    if (q === '"' && text[i] === '\\') i++;
    else if (text[i] === q) {
      if (q === "'" && text[i + 1] === "'") i++;
      else return i;
    }
  }
  return -1;
}

function parseQuoted(token) {
  if (token[0] === "'") return token.slice(1, -1).replace(/''/g, "'");
  try {
    return JSON.parse(token);
  } catch {
    throw new YamlError(`bad double-quoted scalar ${token}`);
  }
}

function parsePlain(token) {
  if (token === '' || token === '~' || token === 'null' || token === 'Null' || token === 'NULL') return null;
  if (/^(true|True|TRUE)$/.test(token)) return true;
  if (/^(false|False|FALSE)$/.test(token)) return false;
  if (/^[-+]?(0|[1-9]\d*)$/.test(token)) return Number(token);
  if (/^[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$/.test(token)) return Number(token);
  if (/^[&*!]/.test(token)) throw new YamlError(`anchors, aliases and tags are not supported: ${token}`);
  return token;
}

function parseInline(text) {
  if (text[0] === '{' || text[0] === '[') {
    const flow = new FlowParser(text);
    const value = flow.value();
    flow.skipSpace();
    if (flow.i !== text.length) throw new YamlError(`trailing characters after ${text}`);
    return value;
  }
  if (text[0] === '"' || text[0] === "'") {
    if (quotedEnd(text, 0) !== text.length - 1) throw new YamlError(`bad quoted scalar ${text}`);
    return parseQuoted(text);
  }
  return parsePlain(text);
}

class FlowParser {
  constructor(text) {
    this.text = text;
    this.i = 0;
  }

  skipSpace() {
    while (/\s/.test(this.text[this.i] ?? '')) this.i++;
  }

  value() {
    this.skipSpace();
    const c = this.text[this.i];
    if (c === '{') return this.collection('}', true);
    if (c === '[') return this.collection(']', false);
    if (c === '"' || c === "'") {
      const end = quotedEnd(this.text, this.i);
      if (end < 0) throw new YamlError('unterminated quoted scalar');
      const token = this.text.slice(this.i, end + 1);
      this.i = end + 1;
      return parseQuoted(token);
    }
    const m = /^[^,{}[\]]*/.exec(this.text.slice(this.i));
    const token = m[0].trim();
    this.i += m[0].length;
    return parsePlain(token);
  }

  collection(close, isMap) {
    this.i++;
    const out = isMap ? {} : [];
    for (;;) {
      this.skipSpace();
      if (this.text[this.i] === close) { this.i++; return out; }
      if (isMap) this.entry(out);
      else out.push(this.value());
      this.skipSpace();
      if (this.text[this.i] === ',') this.i++;
      else if (this.text[this.i] !== close) throw new YamlError(`expected , or ${close} in ${this.text}`);
    }
  }

  entry(out) {
    this.skipSpace();
    let key;
    if (this.text[this.i] === '"' || this.text[this.i] === "'") {
      key = this.value();
    } else {
      const m = /^[^,:{}[\]]*/.exec(this.text.slice(this.i));
      key = m[0].trim();
      this.i += m[0].length;
    }
    this.skipSpace();
    if (this.text[this.i] !== ':') throw new YamlError(`expected : after key ${key}`);
    this.i++;
    out[String(key)] = this.value();
  }
}

// Block YAML out of plain data, strings always double-quoted (JSON escapes are valid YAML).
export function toYaml(value, indent = 0) {
  const pad = ' '.repeat(indent);
  if (Array.isArray(value)) {
    if (value.length === 0) return `${pad}[]\n`;
    return value.map((v) => {
      if (isContainer(v) && !isEmpty(v)) return `${pad}- ${toYaml(v, indent + 2).trimStart()}`;
      return `${pad}- ${scalarYaml(v)}\n`;
    }).join('');
  }
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value);
    if (entries.length === 0) return `${pad}{}\n`;
    return entries.map(([k, v]) => (isContainer(v) && !isEmpty(v)
      ? `${pad}${k}:\n${toYaml(v, Array.isArray(v) ? indent : indent + 2)}`
      : `${pad}${k}: ${scalarYaml(v)}\n`)).join('');
  }
  return `${pad}${scalarYaml(value)}\n`;
}

function isContainer(v) {
  return v !== null && typeof v === 'object';
}

function isEmpty(v) {
  return Array.isArray(v) ? v.length === 0 : Object.keys(v).length === 0;
}

function scalarYaml(v) {
  if (Array.isArray(v)) return '[]';
  if (v !== null && typeof v === 'object') return '{}';
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}
