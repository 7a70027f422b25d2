// simcache web console. No framework and no build step: pages are built
// with DOM calls (never HTML strings with data in them), plots arrive from
// the server as SVG, and every state-changing request carries the CSRF
// token the login handed out.
'use strict';

const app = document.getElementById('app');
let me = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options) {
  const opts = Object.assign({ credentials: 'same-origin', headers: {} }, options || {});
  if (opts.method && opts.method !== 'GET') {
    opts.headers['X-CSRF-Token'] = me ? me.csrf : '';
    if (opts.body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(opts.body);
    }
  }
  const res = await fetch(path, opts);
  const type = res.headers.get('content-type') || '';
  const body = type.includes('json') ? await res.json() : await res.text();
  if (!res.ok) {
    if (res.status === 401) showLogin();
    throw new HttpError(res.status, (body && body.error) || String(body) || res.statusText);
  }
  return body;
}

// Numbers for people: six significant digits, no float noise.
function num(v) {
  if (typeof v !== 'number') return v === null || v === undefined ? '' : String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(5).replace(/\.?0+e/, 'e').replace('e+', 'e');
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(6)));
}

function withUnits(p) { return p.units ? `${p.name} [${p.units}]` : p.name; }
function numeric(p) { return p.type === 'number' || p.type === 'integer'; }
function enc(s) { return encodeURIComponent(s); }

function showLogin() {
  me = null;
  document.getElementById('login').hidden = false;
  document.getElementById('logout').hidden = true;
  document.getElementById('who').textContent = '';
  app.replaceChildren();
  document.getElementById('login-user').focus();
}

function setUser(u) {
  me = u;
  document.getElementById('login').hidden = true;
  document.getElementById('logout').hidden = false;
  document.getElementById('who').textContent = `${u.username} (${u.role || 'session'})`;
}

function can(p) { return !!me && (me.privileges.includes(p) || me.privileges.includes('admin')); }

function failure(e) {
  return el('p', { class: 'error', role: 'alert', text: e.message });
}

// ---------- shared pieces ----------

function figure(label, value) { return el('div', { class: 'figure' }, el('span', { class: 'muted', text: label }), el('b', { text: value })); }

// A table of runs or points with sortable headers and server-side paging.
function runsTable(params, page, state, reload, linkOf) {
  const cols = params.filter((p) => p.class === 'input').concat(params.filter((p) => p.class === 'output'));
  const head = el('tr', {},
    el('th', { scope: 'col', text: 'run' }),
    el('th', { scope: 'col', text: 'status' }),
    cols.map((p) => {
      const active = state.sort === p.key;
      const b = el('button', { type: 'button', 'aria-label': `sort by ${p.name}`, onclick: () => {
        state.desc = active ? !state.desc : false; state.sort = p.key; state.offset = 0; reload();
      } }, withUnits(p), active ? (state.desc ? ' ▼' : ' ▲') : '');
      return el('th', { scope: 'col', 'aria-sort': active ? (state.desc ? 'descending' : 'ascending') : 'none' }, b);
    }));
  const rows = page.rows.map((r) => {
    const ins = r.inputs || {}; const outs = r.outputs || {};
    const id = r.execution_id;
    return el('tr', { class: 'data-row' },
      el('td', {}, id ? el('a', { href: linkOf(r) }, r.run || id) : (r.run || '')),
      el('td', { class: `phase-${r.phase || r.status}`, text: r.phase || r.status }),
      cols.map((p) => el('td', { class: 'num', text: num((p.class === 'input' ? ins : outs)[p.name]) })));
  });
  const first = page.total === 0 ? 0 : state.offset + 1;
  const last = Math.min(state.offset + state.limit, page.total);
  const pager = el('div', { class: 'pager' },
    el('button', { type: 'button', disabled: state.offset === 0, onclick: () => { state.offset = Math.max(0, state.offset - state.limit); reload(); } }, 'Previous'),
    el('span', { class: 'count', 'aria-live': 'polite', text: `rows ${first}–${last} of ${page.total}` }),
    el('button', { type: 'button', disabled: last >= page.total, onclick: () => { state.offset += state.limit; reload(); } }, 'Next'));
  return el('div', {}, pager, el('table', { class: 'runs' }, el('thead', {}, head), el('tbody', {}, rows)));
}

