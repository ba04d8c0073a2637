// Ferrite dashboard: renders the /v1/watch event stream (one JSON snapshot of
// the cluster every 500 ms) and drives the JSON API. Plain DOM, no framework:
// each snapshot updates keyed elements in place, so focus, hover and input
// survive the redraws.
'use strict';

const $ = (sel, root = document) => root.querySelector(sel);
const TAIL_SLOTS = 24; // log boxes per member, aligned by absolute index
const WINDOW_MS = 5 * 60 * 1000; // the longest chart span
const MINUTE_MS = 60 * 1000;
const STALE_MS = 3000; // no snapshot for this long: the stream is down

let last = null; // the latest snapshot
let lastAt = 0; // when it arrived (Date.now())

// ---------------------------------------------------------------- helpers

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function setText(e, text) {
  const s = String(text);
  if (e.textContent !== s) e.textContent = s;
}

// A stable colour per term: golden-angle steps keep neighbouring terms apart.
function termColor(term) {
  return `hsl(${Math.round((term * 137.508 + 24) % 360)} 62% 50%)`;
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const s = Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 2 : 1);
  return `${s} ${units[i]}`;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// Calls the JSON API; resolves to the parsed body or throws Error(message).
async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.body = body;
    init.headers['Content-Type'] =
      typeof body === 'string' && body.startsWith('{') ? 'application/json' : 'application/octet-stream';
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new Error('no reply from this member');
  }
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (e) {
    /* not JSON */
  }
  if (!res.ok) throw new Error((json && json.error) || `${res.status} ${res.statusText}`);
  return json;
}

function showStatus(node, text, ok) {
  node.textContent = text;
  node.title = text;
  node.dataset.state = ok ? 'ok' : 'error';
  node.classList.remove('flash');
  void node.offsetWidth; // restart the animation
  node.classList.add('flash');
}

function flash(node) {
  node.animate([{ backgroundColor: 'var(--flash)' }, { backgroundColor: 'transparent' }], {
    duration: 900,
    easing: 'ease-out',
  });
}

// ---------------------------------------------------------------- stream

let source = null;
let retry = 0;

function connect() {
  if (source) source.close();
  source = new EventSource('/v1/watch');
  source.onmessage = (e) => {
    let d;
    try {
      d = JSON.parse(e.data);
    } catch (err) {
      return;
    }
    if (!d || !Array.isArray(d.members)) return; // the server's first, empty view
    lastAt = Date.now();
    last = d;
    setConn('live');
    render(d);
  };
  source.onerror = () => {
    // Retry every second ourselves: the browser's own delay is longer, and it
    // gives up for good on a reply that is not a stream.
    setConn('reconnecting');
    source.close();
    clearTimeout(retry);
    retry = setTimeout(connect, 1000);
    // A refusal (the login expired, or auth was just enabled) shows the
    // login form instead.
    if (me && me.auth_enabled) checkLogin();
  };
}

function setConn(state) {
  const c = $('#conn');
  if (c.dataset.state !== state) {
    c.dataset.state = state;
    document.body.classList.toggle('offline', state !== 'live');
    if (state !== 'live' && last) bannerOffline();
  }
  setText(c, state === 'live' ? 'live' : state === 'reconnecting' ? 'reconnecting…' : 'connecting…');
}

// A stream that stops without an error (a frozen member) still shows as down,
// and is reopened after a while.
setInterval(() => {
  if (!lastAt) return;
  const quiet = Date.now() - lastAt;
  if (quiet > STALE_MS) setConn('reconnecting');
  if (quiet > 2 * STALE_MS && source && source.readyState === EventSource.OPEN) connect();
}, 1000);

function render(d) {
  renderBanner(d);
  renderMembers(d);
  renderEvents(d.events || []);
  renderCharts(d.series || []);
  renderRegisters(d.registers || []);
  renderVolumes(d.volumes || []);
  renderChanges(d.changes || []);
}

// ---------------------------------------------------------------- changes

