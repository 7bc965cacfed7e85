/* Gorilix dashboard page: polls the dashboard's JSON API and renders it.
 *
 * Plain JavaScript, no build step. Every string that comes from the API goes
 * into the page through textContent or an attribute, never as HTML.
 */
(function () {
  'use strict';

  const TOKEN_KEY = 'gorilix-dashboard-token';
  const POLL_MS = 1000;            // between two polls
  const FAST_POLL_MS = 200;        // between two polls right after a drill
  const FAST_FOR_MS = 3000;        // how long polls stay fast after a drill
  const MAX_TICKS = 600;           // history ticks kept for the charts
  const NOTICE_MS = 15000;         // how long a drill's outcome stays in the status line
  const CHART_HEIGHT = 220;
  const MEMBER_STATUSES = ['alive', 'suspect', 'dead', 'left'];
  const BREAKER_STATES = ['closed', 'half_open', 'open'];
  const EVENT_KINDS = ['member', 'worker', 'drill', 'dashboard'];
  const PALETTE = ['#1f6feb', '#d1242f', '#1a7f37', '#9a6700', '#8250df',
    '#0a7b83', '#bf3989', '#57606a', '#fb8500', '#3d5a80'];

  const page = {
    token: null,
    state: null,              // the latest /api/state answer rendered
    ticks: [],                // history ticks, oldest first, at most MAX_TICKS
    requestsSent: 0,          // numbers the requests whose answer carries a state...
    newestApplied: 0,         // ...so an older answer arriving late is not rendered over a newer one
    pollTimer: null,
    pollInFlight: false,
    fastUntil: 0,
    waitingForToken: false,
    pendingKills: new Set(),  // "node/worker" of the kill requests under way
    notice: null,             // {text, isError, until}: a drill's outcome
    lastError: null,          // why the last poll failed, or null
    charts: new Map(),        // chart id -> {def, box, plot, seriesKey}
    renderedSupervisors: new Map(),  // node -> the JSON its tree was built from
    renderedTimeline: null,
  };

  /* ---------- small helpers ---------- */

  function $(id) {
    return document.getElementById(id);
  }

  function element(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined && text !== null) el.textContent = String(text);
    return el;
  }

  function oneOf(value, allowed, fallback) {
    return allowed.includes(value) ? value : fallback;
  }

  function isNumber(value) {
    return typeof value === 'number' && Number.isFinite(value);
  }

  function pad2(n) {
    return String(n).padStart(2, '0');
  }

  function formatClock(unixSeconds) {
    if (!isNumber(unixSeconds)) return '--:--:--';
    const d = new Date(unixSeconds * 1000);
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
  }

  function formatAgo(seconds) {
    if (!isNumber(seconds)) return '';
    const s = Math.max(0, seconds);
    if (s < 10) return s.toFixed(1) + ' s ago';
    if (s < 120) return Math.round(s) + ' s ago';
    if (s < 7200) return Math.round(s / 60) + ' min ago';
    return Math.round(s / 3600) + ' h ago';
  }

  const integerFormat = new Intl.NumberFormat('en-US', {maximumFractionDigits: 0});
  const oneDecimalFormat = new Intl.NumberFormat('en-US', {minimumFractionDigits: 1, maximumFractionDigits: 1});

  function formatCount(value) {
    return isNumber(value) ? integerFormat.format(value) : '–';
  }

  function formatRate(value) {
    if (!isNumber(value)) return '–';
    return value < 10 ? oneDecimalFormat.format(value) : integerFormat.format(value);
  }

  function formatPercent(value) {
    return isNumber(value) ? value.toFixed(1) : '–';
  }

  function formatMiB(bytes) {
    return isNumber(bytes) ? (bytes / 1048576).toFixed(1) : '–';
  }

  function formatBytes(bytes) {
    if (!isNumber(bytes)) return '–';
    if (bytes < 1024) return bytes + ' B';
    if (bytes < 1048576) return (bytes / 1024).toFixed(1) + ' KiB';
    if (bytes < 1073741824) return (bytes / 1048576).toFixed(1) + ' MiB';
    return (bytes / 1073741824).toFixed(2) + ' GiB';
  }

  function hostPort(address, port) {
    const host = String(address);
    return (host.includes(':') ? '[' + host + ']' : host) + ':' + port;
  }

  function byNaturalOrder(a, b) {
    return String(a).localeCompare(String(b), 'en', {numeric: true});
  }

  function sortedNodeNames(nodes) {
    return Object.keys(nodes || {}).sort(byNaturalOrder);
  }

  function serverNow() {
    const state = page.state;
    return state && isNumber(state.time) ? state.time : Date.now() / 1000;
  }

  /* Puts `items` into `parent` as one child each, in order, keyed by `keyOf`:
   * a child whose key is still there is kept (and updated), so a button the
   * user is about to click is not replaced under the pointer every second. */
  function syncChildren(parent, items, keyOf, create, update) {
    const existing = new Map();
    for (const child of Array.from(parent.children)) {
      if (child.dataset.key === undefined) child.remove();  // a placeholder ("no node polled yet")
      else existing.set(child.dataset.key, child);
    }
    let cursor = parent.firstElementChild;
    for (const item of items) {
      const key = String(keyOf(item));
      let el = existing.get(key);
      if (el) {
        existing.delete(key);
      } else {
        el = create(item);
        el.dataset.key = key;
      }
      update(el, item);
      if (el === cursor) {
        cursor = cursor.nextElementSibling;
      } else {
        parent.insertBefore(el, cursor);
      }
    }
    for (const el of existing.values()) el.remove();
  }

  function rowWithCells(count) {
    const tr = document.createElement('tr');
    for (let i = 0; i < count; i++) tr.appendChild(document.createElement('td'));
    return tr;
  }

  function setCell(td, text, className) {
    const value = text === null || text === undefined ? '' : String(text);
    if (td.textContent !== value) td.textContent = value;
    const cls = className || '';
    if (td.className !== cls) td.className = cls;
  }

  function badge(text, className) {
    return element('span', 'badge ' + className, text);
  }

  /* ---------- token ---------- */

  function readStoredToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (err) {
      return null;  // storage turned off: the token lives in memory only
    }
  }

  function storeToken(token) {
    page.token = token || null;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (err) {
      /* storage turned off: keep it in memory */
    }
  }

  /* The dashboard prints http://HOST:PORT/#token=...: keep the token, and
   * take it out of the address bar (and so out of the history and bookmarks). */
  function takeTokenFromAddress() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ''));
    const token = params.get('token');
    if (token === null) return false;
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : ''));
    if (token) storeToken(token);
    return Boolean(token);
  }

  /* The dashboard's URL pasted into a tab already showing the page: no reload. */
  function onHashChange() {
    if (!takeTokenFromAddress()) return;
    $('token-form').hidden = true;
    page.waitingForToken = false;
    pollNow();
  }

  function askForToken(message) {
    page.waitingForToken = true;
    clearTimeout(page.pollTimer);
    const form = $('token-form');
    form.hidden = false;
    showStatusError(message);
    $('token-input').focus();
  }

  function submitToken(event) {
    event.preventDefault();
    const token = $('token-input').value.trim();
    if (!token) return;
    storeToken(token);
    $('token-input').value = '';
    $('token-form').hidden = true;
    page.waitingForToken = false;
    setStatusLine('token set, connecting…', false);
    pollNow();
  }

  /* ---------- talking to the server ---------- */

  async function apiRequest(path, options) {
    const headers = {'Accept': 'application/json'};
    Object.assign(headers, (options && options.headers) || {});
    if (page.token) headers['Authorization'] = 'Bearer ' + page.token;
    const response = await fetch(path, Object.assign({}, options, {headers: headers, cache: 'no-store'}));
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;  // not JSON (a proxy's error page, an empty answer)
    }
    return {response: response, body: body};
  }

  function describeFailure(response, body) {
    const why = body && typeof body.error === 'string' ? body.error : response.statusText;
    return 'HTTP ' + response.status + (why ? ': ' + why : '');
  }

  function tokenMessage() {
    return page.token ? 'the token was refused (401): enter the right one'
      : 'this dashboard needs a token (401): enter it below';
  }

  /* ---------- polling ---------- */

  function pollDelay() {
    return Date.now() < page.fastUntil ? FAST_POLL_MS : POLL_MS;
  }

  function scheduleNextPoll() {
    clearTimeout(page.pollTimer);
    if (page.waitingForToken) return;
    page.pollTimer = setTimeout(pollNow, pollDelay());
  }

  function pollFastForAWhile() {
    page.fastUntil = Date.now() + FAST_FOR_MS;
    scheduleNextPoll();
  }

  async function pollNow() {
    clearTimeout(page.pollTimer);
    if (page.pollInFlight || page.waitingForToken) return;
    page.pollInFlight = true;
    try {
      await fetchState();
    } finally {
      page.pollInFlight = false;
      scheduleNextPoll();
    }
  }

  async function fetchState() {
    const since = lastTickSeq();
    const requestNumber = ++page.requestsSent;
    let answer;
    try {
      answer = await apiRequest('/api/state?since=' + encodeURIComponent(since));
    } catch (err) {
      showStatusError('server unreachable (' + (err && err.message ? err.message : err) + ')');
      return;
    }
    const {response, body} = answer;
    if (response.status === 401) {
      askForToken(tokenMessage());
      return;
    }
    if (!response.ok || !body || typeof body !== 'object') {
      showStatusError('the server answered ' + describeFailure(response, body));
      return;
    }
    applyState(body, requestNumber, since);
  }

  function lastTickSeq() {
    const ticks = page.ticks;
    return ticks.length ? ticks[ticks.length - 1].seq : 0;
  }

  /* Renders a state unless a newer one (a later request's answer) already was. */
  function applyState(state, requestNumber, since) {
    if (requestNumber < page.newestApplied) return;
    if (isNumber(state.seq) && since > 0 && state.seq < since) {
      // The dashboard restarted (its ticks count from 1 again): start over.
      page.ticks = [];
      page.newestApplied = requestNumber;
      setTimeout(pollNow, 0);
      return;
    }
    page.newestApplied = requestNumber;
    page.lastError = null;
    page.state = state;
    appendTicks(state.history);
    renderAll();
  }

  function appendTicks(history) {
    if (!Array.isArray(history)) return;
    let last = lastTickSeq();
    for (const tick of history) {
      if (tick && isNumber(tick.seq) && tick.seq > last) {
        page.ticks.push(tick);
        last = tick.seq;
      }
    }
    if (page.ticks.length > MAX_TICKS) page.ticks.splice(0, page.ticks.length - MAX_TICKS);
  }

  /* ---------- rendering ---------- */

  function renderAll() {
    const parts = [renderStatusLine, renderMembers, renderTimeline, renderNodes, renderCharts, renderSupervisors];
    for (const render of parts) {
      try {
        render();
      } catch (err) {
        console.error('dashboard: ' + render.name + ' failed', err);
      }
    }
  }

  /* ----- status line ----- */

  function setStatusLine(text, isError) {
    const line = $('status-line');
    const notice = page.notice && Date.now() < page.notice.until ? page.notice : null;
    line.textContent = notice ? text + ' — ' + notice.text : text;
    line.classList.toggle('error', Boolean(isError || (notice && notice.isError)));
  }

  function showStatusError(message) {
    page.lastError = message;
    const state = page.state;
    const since = state ? '; last update ' + formatClock(state.time) : '';
    setStatusLine(message + since, true);
  }

  function showNotice(text, isError) {
    page.notice = {text: text, isError: isError, until: Date.now() + NOTICE_MS};
    if (page.lastError) showStatusError(page.lastError);
    else renderStatusLine();
  }

  function renderStatusLine() {
    const state = page.state;
    if (!state) return;
    let where = 'node ' + state.node;
    if (state.viewed_from && state.viewed_from !== state.node) {
      where += '; members as seen from ' + state.viewed_from;
    }
    if (isNumber(state.unpolled) && state.unpolled > 0) {
      where += '; ' + formatCount(state.unpolled) + ' live members not polled';
    }
    setStatusLine('updated ' + formatClock(state.time) + ' (' + where + ')', false);
  }

  /* ----- members ----- */

  function createMemberRow() {
    return rowWithCells(5);
  }

  function updateMemberRow(tr, member) {
    tr.dataset.member = member.name;
    tr.dataset.status = member.status;
    const cells = tr.cells;
    const status = oneOf(member.status, MEMBER_STATUSES, 'other');
    const badgeText = String(member.status);
    const current = cells[0].firstElementChild;
    if (!current || current.textContent !== badgeText) {
      cells[0].replaceChildren(badge(badgeText, 'status-' + status));
    }
    setCell(cells[1], member.name, 'name');
    setCell(cells[2], hostPort(member.address, member.port), 'mono');
    setCell(cells[3], formatCount(member.incarnation), 'num');
    setCell(cells[4], member.workers === null || member.workers === undefined ? '–' : formatCount(member.workers), 'num');
  }

  function renderMembers() {
    const members = (page.state.members || []).slice().sort((a, b) => byNaturalOrder(a.name, b.name));
    const tbody = $('members').tBodies[0];
    syncChildren(tbody, members, m => m.name, createMemberRow, updateMemberRow);
  }

  /* ----- timeline ----- */

  function eventClass(event) {
    const kind = oneOf(event.kind, EVENT_KINDS, 'other');
    const status = event.kind === 'member' ? ' became-' + oneOf(event.status, MEMBER_STATUSES, 'other') : '';
    return 'event kind-' + kind + status;
  }

  function timelineItem(event) {
    const li = element('li', eventClass(event));
    li.appendChild(element('time', 'clock', formatClock(event.time)));
    li.appendChild(element('span', 'kind', event.kind));
    li.appendChild(element('span', 'text', event.text));
    return li;
  }

  function renderTimeline() {
    const events = Array.isArray(page.state.timeline) ? page.state.timeline : [];
    const signature = JSON.stringify([events.length, events[0], events[events.length - 1]]);
    if (signature === page.renderedTimeline) return;
    page.renderedTimeline = signature;
    const list = $('timeline');
    // Only events are <li>s (an empty list says "no events yet" through CSS).
    list.replaceChildren(...events.slice().reverse().map(timelineItem));
  }

  /* ----- nodes and workers ----- */

  const WORKER_COLUMNS = ['worker', 'pid', 'alive', 'actors', 'CPU %', 'RSS MiB', 'mailbox',
    'msg/s', 'restarts', 'unread', 'stuck', ''];

  function createNodeSection() {
    const section = element('section', 'node');
    const header = element('header', 'node-header');
    header.appendChild(element('h3', 'node-name'));
    header.appendChild(element('span', 'node-reach'));
    header.appendChild(element('span', 'node-stats'));
    section.appendChild(header);
    const scroll = element('div', 'scroll');
    const table = element('table', 'workers');
    const headRow = document.createElement('tr');
    WORKER_COLUMNS.forEach((label, i) => {
      const th = element('th', i === 0 || (i >= 3 && i <= 9) ? 'num' : '', label);
      headRow.appendChild(th);
    });
    table.createTHead().appendChild(headRow);
    table.appendChild(document.createElement('tbody'));
    scroll.appendChild(table);
    section.appendChild(scroll);
    return section;
  }

  function describeReach(node) {
    const ago = isNumber(node.updated) ? 'answered ' + formatAgo(serverNow() - node.updated) : 'never answered';
    if (node.reachable) return {text: 'reachable · ' + ago, ok: true};
    return {text: 'unreachable: ' + (node.error || 'no answer') + ' · ' + ago, ok: false};
  }

  function describeNodeStats(stats) {
    if (!stats || typeof stats !== 'object') return '';
    const parts = [];
    if (isNumber(stats.asks)) parts.push('asks ' + formatCount(stats.asks));
    if (isNumber(stats.tells)) parts.push('tells ' + formatCount(stats.tells));
    if (isNumber(stats.dead_letters)) parts.push('dead letters ' + formatCount(stats.dead_letters));
    if (isNumber(stats.worker_deaths)) parts.push('worker deaths ' + formatCount(stats.worker_deaths));
    return parts.join(' · ');
  }

  function updateNodeSection(section, entry) {
    const [name, node] = entry;
    section.dataset.node = name;
    const reach = describeReach(node);
    section.classList.toggle('unreachable', !reach.ok);
    setCell(section.querySelector('.node-name'), name, 'node-name');
    setCell(section.querySelector('.node-reach'), reach.text, 'node-reach ' + (reach.ok ? 'ok' : 'bad'));
    setCell(section.querySelector('.node-stats'), describeNodeStats(node.stats), 'node-stats');
    const drills = Boolean(page.state.drills);
    const table = section.querySelector('table.workers');
    table.classList.toggle('drills', drills);
    const workers = Array.isArray(node.workers) ? node.workers.slice().sort((a, b) => a.id - b.id) : [];
    // an unreachable node's workers are what it said last: shown as unknown, with no kill button
    const rows = workers.map(worker => ({node: name, worker: worker, drills: drills && reach.ok, stale: !reach.ok}));
    syncChildren(table.tBodies[0], rows, row => row.worker.id, createWorkerRow, updateWorkerRow);
  }

  function createWorkerRow() {
    return rowWithCells(WORKER_COLUMNS.length);
  }

  function describeStuck(stuck) {
    if (!stuck || typeof stuck !== 'object') return '';
    const seconds = isNumber(stuck.seconds) ? stuck.seconds.toFixed(1) + ' s' : 'stuck';
    if (stuck.actor) {
      const cls = stuck.class ? ' (' + stuck.class + ')' : '';
      const message = stuck.message ? ' handling ' + stuck.message : '';
      return seconds + ' in ' + stuck.actor + cls + message;
    }
    return seconds + ', in a call holding its GIL (watchdog silent)';
  }

  function updateWorkerRow(tr, row) {
    const w = row.worker;
    tr.dataset.worker = String(w.id);
    tr.dataset.alive = row.stale ? 'unknown' : (w.alive ? 'true' : 'false');
    tr.dataset.pid = w.pid === null || w.pid === undefined ? '' : String(w.pid);
    tr.classList.toggle('dead', !w.alive);
    tr.classList.toggle('stuck', Boolean(w.stuck));
    const c = tr.cells;
    setCell(c[0], w.id, 'num');
    setCell(c[1], w.pid === null || w.pid === undefined ? '–' : w.pid, 'mono');
    if (row.stale) setCell(c[2], 'unknown', 'alive-unknown');
    else setCell(c[2], w.alive ? 'yes' : 'DEAD', w.alive ? 'alive-yes' : 'alive-no');
    setCell(c[3], formatCount(w.actors), 'num');
    setCell(c[4], formatPercent(w.cpu_percent), 'num');
    setCell(c[5], formatMiB(w.rss_bytes), 'num');
    setCell(c[6], formatCount(w.mailbox), 'num');
    setCell(c[7], formatRate(w.msgs_per_s), 'num');
    setCell(c[8], formatCount(w.restarts), 'num');
    setCell(c[9], formatBytes(w.queued_bytes), 'num');
    setCell(c[10], describeStuck(w.stuck), w.stuck ? 'stuck-cell' : '');
    updateKillCell(c[11], row);
  }

  function killKey(node, worker) {
    return node + '/' + worker;
  }

  function updateKillCell(td, row) {
    td.className = 'action';
    const wanted = row.drills && row.worker.alive;
    let button = td.querySelector('button.kill');
    if (!wanted) {
      if (button) button.remove();
      return;
    }
    if (!button) {
      button = element('button', 'kill', 'kill');
      button.type = 'button';
      td.appendChild(button);
    }
    button.dataset.node = row.node;
    button.dataset.worker = String(row.worker.id);
    button.title = 'kill the process of worker ' + row.worker.id + ' of ' + row.node + ' (a drill)';
    button.disabled = page.pendingKills.has(killKey(row.node, row.worker.id));
  }

  function renderNodes() {
    const nodes = page.state.nodes || {};
    const entries = sortedNodeNames(nodes).map(name => [name, nodes[name]]);
    const container = $('nodes');
    syncChildren(container, entries, entry => entry[0], createNodeSection, updateNodeSection);
    if (!entries.length) container.appendChild(element('p', 'empty', 'no node polled yet'));
  }

  /* ----- kill-worker drill ----- */

  async function killWorker(button) {
    const node = button.dataset.node;
    const worker = Number(button.dataset.worker);
    const key = killKey(node, worker);
    if (page.pendingKills.has(key)) return;
    page.pendingKills.add(key);
    button.disabled = true;
    try {
      const {response, body} = await apiRequest('/api/kill-worker', {
        method: 'POST',
        headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({node: node, worker: worker}),
      });
      if (response.status === 401) {
        showNotice('kill ' + key + ': refused, the token is missing or wrong', true);
        askForToken(tokenMessage());
      } else if (!response.ok || !body || body.ok !== true) {
        showNotice('kill ' + node + ' worker ' + worker + ' failed: ' + describeFailure(response, body), true);
      } else {
        showNotice('killed ' + node + ' worker ' + worker + ' (pid ' + body.pid + ')', false);
        // Taken right after the kill: newer than any poll still under way, whose answer is then dropped.
        if (body.state && typeof body.state === 'object') applyState(body.state, ++page.requestsSent, lastTickSeq());
      }
    } catch (err) {
      showNotice('kill ' + node + ' worker ' + worker + ' failed: server unreachable', true);
    } finally {
      page.pendingKills.delete(key);
      if (page.state) renderNodes();
      pollFastForAWhile();
    }
  }

  function onNodesClick(event) {
    const button = event.target.closest('button.kill');
    if (button && !button.disabled) killWorker(button);
  }

  /* ----- charts ----- */

  function colour(index) {
    return PALETTE[index % PALETTE.length];
  }

  function tickNode(tick, name) {
    return tick.nodes && tick.nodes[name] ? tick.nodes[name] : null;
  }

  function numberOrNull(value) {
    return isNumber(value) ? value : null;
  }

  function nodesInTicks(ticks) {
    const names = new Set();
    for (const tick of ticks) for (const name of Object.keys(tick.nodes || {})) names.add(name);
    return Array.from(names).sort(byNaturalOrder);
  }

  function perNodeSeries(field) {
    return function (ticks) {
      return nodesInTicks(ticks).map((name, i) => ({
        label: name,
        stroke: colour(i),
        pick: tick => {
          const n = tickNode(tick, name);
          return n ? numberOrNull(n[field]) : null;
        },
      }));
    };
  }

  function cpuSeries(ticks) {
    const workersByNode = new Map();
    for (const tick of ticks) {
      for (const [name, n] of Object.entries(tick.nodes || {})) {
        if (!workersByNode.has(name)) workersByNode.set(name, new Set());
        for (const id of Object.keys((n && n.cpu) || {})) workersByNode.get(name).add(id);
      }
    }
    const series = [];
    for (const name of Array.from(workersByNode.keys()).sort(byNaturalOrder)) {
      for (const id of Array.from(workersByNode.get(name)).sort(byNaturalOrder)) {
        series.push({
          label: name + '/worker ' + id,
          stroke: colour(series.length),
          pick: tick => {
            const n = tickNode(tick, name);
            return n && n.cpu ? numberOrNull(n.cpu[id]) : null;
          },
        });
      }
    }
    return series;
  }

  function deathsAndRestartsSeries(ticks) {
    const series = [];
    nodesInTicks(ticks).forEach((name, i) => {
      for (const field of ['deaths', 'restarts']) {
        series.push({
          label: name + ' ' + (field === 'deaths' ? 'worker deaths' : 'restarts'),
          stroke: colour(i),
          dash: field === 'restarts' ? [6, 4] : undefined,
          stepped: true,
          pick: tick => {
            const n = tickNode(tick, name);
            return n ? numberOrNull(n[field]) : null;
          },
        });
      }
    });
    return series;
  }

  const CHART_DEFS = [
    {id: 'msgs', title: 'Messages routed per second, per node', unit: 'msg/s', floor: 5,
      series: perNodeSeries('msgs_per_s')},
    {id: 'cpu', title: 'CPU % per worker', unit: '%', floor: 10, series: cpuSeries},
    {id: 'deaths', title: 'Worker deaths (solid) and supervisor restarts (dashed) per tick', unit: 'per tick',
      floor: 1, integer: true, series: deathsAndRestartsSeries},
    {id: 'dead-letters', title: 'Dead letters per second, per node', unit: 'per s', floor: 1,
      series: perNodeSeries('dead_letters_per_s')},
  ];

  function chartWidth(box) {
    return Math.max(240, Math.floor(box.clientWidth));
  }

  function yRange(def) {
    return function (u, dataMin, dataMax) {
      const top = isNumber(dataMax) ? Math.max(def.floor, dataMax * 1.1) : def.floor;
      return [0, def.integer ? Math.ceil(top) : top];
    };
  }

  function plotOptions(def, box, series) {
    const stepped = uPlot.paths && uPlot.paths.stepped ? uPlot.paths.stepped({align: 1}) : undefined;
    return {
      title: def.title,
      width: chartWidth(box),
      height: CHART_HEIGHT,
      cursor: {drag: {x: false, y: false}},
      legend: {markers: {dash: (u, i) => (i > 0 && series[i - 1].dash ? 'dashed' : 'solid')}},
      scales: {x: {time: true}, y: {range: yRange(def)}},
      axes: [
        {},
        {label: def.unit, size: 56, incrs: def.integer ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] : undefined},
      ],
      series: [{label: 'time'}].concat(series.map(s => ({
        label: s.label,
        stroke: s.stroke,
        width: 2,
        dash: s.dash,
        paths: s.stepped ? stepped : undefined,
        spanGaps: false,
        points: {show: false},
        value: (u, v) => (v === null || v === undefined ? '–' : (def.integer ? String(v) : formatRate(v))),
      }))),
    };
  }

  function chartData(ticks, series) {
    const data = [ticks.map(t => t.time)];
    for (const s of series) data.push(ticks.map(s.pick));
    return data;
  }

  function chartBox(def) {
    let entry = page.charts.get(def.id);
    if (!entry) {
      const box = element('div', 'chart');
      box.dataset.chart = def.id;
      $('charts').appendChild(box);
      entry = {def: def, box: box, plot: null, seriesKey: null};
      page.charts.set(def.id, entry);
    }
    return entry;
  }

  function renderChart(def, ticks) {
    const entry = chartBox(def);
    const series = def.series(ticks);
    const seriesKey = series.map(s => s.label).join('\n');
    const data = chartData(ticks, series);
    if (entry.plot && entry.seriesKey === seriesKey) {
      entry.plot.setData(data);
      return;
    }
    // New series (a node or worker appeared or went): build the chart again.
    if (entry.plot) entry.plot.destroy();
    entry.box.replaceChildren();
    entry.plot = new uPlot(plotOptions(def, entry.box, series), data, entry.box);
    entry.seriesKey = seriesKey;
  }

  function renderCharts() {
    if (typeof uPlot !== 'function') {
      $('charts').replaceChildren(element('p', 'empty', 'charts unavailable: uPlot.iife.min.js did not load'));
      return;
    }
    for (const def of CHART_DEFS) renderChart(def, page.ticks);
  }

  let resizePending = false;

  function resizeCharts() {
    resizePending = false;
    for (const entry of page.charts.values()) {
      if (entry.plot) entry.plot.setSize({width: chartWidth(entry.box), height: CHART_HEIGHT});
    }
  }

  function onWindowResize() {
    if (resizePending) return;
    resizePending = true;
    requestAnimationFrame(resizeCharts);
  }

  /* ----- supervision trees ----- */

  function breakerBadge(breaker) {
    if (!breaker) return badge('no breaker', 'breaker-none');
    const state = oneOf(breaker.state, BREAKER_STATES, 'other');
    const text = 'breaker ' + String(breaker.state).replace('_', '-') +
      ' (trips ' + formatCount(breaker.trips) + ', failures ' + formatCount(breaker.failures) + ')';
    return badge(text, 'breaker-' + state);
  }

  function supervisorLine(sup) {
    const line = element('div', 'sup-line');
    line.appendChild(element('span', 'sup-name', sup.name));
    line.appendChild(element('span', 'sup-strategy', sup.strategy));
    const limit = sup.max_restarts === null || sup.max_restarts === undefined ? 'no restart limit'
      : 'at most ' + sup.max_restarts + ' in ' + sup.within_seconds + ' s';
    line.appendChild(element('span', 'sup-restarts' + (sup.restarts > 0 ? ' hot' : ''),
      'restarts ' + formatCount(sup.restarts)));
    line.appendChild(element('span', 'sup-limit', limit));
    line.appendChild(breakerBadge(sup.breaker));
    return line;
  }

  function childItem(child) {
    const li = element('li', 'child' + (child.running ? '' : ' stopped'));
    li.appendChild(element('span', 'child-key', child.key));
    if (child.class) li.appendChild(element('span', 'child-class', child.class));
    li.appendChild(element('span', 'child-restarts' + (child.restarts > 0 ? ' hot' : ''),
      'restarts ' + formatCount(child.restarts)));
    const where = child.worker === null || child.worker === undefined ? (child.supervisor ? 'supervisor' : 'no worker')
      : 'worker ' + child.worker;
    li.appendChild(element('span', 'child-worker', where));
    li.appendChild(element('span', child.running ? 'running yes' : 'running no', child.running ? 'running' : 'not running'));
    return li;
  }

  /* One supervisor with its children; a child that is a supervisor is shown
   * with its own subtree in its place (matched by id, else by name), and any
   * sub-supervisor not among the children shown comes after them. */
  function supervisorItem(sup, subsOf) {
    const li = element('li', 'supervisor');
    li.appendChild(supervisorLine(sup));
    const subs = (subsOf.get(sup.id) || []).slice();
    const children = Array.isArray(sup.children) ? sup.children : [];
    const list = element('ul', 'children');
    for (const child of children) {
      let sub = -1;
      if (child.supervisor) {
        sub = subs.findIndex(s => s.id === child.id);
        if (sub < 0) sub = subs.findIndex(s => s.name === child.key);
      }
      if (sub >= 0) list.appendChild(supervisorItem(subs.splice(sub, 1)[0], subsOf));
      else list.appendChild(childItem(child));
    }
    for (const rest of subs) list.appendChild(supervisorItem(rest, subsOf));
    const hidden = (sup.children_total || 0) - children.length;
    if (hidden > 0) list.appendChild(element('li', 'more', hidden + ' more'));
    if (!list.children.length) list.appendChild(element('li', 'empty', 'no children'));
    li.appendChild(list);
    return li;
  }

  function supervisionTree(supervisors) {
    const ids = new Set(supervisors.map(s => s.id));
    const subsOf = new Map();
    const roots = [];
    for (const sup of supervisors) {
      if (sup.parent === null || sup.parent === undefined || !ids.has(sup.parent)) {
        roots.push(sup);
      } else {
        if (!subsOf.has(sup.parent)) subsOf.set(sup.parent, []);
        subsOf.get(sup.parent).push(sup);
      }
    }
    const tree = element('ul', 'tree');
    for (const root of roots) tree.appendChild(supervisorItem(root, subsOf));
    return tree;
  }

  function supervisorsBlock(name, supervisors) {
    const block = element('section', 'sup-node');
    block.dataset.node = name;
    block.appendChild(element('h3', 'node-name', name));
    if (!Array.isArray(supervisors) || !supervisors.length) {
      block.appendChild(element('p', 'empty', 'no supervision data'));
    } else {
      block.appendChild(supervisionTree(supervisors));
    }
    return block;
  }

  function renderSupervisors() {
    const nodes = page.state.nodes || {};
    const names = sortedNodeNames(nodes);
    const container = $('supervisors');
    const rendered = page.renderedSupervisors;
    const sameNodes = names.length === rendered.size && names.every(n => rendered.has(n));
    const changed = !sameNodes || names.some(n => rendered.get(n) !== JSON.stringify(nodes[n].supervisors || null));
    if (!changed) return;
    rendered.clear();
    const blocks = names.map(name => {
      rendered.set(name, JSON.stringify(nodes[name].supervisors || null));
      return supervisorsBlock(name, nodes[name].supervisors);
    });
    if (!blocks.length) blocks.push(element('p', 'empty', 'no node polled yet'));
    container.replaceChildren(...blocks);
  }

  /* ---------- start ---------- */

  function start() {
    takeTokenFromAddress();
    if (!page.token) page.token = readStoredToken();
    $('token-form').addEventListener('submit', submitToken);
    $('nodes').addEventListener('click', onNodesClick);
    window.addEventListener('resize', onWindowResize);
    window.addEventListener('hashchange', onHashChange);
    pollNow();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
}());