// Typed range filters: a min and a max per numeric parameter.
function filterForm(params, state, apply) {
  const inputs = [];
  const fields = params.filter(numeric).map((p) => {
    const make = (bound) => {
      const id = `f-${bound}-${p.key}`.replace(/[^a-zA-Z0-9-]/g, '-');
      const i = el('input', { id, type: 'number', step: 'any', value: state.ranges[`${bound}.${p.key}`] || '' });
      i.dataset.key = `${bound}.${p.key}`;
      inputs.push(i);
      return el('label', { for: id }, `${withUnits(p)} ${bound === 'min' ? '≥' : '≤'}`, i);
    };
    return [make('min'), make('max')];
  });
  const form = el('form', { class: 'inline filters', 'aria-label': 'Filter runs', onsubmit: (ev) => {
    ev.preventDefault();
    state.ranges = {};
    for (const i of inputs) if (i.value !== '') state.ranges[i.dataset.key] = i.value;
    state.offset = 0;
    apply();
  } }, fields.flat(), el('button', { type: 'submit', class: 'primary', id: 'apply-filters' }, 'Apply filters'));
  return form;
}

function rangeQuery(state) {
  return Object.entries(state.ranges).map(([k, v]) => `&${enc(k)}=${enc(v)}`).join('');
}

// The plot builder: x, y and colour from the parameters, line/scatter or
// heatmap, drawn by the server; exports as CSV, SVG and PNG.
function plotBuilder(base, params, state, defaults) {
  const numericParams = params.filter(numeric);
  const choose = (id, label, value, allowNone, only) => {
    const s = el('select', { id }, allowNone ? el('option', { value: '' }, '(none)') : null,
      numericParams.filter((p) => !only || p.class === only).map((p) => el('option', { value: p.key, selected: p.key === value }, `${p.class} ${withUnits(p)}`)));
    return [el('label', { for: id }, label, s), s];
  };
  const [lx, sx] = choose('plot-x', 'x', defaults.x);
  const [ly, sy] = choose('plot-y', 'y', defaults.y, false);
  const [lc, sc] = choose('plot-color', 'colour', defaults.color, true);
  const kind = el('select', { id: 'plot-kind' }, ['scatter', 'line', 'heatmap'].map((k) => el('option', { value: k, selected: k === (defaults.kind || 'scatter') }, k)));
  const holder = el('div', { class: 'plot', id: 'plot', role: 'img', 'aria-label': 'plot' });
  const status = el('p', { class: 'muted', 'aria-live': 'polite' });
  const query = () => `x=${enc(sx.value)}&y=${enc(sy.value)}${sc.value ? `&color=${enc(sc.value)}` : ''}&kind=${enc(kind.value)}${rangeQuery(state)}`;
  let lastSvg = '';
  const draw = async () => {
    status.textContent = 'drawing…';
    try {
      const text = await api(`${base}/plot?${query()}`);
      lastSvg = text;
      const doc = new DOMParser().parseFromString(text, 'image/svg+xml');
      holder.replaceChildren(document.importNode(doc.documentElement, true));
      const n = holder.querySelectorAll('circle').length;
      status.textContent = kind.value === 'heatmap' ? 'heatmap drawn' : `${n} points`;
    } catch (e) { holder.replaceChildren(failure(e)); status.textContent = ''; }
  };
  const download = (blob, name) => {
    const a = el('a', { href: URL.createObjectURL(blob), download: name });
    document.body.append(a); a.click(); a.remove();
  };
  const png = () => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
      c.getContext('2d').drawImage(img, 0, 0);
      c.toBlob((b) => download(b, 'plot.png'), 'image/png');
    };
    img.src = URL.createObjectURL(new Blob([lastSvg], { type: 'image/svg+xml' }));
  };
  // A heatmap wants the two varied inputs on the axes and an output as colour.
  kind.addEventListener('change', () => {
    if (kind.value === 'heatmap' && defaults.heatmap) {
      sx.value = defaults.heatmap.x; sy.value = defaults.heatmap.y; sc.value = defaults.heatmap.color;
    }
  });
  for (const s of [sx, sy, sc, kind]) s.addEventListener('change', draw);
  const controls = el('form', { class: 'inline', 'aria-label': 'Plot builder', onsubmit: (e) => { e.preventDefault(); draw(); } },
    lx, ly, lc, el('label', { for: 'plot-kind' }, 'kind', kind),
    el('button', { type: 'submit' }, 'Draw'),
    el('a', { href: '#', id: 'export-csv', onclick: (e) => { e.preventDefault(); window.location.href = `${base}/plot?${query()}&format=csv`; } }, 'Export CSV'),
    el('button', { type: 'button', id: 'export-svg', onclick: () => download(new Blob([lastSvg], { type: 'image/svg+xml' }), 'plot.svg') }, 'Export SVG'),
    el('button', { type: 'button', id: 'export-png', onclick: png }, 'Export PNG'));
  return { node: el('section', { class: 'card' }, el('h2', { text: 'Plot' }), controls, status, holder), draw };
}