// The latest key changes, pushed by the server from its event stream (the
// same stream etcd's Watch serves) as they are applied.
function renderChanges(changes) {
  const list = $('#changes');
  const sig = changes.length ? `${changes[0].revision}|${changes[0].key}|${changes.length}` : '0';
  if (list.dataset.sig === sig) return;
  list.dataset.sig = sig;
  list.replaceChildren();
  if (!changes.length) {
    list.append(el('li', 'empty', 'No key changes since this page opened the stream.'));
    return;
  }
  for (const c of changes) {
    const li = el('li');
    li.dataset.kind = c.kind;
    const text = c.kind === 'put' ? `${c.key} = ${c.value}` : c.key;
    li.append(el('span', 'kind', c.kind), el('span', 'text', text), el('span', 'rev', `rev ${c.revision}`));
    list.append(li);
  }
}

// ---------------------------------------------------------------- banner

function renderBanner(d) {
  const b = $('#banner');
  const title = `Ferrite · ${d.me}`;
  if (document.title !== title) document.title = title;
  const me = (d.members || []).find((m) => m.name === d.me);
  const role = me ? (me.reachable ? me.role : 'unreachable') : 'unknown';
  const key = `${d.me}|${d.leader}|${role}`;
  if (b.dataset.key === key) return;
  b.dataset.key = key;
  b.dataset.me = d.me;
  b.dataset.leader = d.leader || '';
  b.replaceChildren();
  const strong = (id, text) => {
    const s = el('strong', '', text);
    s.id = id;
    return s;
  };
  if (d.leader && d.leader === d.me) {
    b.className = 'banner on-leader';
    const me = strong('me', '');
    me.append(strong('leader-name', d.leader));
    b.append('You are on the leader ', me);
  } else if (d.leader) {
    b.className = 'banner on-follower';
    b.append('You are on ', strong('me', d.me), ` (${role}) — the leader is `, strong('leader-name', d.leader),
      '; writes are forwarded');
  } else {
    b.className = 'banner no-leader';
    b.append('You are on ', strong('me', d.me), ` (${role}) — no leader right now; writes wait for one`,
      strong('leader-name', ''));
  }
}

// While the stream is down the view is old: say so instead of who leads.
function bannerOffline() {
  const b = $('#banner');
  b.dataset.key = 'offline';
  b.className = 'banner offline';
  const me = el('strong', '', last.me);
  me.id = 'me';
  b.replaceChildren('No answer from ', me, ` — reconnecting…; the view below is from ${clock(lastAt)}`);
}

// ---------------------------------------------------------------- members

const cards = new Map(); // name -> card element

function makeCard(name) {
  const card = $('#member-template').content.firstElementChild.cloneNode(true);
  card.dataset.member = name;
  const tail = $('.tail', card);
  for (let i = 0; i < TAIL_SLOTS; i++) tail.append(el('i'));
  for (const b of card.querySelectorAll('[data-action]')) b.dataset.target = name;
  return card;
}

const byName = (a, b) => a.name.localeCompare(b.name, undefined, { numeric: true });

function renderMembers(d) {
  const members = [...(d.members || [])].sort(byName);
  let hi = 0;
  let commitMax = 0;
  for (const m of members) {
    hi = Math.max(hi, m.last_index || 0);
    commitMax = Math.max(commitMax, m.commit || 0);
    for (const e of m.tail || []) hi = Math.max(hi, e.index);
  }
  const lo = hi - TAIL_SLOTS + 1; // below 1 while the log is young: blank slots

  const box = $('#members');
  const names = new Set(members.map((m) => m.name));
  for (const [name, card] of cards) {
    if (!names.has(name)) {
      card.remove();
      cards.delete(name);
    }
  }
  members.forEach((m, i) => {
    let card = cards.get(m.name);
    if (!card) {
      card = makeCard(m.name);
      cards.set(m.name, card);
    }
    if (box.children[i] !== card) box.insertBefore(card, box.children[i] || null);
    updateCard(card, m, d, lo, commitMax);
  });

  const up = members.filter((m) => m.reachable).length;
  const term = Math.max(0, ...members.map((m) => m.term || 0));
  setText($('#cluster-summary'),
    `${members.length} members · ${up} reachable · term ${term} · commit ${commitMax}`);
}

