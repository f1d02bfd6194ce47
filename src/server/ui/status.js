// The admin status page: polls the admin JSON endpoints of the origin it came from and
// renders them. Every value is set as text (textContent), never parsed as HTML: object names,
// request ids and engine errors are whatever the cluster and its clients sent.
'use strict';

const params = new URLSearchParams(location.search);
const interval = Math.max(100, Number(params.get('interval')) || 2000);
let previousTraffic = null;  // {at, series: Map}
let paused = false;  // the Pause button: the page keeps what it shows until resumed
let timer = null;
let refreshing = false;  // one refresh at a time, whatever the button does meanwhile

// el('td', {class: 'num', data: {field: 'x'}}, 'text', child...)
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'data') {
      for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = String(dv);
    } else if (k === 'class') {
      e.className = v;
    } else if (v !== undefined && v !== null) {
      e.setAttribute(k, String(v));
    }
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function table(headers, rows, empty) {
  if (rows.length === 0) return el('p', { class: 'empty' }, empty);
  const head = el('tr', {}, ...headers.map((h) => el('th', { class: h.startsWith('#') ? 'num' : '' },
    h.replace(/^#/, ''))));
  return el('table', {}, el('thead', {}, head), el('tbody', {}, ...rows));
}

function fill(id, ...nodes) {
  const body = document.querySelector(`#${id} .body`);
  body.replaceChildren(...nodes);
}

const fmtNum = (v, digits = 0) => (v === null || v === undefined || Number.isNaN(v) ? '–'
  : Number(v).toFixed(digits));
const fmtPct = (v) => (v === null || v === undefined || Number.isNaN(v) ? '–' : `${(v * 100).toFixed(1)}%`);
const fmtMs = (seconds) => (seconds === null || seconds === undefined || Number.isNaN(seconds) ? '–'
  : `${(seconds * 1000).toFixed(1)} ms`);

async function getJson(path) {
  const r = await fetch(path, { cache: 'no-store' });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function condition(c) {
  const status = c.status === 'True' || c.status === 'False' ? c.status : 'Unknown';
  const title = [c.reason, c.message].filter((x) => x).join(': ');
  return el('span', { class: 'cond', title, data: { type: c.type, status } }, c.type);
}

function renderGateways(status) {
  const rows = [];
  for (const o of status.objects) {
    const where = [];
    for (const l of o.listeners || []) {
      where.push(el('div', { class: 'sub', data: { listener: l.name } },
        `listener ${l.name} (${l.attachedRoutes} route(s)) `, ...l.conditions.map(condition)));
    }
    for (const p of o.parents || []) {
      where.push(el('div', { class: 'sub', data: { parent: p.parentRef } },
        `${p.parentRef} `, ...p.conditions.map(condition)));
    }
    const errors = (o.errors || []).map((e) => el('div', { class: 'error' }, e));
    rows.push(el('tr', { data: { object: o.object } },
      el('td', { class: 'mono' }, o.object),
      el('td', { class: 'conditions' }, ...o.conditions.map(condition)),
      el('td', { class: 'wrap' }, ...where, ...errors)));
  }
  fill('gateways', table(['Object', 'Conditions', 'Listeners, parents, errors'], rows,
    'No Kubernetes objects: the router serves the models of its configuration file.'));
}

function kvCell(kv) {
  if (kv === null || kv === undefined) return el('td', { class: 'num', data: { field: 'kv_usage' } }, '–');
  const bar = el('span', { class: kv > 0.9 ? 'bar hot' : 'bar' }, el('span'));
  bar.firstChild.style.width = `${Math.min(100, Math.max(0, kv * 100))}%`;
  return el('td', { class: 'num', data: { field: 'kv_usage', value: kv } }, bar, fmtPct(kv));
}

function endpointRow(ep, picks) {
  const s = ep.scrape;
  const health = ep.ejected ? ['ejected', 'bad'] : !s ? ['not scraped', 'unknown']
    : !s.healthy ? ['unhealthy', 'bad'] : !s.scraped ? ['waiting', 'unknown'] : ['healthy', 'ok'];
  const cls = ep.ejected ? 'ejected' : s && !s.healthy ? 'unhealthy' : '';
  const num = (field, v, digits) => el('td', { class: 'num', data: { field, value: v ?? '' } }, fmtNum(v, digits));
  return el('tr', { class: cls, data: { endpoint: ep.address } },
    el('td', { class: 'mono' }, ep.address),
    el('td', { data: { field: 'health' } }, el('span', { class: 'pill', data: { state: health[1] } }, health[0])),
    num('waiting', s ? s.waiting : null),
    num('running', s ? s.running : null),
    kvCell(s ? s.kv_usage : null),
    num('in_flight', ep.in_flight),
    num('picks', picks ?? 0),
    num('failures', ep.consecutive_failures),
    el('td', { class: 'num', data: { field: 'ejected' } },
      ep.ejected ? `${ep.ejected_seconds.toFixed(1)} s left` : ep.ejections ? `${ep.ejections}×` : '–'),
    el('td', { class: 'num', data: { field: 'ttft' } }, fmtMs(s ? s.ttft_seconds : null)),
    el('td', { class: 'num', data: { field: 'age' } },
      s && s.age_seconds !== null ? `${s.age_seconds.toFixed(1)} s` : '–'),
    el('td', { class: 'wrap error', data: { field: 'last_error' } }, s ? s.last_error : ''));
}

function renderPools(pools, picks) {
  const cards = [];
  for (const p of pools.pools) {
    const key = p.kind === 'models' ? `models/${p.name}` : `${p.kind}/${p.name}`;
    const meta = p.kind === 'models' ? [`model ${p.model}`] : [];
    if (p.upstream_model) meta.push(`sent as ${p.upstream_model}`);
    if (p.engine) meta.push(p.engine);
    meta.push(p.protocol);
    if (p.provider) meta.push(`provider ${p.provider}`);
    const parts = [el('h3', {}, key, el('span', { class: 'meta' }, meta.join(' · ')))];
    if (p.error) parts.push(el('p', { class: 'error' }, p.error));
    if (p.endpoint_picker) {
      const ep = p.endpoint_picker;
      parts.push(el('p', { class: 'sub' }, `endpoint picker ${ep.service} at `
        + `${ep.endpoints.join(', ') || 'no endpoints'} (${ep.fail_open ? 'FailOpen' : 'FailClose'}`
        + `${ep.tls ? ', TLS' : ''})`));
    }
    const rows = p.endpoints.map((ep) => endpointRow(ep, picks[ep.address]));
    parts.push(table(['Endpoint', 'Health', '#Queue', '#Running', '#KV cache', '#In flight',
      '#Picks', '#Failures', '#Ejection', '#TTFT', '#Scraped', 'Last error'], rows,
    p.provider ? 'An external provider: no endpoints to show.' : 'No ready endpoints.'));
    cards.push(el('div', { class: p.error ? 'card broken' : 'card', data: { pool: key } }, ...parts));
  }
  if (!pools.metrics_fetcher) {
    cards.unshift(el('p', { class: 'hint' }, 'The metrics fetcher is off: no engine signals.'));
  }
  fill('pools', ...(cards.length ? cards : [el('p', { class: 'empty' }, 'No backends.')]));
}

function seriesKey(s) {
  return [s.model, s.gateway, s.route, s.backend].join('\u001f');
}

function renderTraffic(traffic) {
  const now = performance.now();
  const before = previousTraffic;
  const seconds = before ? (now - before.at) / 1000 : 0;
  const rows = [];
  const byKey = new Map();
  for (const s of traffic.series) {
    const key = seriesKey(s);
    byKey.set(key, s);
    const p = before ? before.series.get(key) : null;
    const d = (f) => (p ? s[f] - p[f] : before ? s[f] : NaN);
    const requests = d('requests');
    const rate = seconds > 0 ? requests / seconds : NaN;
    const ratio = (f) => (requests > 0 ? d(f) / requests : NaN);
    const mean = (sum, count) => (d(count) > 0 ? d(sum) / d(count) : NaN);
    rows.push(el('tr', { data: { series: key, backend: s.backend, model: s.model } },
      el('td', { class: 'mono' }, s.model),
      el('td', { class: 'mono' }, s.gateway || '–'),
      el('td', { class: 'mono' }, s.route || '–'),
      el('td', { class: 'mono' }, s.backend || '–'),
      el('td', { class: 'num', data: { field: 'rate' } }, fmtNum(rate, 2)),
      el('td', { class: 'num', data: { field: 'errors_4xx' } }, fmtPct(ratio('status_4xx'))),
      el('td', { class: 'num', data: { field: 'errors_5xx' } }, fmtPct(ratio('status_5xx'))),
      el('td', { class: 'num' }, fmtMs(mean('duration_sum', 'duration_count'))),
      el('td', { class: 'num' }, fmtMs(mean('ttft_sum', 'ttft_count'))),
      el('td', { class: 'num', data: { field: 'requests' } }, s.requests),
      el('td', { class: 'num', data: { field: 'total_5xx' } }, s.status_5xx),
      el('td', { class: 'num' }, `${s.input_tokens} / ${s.output_tokens}`)));
  }
  previousTraffic = { at: now, series: byKey };
  fill('traffic', el('p', { class: 'sub' }, `${traffic.active_requests} request(s) in progress`),
    table(['Model', 'Gateway', 'Route', 'Backend', '#Req/s', '#4xx', '#5xx', '#Latency', '#TTFT',
      '#Requests', '#5xx total', '#Tokens in / out'], rows, 'No requests yet.'));
}

function renderDecisions(d) {
  const list = d.decisions.slice(-30).reverse();
  const rows = list.map((x) => {
    const top = x.decision.candidates.slice(0, 3)
      .map((c) => `${c.endpoint} ${c.total.toFixed(3)}`).join(', ');
    return el('tr', { data: { request: x.request_id } },
      el('td', { class: 'mono wrap' }, x.request_id),
      el('td', { class: 'mono' }, x.model),
      el('td', {}, x.decision.profile),
      el('td', { class: 'mono wrap' }, top),
      el('td', { class: 'wrap' }, x.decision.summary),
      el('td', { class: 'num' }, x.worker));
  });
  fill('decisions', table(['Request', 'Backend', 'Profile', 'Best candidates (score)', 'Why', '#Worker'],
    rows, 'No decisions recorded. Set scheduler.decisions (N) in the configuration to keep the last '
    + 'N per worker.'));
}

function renderReloads(r) {
  const rows = r.reloads.map((x) => {
    const problems = [...x.appeared.map((p) => el('div', { class: 'error' }, `+ ${p}`)),
      ...x.resolved.map((p) => el('div', { class: 'sub' }, `resolved: ${p}`))];
    return el('tr', { data: { trigger: x.trigger, applied: x.applied } },
      el('td', { class: 'mono' }, new Date(x.unix_ms).toISOString().replace('T', ' ').slice(0, 23)),
      el('td', {}, x.trigger),
      el('td', {}, el('span', { class: 'pill', data: { state: x.applied ? 'ok' : 'bad' } },
        x.applied ? 'applied' : 'refused')),
      el('td', { class: 'num' }, x.version),
      el('td', { class: 'num' }, x.duration_ms.toFixed(1)),
      el('td', { class: 'wrap' }, x.detail, ...problems));
  });
  fill('reloads', el('p', { class: 'sub' }, `${r.total} change(s) since start; the last `
    + `${r.reloads.length} shown`), table(['Time (UTC)', 'Trigger', 'Result', '#Version', '#ms',
    'Detail and problems'], rows, 'No reloads yet.'));
}

function setPill(id, state, text) {
  const e = document.getElementById(id);
  e.dataset.state = state;
  e.textContent = text;
}

// One section's fetch and render; a failure shows in that section and on the header.
async function section(id, path, render) {
  try {
    render(await getJson(path));
    return true;
  } catch (e) {
    fill(id, el('p', { class: 'error' }, `cannot load ${path}: ${e.message}`));
    return false;
  }
}

async function refresh() {
  refreshing = true;
  timer = null;
  const ready = fetch('/readyz', { cache: 'no-store' }).then(async (r) => {
    const text = (await r.text()).trim();
    setPill('ready', r.ok ? 'ok' : 'warn', text);
  }).catch(() => setPill('ready', 'bad', 'unreachable'));
  let picks = {};
  const traffic = section('traffic', '/debug/traffic', (t) => { picks = t.picks; renderTraffic(t); });
  const results = await Promise.all([
    section('gateways', '/debug/status', renderGateways),
    traffic.then(() => section('pools', '/debug/pools', (p) => {
      renderPools(p, picks);
      document.getElementById('version').textContent = `configuration version ${p.version}`;
    })),
    section('decisions', '/debug/decisions', renderDecisions),
    section('reloads', '/debug/reloads', renderReloads),
    traffic,
    ready,
  ]);
  const ok = results.slice(0, 5).every((x) => x);
  if (paused) setPill('live', 'warn', 'paused');
  else setPill('live', ok ? 'ok' : 'bad', ok ? 'live' : 'admin unreachable');
  document.getElementById('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
  document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  refreshing = false;
  if (!paused) timer = setTimeout(refresh, interval);
}

document.getElementById('pause').addEventListener('click', (e) => {
  paused = !paused;
  e.target.setAttribute('aria-pressed', String(paused));
  e.target.textContent = paused ? 'Resume' : 'Pause';
  if (paused) {
    clearTimeout(timer);
    timer = null;
    setPill('live', 'warn', 'paused');
  } else if (timer === null && !refreshing) {
    refresh();
  }
});

refresh();