// ---------- pages ----------

async function overview() {
  const o = await api('/ui/api/overview');
  const sweeps = await api('/ui/api/sweeps').catch(() => ({ sweeps: [] }));
  const totalRuns = o.runs_by_status.reduce((a, r) => a + r.count, 0);
  const saved = o.saved_by_day.reduce((a, d) => a + d.seconds, 0);
  const maxSaved = Math.max(1, ...o.saved_by_day.map((d) => d.seconds));
  return [
    el('h1', { text: 'Overview' }),
    el('div', { class: 'figures' },
      figure('simulations', o.simulations.length),
      figure('runs', totalRuns),
      figure('cache hit rate', o.cache.hit_rate === null ? '–' : `${(o.cache.hit_rate * 100).toFixed(1)} %`),
      figure('compute time saved', `${num(saved)} s`)),
    el('section', { class: 'card' }, el('h2', { text: 'Simulations' }),
      el('table', {}, el('thead', {}, el('tr', {}, ['name', 'version', 'runs', 'cached', 'failed', 'description'].map((h) => el('th', { scope: 'col', text: h })))),
        el('tbody', {}, o.simulations.map((s) => el('tr', {},
          el('td', {}, el('a', { href: `#/sim/${enc(s.name)}/${enc(s.version)}` }, s.name)),
          el('td', { text: s.version }), el('td', { class: 'num', text: s.runs }),
          el('td', { class: 'num', text: s.cached }), el('td', { class: 'num', text: s.failed }),
          el('td', { text: s.description || '' })))))),
    el('section', { class: 'card' }, el('h2', { text: 'Runs by phase' }),
      el('table', {}, el('tbody', {}, o.runs_by_status.map((r) => el('tr', {},
        el('th', { scope: 'row', text: r.status }), el('td', { class: 'num', text: r.count }),
        el('td', {}, el('meter', { min: 0, max: Math.max(1, totalRuns), value: r.count, 'aria-label': `${r.status} runs` }))))))),
    el('section', { class: 'card' }, el('h2', { text: 'Compute time saved by the cache, per day' }),
      o.saved_by_day.length === 0 ? el('p', { class: 'muted', text: 'no cache hits yet' }) :
        el('table', {}, el('tbody', {}, o.saved_by_day.map((d) => el('tr', {},
          el('th', { scope: 'row', text: d.day.slice(0, 10) }), el('td', { class: 'num', text: `${num(d.seconds)} s` }),
          el('td', {}, el('meter', { min: 0, max: maxSaved, value: d.seconds, 'aria-label': `seconds saved on ${d.day.slice(0, 10)}` }))))))),
    sweepList(sweeps.sweeps),
  ];
}