function updateCard(card, m, d, lo, commitMax) {
  const role = m.reachable ? m.role || 'unknown' : 'unreachable';
  card.dataset.role = role;
  card.dataset.reachable = String(!!m.reachable);
  card.dataset.isolated = String(!!m.isolated);
  card.classList.toggle('leader', role === 'leader');
  card.classList.toggle('stale-leader', role === 'leader' && d.leader !== m.name);
  card.classList.toggle('down', !m.reachable || !!m.isolated);
  card.classList.toggle('me', m.name === d.me);
  card.title = `${m.name} · id ${m.id} · client ${m.client}`;

  setText($('.name', card), m.name);
  setText($('.role', card), m.isolated && m.reachable ? `${role} · isolated` : role);
  const dash = (v) => (m.reachable ? v : '–');
  setText($('.term', card), dash(m.term));
  setText($('.last', card), dash(m.last_index));
  setText($('.commit', card), dash(m.commit));
  setText($('.applied', card), dash(m.applied));
  setText($('.snap', card), dash(m.snapshot_index));

  // Boxes sit at absolute positions lo..lo+23, the same in every card, so a
  // member that lags or diverges shows it against its neighbours.
  const byIndex = new Map((m.tail || []).map((e) => [e.index, e.term]));
  const tail = $('.tail', card);
  for (let s = 0; s < TAIL_SLOTS; s++) {
    const box = tail.children[s];
    const index = lo + s;
    const term = byIndex.get(index);
    let cls = '';
    let title = '';
    let bg = '';
    if (term !== undefined) {
      cls = index <= m.commit ? 'e' : 'e pending';
      title = `#${index} · term ${term}${index <= m.commit ? '' : ' · not committed here'}`;
      bg = termColor(term);
    } else if (m.reachable && index >= 1 && index > m.last_index) {
      cls = 'missing';
    }
    if (box.className !== cls) box.className = cls;
    if (box.title !== title) box.title = title;
    if (box.style.backgroundColor !== bg) box.style.backgroundColor = bg;
  }
  tail.dataset.lo = lo;
  tail.title = `indices ${Math.max(1, lo)}–${lo + TAIL_SLOTS - 1}`;

  const health = $('.health', card);
  let text;
  let state;
  if (!m.reachable) {
    text = m.error ? `unreachable: ${m.error}` : 'unreachable';
    state = 'bad';
  } else if (m.isolated) {
    text = 'isolated: peers cannot reach it';
    state = 'warn';
  } else if (m.applied < commitMax) {
    text = `catching up: ${commitMax - m.applied} behind`;
    state = 'warn';
  } else {
    text = `healthy · ${m.client}`;
    state = 'ok';
  }
  setText(health, text);
  health.dataset.state = state;

  const controls = $('.controls', card);
  controls.hidden = !d.control;
  $('[data-action="isolate"]', card).hidden = !!m.isolated;
  $('[data-action="heal"]', card).hidden = !m.isolated;
}

$('#members').addEventListener('click', async (e) => {
  const button = e.target.closest('button[data-action]');
  if (!button) return;
  const { action, target } = button.dataset;
  const result = $('.result', button.closest('.member'));
  button.disabled = true;
  try {
    const r = await api('POST', `/v1/control/${encodeURIComponent(target)}/${action}`);
    showStatus(result, (r && r.done) || `${action}: done`, true);
  } catch (err) {
    showStatus(result, `${action}: ${err.message}`, false);
  } finally {
    button.disabled = false;
  }
  clearTimeout(result.timer);
  result.timer = setTimeout(() => {
    result.textContent = '';
  }, 6000);
});

// ---------------------------------------------------------------- timeline