function sweepList(list) {
  return el('section', { class: 'card' }, el('h2', { text: 'Sweeps' }),
    list.length === 0 ? el('p', { class: 'muted', text: 'no sweeps' }) :
      el('table', {}, el('thead', {}, el('tr', {}, ['sweep', 'simulation', 'phase', 'progress', 'cached', 'failed'].map((h) => el('th', { scope: 'col', text: h })))),
        el('tbody', {}, list.map((s) => el('tr', {},
          el('td', {}, el('a', { href: `#/sweep/${enc(s.namespace)}/${enc(s.name)}` }, `${s.namespace}/${s.name}`)),
          el('td', { text: s.simulation }), el('td', { class: `phase-${s.status.phase}`, text: s.status.phase || '' }),
          el('td', { text: s.status.progress || '' }), el('td', { class: 'num', text: s.status.cached || 0 }),
          el('td', { class: 'num', text: s.status.failed || 0 }))))));
}

async function sweeps() {
  const s = await api('/ui/api/sweeps');
  return [el('h1', { text: 'Sweeps' }), sweepList(s.sweeps)];
}

function runsSection(base, params, linkOf) {
  const state = { ranges: {}, offset: 0, limit: 50, sort: null, desc: false };
  const holder = el('div', { id: 'runs' });
  let plot = null;
  const load = async () => {
    const q = `limit=${state.limit}&offset=${state.offset}${state.sort ? `&sort=${enc(state.sort)}&desc=${state.desc}` : ''}${rangeQuery(state)}`;
    try {
      const page = await api(`${base}/${base.includes('/sweeps/') ? 'points' : 'runs'}?${q}`);
      holder.replaceChildren(runsTable(params, page, state, load, linkOf));
    } catch (e) { holder.replaceChildren(failure(e)); }
  };
  const apply = () => { load(); if (plot) plot.draw(); };
  const section = el('section', { class: 'card' }, el('h2', { text: 'Runs' }), filterForm(params, state, apply), holder);
  return { section, state, load, setPlot: (p) => { plot = p; } };
}

async function simulationPage(name, version) {
  const base = `/ui/api/simulations/${enc(name)}/${enc(version)}`;
  const s = await api(base);
  const stats = Object.fromEntries(s.parameter_stats.map((p) => [p.key, p]));
  const runs = runsSection(base, s.parameters, (r) => `#/run/${enc(r.execution_id)}`);
  const ins = s.parameters.filter((p) => p.class === 'input' && numeric(p));
  const outs = s.parameters.filter((p) => p.class === 'output' && numeric(p));
  const plot = plotBuilder(base, s.parameters, runs.state, { x: ins[0] && ins[0].key, y: outs[0] && outs[0].key, color: ins[1] && ins[1].key });
  runs.setPlot(plot);
  runs.load(); plot.draw();
  return [
    el('h1', {}, `${s.name} `, el('span', { class: 'muted', text: s.version })),
    el('p', { text: s.description || '' }),
    el('p', {}, 'Versions: ', s.versions.map((v) => [el('a', { href: `#/sim/${enc(name)}/${enc(v)}` }, v), ' '])),
    el('div', { class: 'figures' }, figure('runs', s.stats.total_executions), figure('cached', s.stats.cached),
      figure('failed', s.stats.failed), figure('mean duration', s.stats.avg_duration === null ? '–' : `${num(s.stats.avg_duration)} s`)),
    el('section', { class: 'card' }, el('h2', { text: 'Inputs and outputs' }),
      el('table', { class: 'schema' }, el('thead', {}, el('tr', {}, ['', 'name', 'type', 'units', 'declared range', 'min seen', 'max seen', 'mean', 'description'].map((h) => el('th', { scope: 'col', text: h })))),
        el('tbody', {}, s.parameters.map((p) => {
          const st = stats[p.key] || {};
          return el('tr', {}, el('td', { text: p.class }), el('td', { text: p.name }), el('td', { text: p.type }),
            el('td', { text: p.units || '' }), el('td', { text: p.min !== null || p.max !== null ? `${num(p.min)} – ${num(p.max)}` : '' }),
            el('td', { class: 'num', text: num(st.min) }), el('td', { class: 'num', text: num(st.max) }),
            el('td', { class: 'num', text: num(st.mean) }), el('td', { text: p.description || '' }));
        })))),
    runs.section,
    plot.node,
  ];
}