function renderEvents(events) {
  const list = $('#events');
  const sig = events.length ? `${events.length}|${events[events.length - 1].at}` : '0';
  if (list.dataset.sig === sig) return;
  list.dataset.sig = sig;
  list.replaceChildren();
  if (!events.length) {
    list.append(el('li', 'empty', 'No events yet.'));
    return;
  }
  for (let i = events.length - 1; i >= 0; i--) {
    const e = events[i];
    const li = el('li');
    li.dataset.kind = e.kind;
    li.append(el('time', '', clock(e.at)), el('span', 'kind', e.kind), el('span', 'text', e.text));
    list.append(li);
  }
}

// ---------------------------------------------------------------- charts

const charts = [
  {
    canvas: '#chart-ops',
    unit: '/s',
    lines: [
      { key: 'writes', label: 'writes', color: '--c-writes', fill: true },
      { key: 'reads', label: 'reads', color: '--c-reads' },
    ],
  },
  {
    canvas: '#chart-latency',
    unit: ' ms',
    lines: [
      { key: 'p99_ms', label: 'p99', color: '--c-p99', fill: true },
      { key: 'p50_ms', label: 'p50', color: '--c-p50' },
    ],
  },
  {
    canvas: '#chart-fsync',
    unit: ' ms',
    lines: [
      { key: 'fsync_p99_ms', label: 'p99', color: '--c-fsync99', fill: true },
      { key: 'fsync_p50_ms', label: 'p50', color: '--c-fsync50' },
    ],
  },
];

// The smallest 1, 2, 2.5 or 5 × 10^k at or above v: a step between grid lines.
function niceStep(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v) {
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

// The charts span the whole series, from one minute up to five, so that a
// young cluster's first seconds are not a sliver at the right edge.
function renderCharts(series) {
  const have = series.length ? series[series.length - 1].at - series[0].at : 0;
  const span = Math.min(WINDOW_MS, Math.max(MINUTE_MS, Math.ceil(have / MINUTE_MS) * MINUTE_MS));
  const minutes = span / MINUTE_MS;
  setText($('#charts-title'), minutes === 1 ? 'Last minute' : `Last ${minutes} minutes`);
  for (const c of charts) drawChart($(c.canvas), series, span, c);
}

function drawChart(canvas, series, span, spec) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);

  const end = series.length ? series[series.length - 1].at : Date.now();
  const start = end - span;
  const visible = series.filter((p) => p.at >= start);
  canvas.dataset.points = visible.length;
  let max = 0;
  for (const p of visible) for (const l of spec.lines) max = Math.max(max, p[l.key] || 0);
  const target = max > 0 ? max * 1.05 : 1;
  const step = niceStep(target / 4);
  const top = step * Math.ceil(target / step);
  const decimals = Math.min(3, (String(step).split('.')[1] || '').length);
  g.font = '11px system-ui, sans-serif';
  const pad = { l: Math.ceil(g.measureText(top.toFixed(decimals)).width) + 14, r: 10, t: 24, b: 18 };
  const pw = w - pad.l - pad.r;
  const ph = h - pad.t - pad.b;
  const x = (t) => pad.l + ((t - start) / span) * pw;
  const y = (v) => pad.t + ph - (Math.min(v, top) / top) * ph;

  const muted = cssVar('--muted');
  const grid = cssVar('--grid');
  g.lineWidth = 1;

  // Grid and axes.
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  for (let v = 0; v <= top + step / 2; v += step) {
    const yy = Math.round(y(v)) + 0.5;
    g.strokeStyle = grid;
    g.beginPath();
    g.moveTo(pad.l, yy);
    g.lineTo(pad.l + pw, yy);
    g.stroke();
    g.fillStyle = muted;
    g.fillText(v.toFixed(decimals), pad.l - 6, yy);
  }
  g.textAlign = 'center';
  g.textBaseline = 'top';
  const tick = span === MINUTE_MS ? 15000 : MINUTE_MS;
  for (let t = span; t >= 0; t -= tick) {
    const label = t === 0 ? 'now' : t % MINUTE_MS ? `−${t / 1000}s` : `−${t / MINUTE_MS}m`;
    g.fillText(label, Math.min(x(end - t), pad.l + pw - 10), pad.t + ph + 5);
  }

  // Lines: a gap of more than 2.5 s in the series breaks the line.
  for (const l of spec.lines) {
    const color = cssVar(l.color);
    const runs = [];
    let run = [];
    for (const p of visible) {
      if (run.length && p.at - run[run.length - 1].at > 2500) {
        runs.push(run);
        run = [];
      }
      run.push(p);
    }
    if (run.length) runs.push(run);
    for (const r of runs) {
      if (l.fill && r.length > 1) {
        const grad = g.createLinearGradient(0, pad.t, 0, pad.t + ph);
        grad.addColorStop(0, color + '40');
        grad.addColorStop(1, color + '00');
        g.fillStyle = grad;
        g.beginPath();
        g.moveTo(x(r[0].at), y(0));
        for (const p of r) g.lineTo(x(p.at), y(p[l.key] || 0));
        g.lineTo(x(r[r.length - 1].at), y(0));
        g.closePath();
        g.fill();
      }
      g.strokeStyle = color;
      g.lineWidth = 1.6;
      g.lineJoin = 'round';
      g.beginPath();
      r.forEach((p, i) => (i ? g.lineTo : g.moveTo).call(g, x(p.at), y(p[l.key] || 0)));
      g.stroke();
    }
    // The latest value as a dot, so that a short series still shows.
    const p = visible[visible.length - 1];
    if (p) {
      g.fillStyle = color;
      g.beginPath();
      g.arc(x(p.at), y(p[l.key] || 0), 2.5, 0, 2 * Math.PI);
      g.fill();
    }
  }

  // Legend with the latest values.
  g.textAlign = 'left';
  g.textBaseline = 'middle';
  g.font = '12px system-ui, sans-serif';
  let lx = pad.l;
  const now = visible[visible.length - 1];
  for (const l of spec.lines) {
    const label = `${l.label} ${now ? fmt(now[l.key] || 0) + spec.unit : '–'}`;
    g.fillStyle = cssVar(l.color);
    g.fillRect(lx, 8, 10, 3);
    g.fillStyle = cssVar('--text');
    g.fillText(label, lx + 14, 10);
    lx += g.measureText(label).width + 30;
  }
  if (!visible.length) {
    g.fillStyle = muted;
    g.textAlign = 'center';
    g.fillText('no data yet', pad.l + pw / 2, pad.t + ph / 2);
  }
}