let poller = null;

async function sweepPage(ns, name) {
  const base = `/ui/api/sweeps/${enc(ns)}/${enc(name)}`;
  const d = await api(base);
  const sw = d.sweep;
  const statusBox = el('div', { id: 'sweep-status' });
  const showStatus = (st) => {
    const done = (st.succeeded || 0) + (st.cached || 0) + (st.failed || 0);
    statusBox.replaceChildren(
      el('p', {}, 'Phase: ', el('b', { class: `phase-${st.phase}`, text: st.phase || 'Pending' }), ` · progress ${st.progress || `${done}/${st.total || 0}`} `,
        el('progress', { max: Math.max(1, st.total || d.points), value: done, 'aria-label': 'sweep progress' })),
      el('div', { class: 'figures' }, figure('total', st.total || d.points), figure('running', st.running || 0), figure('succeeded', st.succeeded || 0),
        figure('cached', st.cached || 0), figure('failed', st.failed || 0), figure('compute time saved', `${num(st.computeSecondsSaved || 0)} s`)));
  };
  showStatus(sw.status);
  const runs = runsSection(base, d.parameters, (r) => `#/run/${enc(r.execution_id)}`);
  const outs = d.parameters.filter((p) => p.class === 'output' && numeric(p));
  const heat = d.varied.length >= 2 && outs.length > 0 ? { x: d.varied[0], y: d.varied[1], color: outs[outs.length - 1].key } : null;
  const plot = plotBuilder(base, d.parameters, runs.state, { x: d.varied[0], y: outs[0] && outs[0].key, color: d.varied[1], heatmap: heat });
  runs.setPlot(plot);
  runs.load(); plot.draw();
  // Live progress: poll while the sweep is still going.
  const final = (p) => ['Succeeded', 'Failed', 'PartiallyFailed'].includes(p);
  if (!final(sw.status.phase)) {
    poller = setInterval(async () => {
      try {
        const now = await api(base);
        showStatus(now.sweep.status);
        runs.load();
        if (final(now.sweep.status.phase)) { clearInterval(poller); poller = null; plot.draw(); }
      } catch (e) { clearInterval(poller); poller = null; }
    }, 2000);
  }
  return [el('h1', {}, `Sweep ${sw.namespace}/${sw.name} `, el('span', { class: 'muted', text: `${sw.simulation}${sw.version ? ` ${sw.version}` : ''}` })),
    statusBox, runs.section, plot.node];
}

function valuesTable(params, cls, values) {
  const rows = Object.entries(values || {}).map(([k, v]) => {
    const p = params.find((q) => q.class === cls && q.name === k);
    return el('tr', {}, el('th', { scope: 'row', text: k }), el('td', { class: 'num', text: typeof v === 'object' ? JSON.stringify(v) : num(v) }), el('td', { class: 'units', text: (p && p.units) || '' }));
  });
  return el('table', { class: `values ${cls}s` }, el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: cls }), el('th', { scope: 'col', text: 'value' }), el('th', { scope: 'col', text: 'units' }))), el('tbody', {}, rows));
}