window.addEventListener('resize', () => last && renderCharts(last.series || []));

// ---------------------------------------------------------------- registers

function registerRow(name) {
  const tr = el('tr');
  tr.dataset.register = name;
  const td = el('td', 'name');
  td.append(el('a', '', name));
  const actions = el('td', 'actions');
  for (const delta of [-1, 1]) {
    const b = el('button', 'step', delta > 0 ? '+1' : '−1');
    b.dataset.delta = delta;
    b.title = `add ${delta} to ${name}`;
    actions.append(b);
  }
  tr.append(td, el('td', 'value num'), actions);
  return tr;
}

// Values this page was just told by a write's reply. This member's stream
// may lag its reply by a moment (it reads locally): until it catches up,
// the reply wins, so that a value never steps back.
const replied = new Map(); // name -> { value, until }

function setRegister(name, value) {
  const tr = document.querySelector(`#registers tr[data-register="${CSS.escape(name)}"]`);
  if (!tr) return;
  const v = $('.value', tr);
  if (v.textContent !== String(value)) {
    const first = v.textContent === '';
    v.textContent = String(value);
    if (!first) flash(v);
  }
}

function renderRegisters(regs) {
  const body = $('#registers');
  const keep = new Set(regs.map((r) => r.name));
  for (const tr of [...body.children]) if (!keep.has(tr.dataset.register)) tr.remove();
  regs.forEach((r, i) => {
    let tr = body.children[i];
    if (!tr || tr.dataset.register !== r.name) {
      tr = document.querySelector(`#registers tr[data-register="${CSS.escape(r.name)}"]`) || registerRow(r.name);
      body.insertBefore(tr, body.children[i] || null);
    }
    const mine = replied.get(r.name);
    if (mine && (mine.value === r.value || Date.now() > mine.until)) replied.delete(r.name);
    setRegister(r.name, replied.has(r.name) ? mine.value : r.value);
  });
  $('#registers-empty').hidden = regs.length > 0;
}