async function runPage(id) {
  const r = await api(`/ui/api/runs/${enc(id)}`);
  const prov = r.provenance || {};
  const cache = r.cache ? el('p', {}, `Cached under ${r.cache.key}; produced by `, el('a', { href: `#/run/${enc(r.cache.produced_by)}` }, r.cache.produced_by), `; ${r.cache.hits} hits${r.cache.expires_at ? `; expires ${r.cache.expires_at}` : ''}.`)
    : el('p', { class: 'muted', text: r.cache_key ? 'not in the cache now' : 'not cached' });
  return [
    el('h1', {}, `Run ${r.execution_id}`),
    el('p', {}, el('a', { href: `#/sim/${enc(r.simulation)}/${enc(r.version)}` }, `${r.simulation} ${r.version}`), ' · ', el('span', { class: `phase-${r.status}`, text: r.status }),
      r.duration_seconds !== null ? ` · ${num(r.duration_seconds)} s` : ''),
    r.error_message ? el('p', { class: 'error', text: r.error_message }) : null,
    el('section', { class: 'card' }, el('h2', { text: 'Inputs and outputs' }), valuesTable(r.parameters, 'input', r.inputs), valuesTable(r.parameters, 'output', r.outputs)),
    el('section', { class: 'card' }, el('h2', { text: 'Timeline' }), r.conditions
      ? el('ol', { class: 'timeline conditions' }, r.conditions.map((c) => el('li', {}, `${c.lastTransitionTime} ${c.type}=${c.status}`, c.reason ? ` (${c.reason})` : '', c.message ? `: ${c.message}` : '')))
      : el('ol', { class: 'timeline' }, r.timeline.map((t) => el('li', {}, `${t.event}: ${t.at}`)))),
    el('section', { class: 'card' }, el('h2', { text: 'Provenance' }), el('dl', { class: 'kv' },
      el('dt', { text: 'image' }), el('dd', { text: prov.image || '' }),
      el('dt', { text: 'digest' }), el('dd', { text: prov.image_digest || '' }),
      el('dt', { text: 'input hash' }), el('dd', { text: prov.input_hash || '' }),
      el('dt', { text: 'command' }), el('dd', { text: (prov.command || []).join(' ') }))),
    el('section', { class: 'card' }, el('h2', { text: 'Cache' }), cache),
    el('section', { class: 'card' }, el('h2', { text: 'Artifacts' }), r.files.length === 0 ? el('p', { class: 'muted', text: 'none' }) :
      el('ul', {}, r.files.map((f) => el('li', {}, el('a', { href: `/runs/${enc(r.execution_id)}/files/${enc(f.name)}`, download: f.name }, f.name), ` (${f.size_bytes} bytes)`)))),
    el('section', { class: 'card' }, el('h2', { text: 'Log' }), r.logs_error ? el('p', { class: 'muted', text: r.logs_error }) :
      el('pre', { class: 'log', id: 'run-log', tabindex: 0 }, r.logs.slice().reverse().map((l) => `${l.timestamp} ${l.level} ${l.message}\n`))),
  ];
}

// Top-level scalar settings of a spec, for a one-line summary.
function specSummary(spec) {
  const flat = [];
  const walk = (o, prefix) => {
    for (const [k, v] of Object.entries(o || {})) {
      if (v !== null && typeof v === 'object' && !Array.isArray(v)) { if (prefix === '') walk(v, `${k}.`); }
      else if (!Array.isArray(v)) flat.push(`${prefix}${k}=${v}`);
    }
  };
  walk(spec, '');
  return flat.join(' · ');
}

function resourceTable(items, emptyText, cluster) {
  if (items.length === 0) return el('p', { class: 'muted', text: cluster ? emptyText : 'no cluster here: this console serves a local store' });
  return el('table', { class: 'resources' }, el('thead', {}, el('tr', {}, ['name', 'ready', 'reason', 'message', 'settings'].map((h) => el('th', { scope: 'col', text: h })))),
    el('tbody', {}, items.map((o) => {
      const conds = (o.status && o.status.conditions) || [];
      const ready = conds.find((c) => c.type === 'Ready') || conds[0] || {};
      return el('tr', {}, el('td', { text: `${o.namespace}/${o.name}` }),
        el('td', { class: ready.status === 'True' ? 'phase-Succeeded' : 'phase-Failed', text: ready.status || '' }),
        el('td', { text: ready.reason || '' }), el('td', { text: ready.message || '' }), el('td', { text: specSummary(o.spec) }));
    })));
}

async function resourcePage(kind, title, emptyText) {
  const r = await api(`/ui/api/cluster/${kind}`);
  return [el('h1', { text: title }), el('section', { class: 'card' }, resourceTable(r.items, emptyText, r.cluster))];
}

let cacheMessage = '';