function regName() {
  return $('#reg-name').value.trim();
}

function regNumber() {
  const raw = $('#reg-value').value.trim();
  if (!/^-?\d+$/.test(raw)) throw new Error('enter an integer');
  return raw; // sent verbatim, so 64-bit values keep every digit
}

async function registerOp(kind, name, raw) {
  const status = $('#reg-status');
  const path = `/v1/registers/${encodeURIComponent(name)}`;
  try {
    if (!name) throw new Error('enter a register name');
    let r;
    if (kind === 'get') r = await api('GET', path);
    else if (kind === 'set') r = await api('PUT', path, `{"value": ${raw ?? regNumber()}}`);
    else r = await api('POST', `${path}/add`, `{"delta": ${raw ?? regNumber()}}`);
    if (kind !== 'get') replied.set(name, { value: r.value, until: Date.now() + 1500 });
    setRegister(name, r.value);
    status.dataset.value = r.value;
    showStatus(status, `${name} = ${r.value}`, true);
  } catch (err) {
    delete status.dataset.value;
    showStatus(status, `${kind} ${name}: ${err.message}`, false);
  }
}

$('#reg-form').addEventListener('submit', (e) => {
  e.preventDefault();
  registerOp('add', regName());
});
$('#reg-get').addEventListener('click', () => registerOp('get', regName()));
$('#reg-set').addEventListener('click', () => registerOp('set', regName()));
$('#registers').addEventListener('click', (e) => {
  const tr = e.target.closest('tr[data-register]');
  if (!tr) return;
  const step = e.target.closest('button.step');
  if (step) registerOp('add', tr.dataset.register, step.dataset.delta);
  else $('#reg-name').value = tr.dataset.register;
});

// ---------------------------------------------------------------- volumes

function renderVolumes(vols) {
  const body = $('#volumes');
  const sig = vols.map((v) => `${v.name}:${v.size}`).join(',');
  if (body.dataset.sig === sig) return;
  body.dataset.sig = sig;
  body.replaceChildren(
    ...vols.map((v) => {
      const tr = el('tr');
      tr.dataset.volume = v.name;
      const size = el('td', 'num size', bytes(v.size));
      size.title = `${v.size.toLocaleString()} bytes`;
      tr.append(el('td', 'name', v.name), size);
      return tr;
    }),
  );
  $('#volumes-empty').hidden = vols.length > 0;
}

// ---------------------------------------------------------------- keys

const kvPath = (key) => `/v1/kv/${encodeURIComponent(key)}`;

function kvRows(kvs) {
  if (!kvs.length) {
    const td = el('td', 'empty', 'No keys.');
    td.colSpan = 3;
    const tr = el('tr');
    tr.append(td);
    $('#kv-results').replaceChildren(tr);
    return;
  }
  $('#kv-results').replaceChildren(
    ...kvs.map((kv) => {
      const tr = el('tr');
      tr.dataset.key = kv.key;
      const value = el('td', 'value', kv.value);
      value.title = kv.value;
      tr.append(el('td', 'key', kv.key), value, el('td', 'num', kv.mod_revision));
      return tr;
    }),
  );
}

async function kvList() {
  const status = $('#kv-status');
  const prefix = $('#kv-prefix').value;
  try {
    const r = await api('GET', `/v1/kv?prefix=${encodeURIComponent(prefix)}`);
    kvRows(r.kvs);
    const what = prefix ? `with prefix “${prefix}”` : 'in all';
    showStatus(status, `${r.count} key${r.count === 1 ? '' : 's'} ${what}${r.more ? ' (more not shown)' : ''} · revision ${r.revision}`, true);
  } catch (err) {
    showStatus(status, `list: ${err.message}`, false);
  }
}

async function kvOp(kind) {
  const status = $('#kv-status');
  const key = $('#kv-key').value;
  try {
    if (!key) throw new Error('enter a key');
    if (kind === 'get') {
      const kv = await api('GET', kvPath(key));
      $('#kv-value').value = kv.value;
      kvRows([kv]);
      showStatus(status, `${key} = ${kv.value} · revision ${kv.mod_revision}`, true);
    } else if (kind === 'put') {
      const r = await api('PUT', kvPath(key), $('#kv-value').value);
      showStatus(status, `put ${key} · revision ${r.revision}`, true);
      refreshKvList(key);
    } else {
      const r = await api('DELETE', kvPath(key));
      showStatus(status, `deleted ${r.deleted} key${r.deleted === 1 ? '' : 's'} · revision ${r.revision}`, true);
      refreshKvList(key);
    }
  } catch (err) {
    showStatus(status, `${kind} ${key}: ${err.message}`, false);
  }
}

// After a write, list again when the key falls under the listed prefix.
async function refreshKvList(key) {
  if (!key.startsWith($('#kv-prefix').value)) return;
  const prefix = $('#kv-prefix').value;
  try {
    const r = await api('GET', `/v1/kv?prefix=${encodeURIComponent(prefix)}`);
    kvRows(r.kvs);
  } catch (err) {
    /* the status line already shows the write */
  }
}

$('#kv-list-form').addEventListener('submit', (e) => {
  e.preventDefault();
  kvList();
});
$('#kv-form').addEventListener('submit', (e) => {
  e.preventDefault();
  kvOp('put');
});
$('#kv-get').addEventListener('click', () => kvOp('get'));
$('#kv-delete').addEventListener('click', () => kvOp('delete'));
$('#kv-results').addEventListener('click', (e) => {
  const tr = e.target.closest('tr[data-key]');
  if (!tr) return;
  $('#kv-key').value = tr.dataset.key;
  $('#kv-value').value = $('.value', tr).textContent;
});

// ---------------------------------------------------------------- login

// Who this page is for (GET /v1/auth/whoami); with auth enabled and no
// login, only the login form shows (the API and the stream refuse data).
let me = null;

async function whoami() {
  try {
    return await api('GET', '/v1/auth/whoami');
  } catch (err) {
    return null; // an older member, or no reply: as without auth
  }
}

async function checkLogin() {
  const w = await whoami();
  if (w && w.auth_enabled && !w.user) showLogin(w.error);
}

function showLogin(why) {
  if (source) source.close();
  clearTimeout(retry);
  source = null;
  $('#main').hidden = true;
  $('#user').hidden = true;
  $('#login').hidden = false;
  setText($('#banner'), 'Log in to see this cluster');
  setText($('#conn'), 'logged out');
  document.body.classList.add('logged-out');
  if (why) $('#login-error').textContent = '';
  $('#login-name').focus();
}

$('#login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const status = $('#login-error');
  const body = JSON.stringify({ name: $('#login-name').value, password: $('#login-password').value });
  try {
    await api('POST', '/v1/auth/login', body);
    location.reload(); // a fresh page: nothing of another user's view stays
  } catch (err) {
    showStatus(status, `log in: ${err.message}`, false);
    $('#login-password').select();
  }
});

$('#logout').addEventListener('click', async () => {
  try {
    await api('POST', '/v1/auth/logout');
  } catch (err) {
    /* the page reloads to the login form either way */
  }
  location.reload();
});

async function start() {
  me = await whoami();
  if (me && me.auth_enabled && !me.user) {
    showLogin(me.error);
    return;
  }
  if (me && me.auth_enabled) {
    setText($('#user-name'), me.user);
    $('#user-name').title = me.roles.length ? `roles: ${me.roles.join(', ')}` : 'no roles';
    $('#user').hidden = false;
  }
  connect();
  kvList();
}

start();