async function cachePage() {
  const c = await api('/ui/api/cache?limit=200');
  const msg = el('p', { 'aria-live': 'polite', id: 'cache-message', text: cacheMessage });
  cacheMessage = '';
  const invalidate = async (body) => {
    try {
      const r = await api('/ui/api/cache/invalidate', { method: 'POST', body });
      // Shown on the page as it is drawn again without the entry.
      cacheMessage = `invalidated ${r.invalidated} ${r.invalidated === 1 ? 'entry' : 'entries'}`;
      route();
    } catch (e) { msg.textContent = e.message; }
  };
  let form = null;
  if (c.can_invalidate) {
    const kind = el('select', { id: 'inv-kind' }, ['key', 'pattern', 'simulation'].map((k) => el('option', { value: k }, k)));
    const value = el('input', { id: 'inv-value', required: true });
    form = el('form', { class: 'inline', 'aria-label': 'Invalidate cache entries', onsubmit: (e) => { e.preventDefault(); invalidate({ [kind.value]: value.value }); } },
      el('label', { for: 'inv-kind' }, 'by', kind), el('label', { for: 'inv-value' }, 'value', value),
      el('button', { type: 'submit', class: 'danger' }, 'Invalidate'));
  }
  const policies = await api('/ui/api/cluster/cachepolicies').catch(() => ({ items: [], cluster: false }));
  return [
    el('h1', { text: 'Cache' }),
    el('div', { class: 'figures' }, figure('entries', c.stats.entries), figure('hits', c.stats.hits), figure('misses', c.stats.misses),
      figure('size', `${num(c.stats.size_bytes)} B`), figure('invalidations', c.stats.invalidations)),
    form, msg,
    el('table', { class: 'cache' }, el('thead', {}, el('tr', {}, ['key', 'simulation', 'produced by', 'hits', 'expires', ''].map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, c.entries.map((e) => el('tr', { class: 'entry' },
        el('td', { text: e.key }), el('td', { text: `${e.simulation} ${e.version}` }),
        el('td', {}, el('a', { href: `#/run/${enc(e.execution_id)}` }, e.execution_id)),
        el('td', { class: 'num', text: e.hits }), el('td', { text: e.expires_at || 'never' }),
        el('td', {}, c.can_invalidate ? el('button', { type: 'button', class: 'danger invalidate', 'aria-label': `invalidate ${e.key}`, onclick: () => invalidate({ key: e.key }) }, 'Invalidate') : null))))),
    el('section', { class: 'card' }, el('h2', { text: 'Cache policies' }), resourceTable(policies.items, 'no CachePolicies', policies.cluster)),
  ];
}

async function route() {
  if (poller) { clearInterval(poller); poller = null; }
  if (!me) return;
  const parts = (location.hash.replace(/^#\/?/, '') || '').split('/').map(decodeURIComponent);
  try {
    let page;
    switch (parts[0]) {
      case 'sim': page = await simulationPage(parts[1], parts[2]); break;
      case 'sweep': page = await sweepPage(parts[1], parts[2]); break;
      case 'run': page = await runPage(parts.slice(1).join('/')); break;
      case 'sweeps': page = await sweeps(); break;
      case 'cache': page = await cachePage(); break;
      case 'devices': page = await resourcePage('sfmdevices', 'SFM devices', 'no SFMDevices'); break;
      case 'sors': page = await resourcePage('systemsofrecord', 'Systems of record', 'no SystemsOfRecord'); break;
      default: page = await overview();
    }
    app.replaceChildren(...page.flat().filter((n) => n));
  } catch (e) {
    if (e.status !== 401) app.replaceChildren(failure(e));
  }
}

document.getElementById('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const err = document.getElementById('login-error');
  err.textContent = '';
  try {
    const u = await api('/ui/api/login', { method: 'POST', body: {
      username: document.getElementById('login-user').value,
      password: document.getElementById('login-password').value,
    } });
    document.getElementById('login-password').value = '';
    setUser(u);
    route();
  } catch (e) { err.textContent = e.message; }
});

document.getElementById('logout').addEventListener('click', async () => {
  try { await api('/ui/api/logout', { method: 'POST' }); } catch (e) { /* already gone */ }
  showLogin();
});

window.addEventListener('hashchange', route);

(async () => {
  try { setUser(await api('/ui/api/me')); route(); } catch (e) { showLogin(); }
})();
