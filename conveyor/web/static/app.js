/* conveyor dashboard: a page that reads conveyor's JSON API (relative URLs, so it works wherever the
   server is mounted) with the token the user pastes in. The token lives in sessionStorage and goes in
   an Authorization header on every request, never in a cookie, so no other site can act with it.
   Live updates come from GET api/events/stream, read with fetch() and a stream reader, because an
   EventSource cannot send the header.

   Every piece of data reaches the page as text (textContent, attributes), never as markup. Actions
   a user may not take are not shown (or are disabled): GET api/me says what the user may do; the
   server checks again on every request. */
'use strict';

(() => {
  const TOKEN_KEY = 'conveyor.token';
  const PAGE_SIZE = 50;
  const PHONE = window.matchMedia('(max-width: 760px)');
  const JOB_STATUSES = ['queued', 'scheduled', 'running', 'waiting', 'succeeded', 'failed', 'cancelled'];
  const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);
  const JOB_KINDS = new Set(['enqueued', 'started', 'progress', 'retry_scheduled', 'succeeded', 'failed',
    'timed_out', 'cancelled', 'handed_back', 'rescued', 'discarded', 'requeued', 'stage_done', 'resumed',
    'message_received']);
  const FAILURE_KINDS = new Set(['failed', 'timed_out']);

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    me: null,
    page: null, // the current page's context (PageContext)
    stream: null, // the live stream's AbortController
    lastSeq: 0, // the newest event seen on the stream
    unread: 0,
  };

  // ---------------------------------------------------------------------------------------------
  // DOM helpers: everything goes in as text or attributes

  /** An element: h('a', {href: '#/jobs', class: 'x', onclick: fn}, 'text', child, [more]). */
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    setProps(node, props);
    append(node, children);
    return node;
  }

  function setProps(node, props) {
    if (!props) return;
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
      else if (key === 'class') node.setAttribute('class', value);
      else if (key === 'text') node.textContent = String(value);
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else if (key === 'style') Object.assign(node.style, value); // CSSOM: allowed by the page's CSP
      else if (key in node && typeof value !== 'string' && key !== 'list') node[key] = value;
      else node.setAttribute(key, value === true ? '' : String(value));
    }
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    append(node, children);
    return node;
  }

  const $ = (id) => document.getElementById(id);

  /** Say something to screen readers (and, with toast, show it for a few seconds). */
  function announce(text) {
    const region = $('announce');
    region.textContent = '';
    setTimeout(() => { region.textContent = text; }, 30);
  }

  function toast(text, bad = false) {
    const node = h('div', {class: bad ? 'toast bad' : 'toast', role: bad ? 'alert' : 'status'}, text);
    $('toasts').append(node);
    setTimeout(() => node.remove(), bad ? 9000 : 4500);
  }

  // ---------------------------------------------------------------------------------------------
  // formatting

  function isoOf(ts) { return new Date(ts * 1000).toISOString(); }
  function localOf(ts) { return new Date(ts * 1000).toLocaleString(); }

  function relative(ts) {
    const secs = ts - Date.now() / 1000;
    const abs = Math.abs(secs);
    let text;
    if (abs < 1.5) return 'now';
    if (abs < 90) text = `${Math.round(abs)} s`;
    else if (abs < 90 * 60) text = `${Math.round(abs / 60)} min`;
    else if (abs < 36 * 3600) text = `${Math.round(abs / 3600)} h`;
    else text = `${Math.round(abs / 86400)} d`;
    return secs < 0 ? `${text} ago` : `in ${text}`;
  }

  /** A time as a <time> that reads "3 min ago", with the exact local time on hover; kept fresh. */
  function when(ts) {
    if (ts === null || ts === undefined) return h('span', {class: 'muted'}, '—');
    return h('time', {datetime: isoOf(ts), title: localOf(ts), dataset: {ts: String(ts)}}, relative(ts));
  }

  function seconds(value) {
    if (value === null || value === undefined) return '—';
    if (value < 1) return `${Math.round(value * 1000)} ms`;
    if (value < 120) return `${value.toFixed(value < 10 ? 2 : 1)} s`;
    if (value < 7200) return `${(value / 60).toFixed(1)} min`;
    return `${(value / 3600).toFixed(1)} h`;
  }

  function json(value) {
    try { return JSON.stringify(value, null, 2); } catch { return String(value); }
  }

  function brief(value, max = 80) {
    let text;
    try { text = JSON.stringify(value); } catch { text = String(value); }
    if (text === undefined) text = '';
    return text.length > max ? `${text.slice(0, max - 1)}…` : text;
  }

  function shortId(id) { return id.length > 12 ? id.slice(0, 12) : id; }

  function badge(status, text) {
    return h('span', {class: `badge ${String(status).replace(/[^a-z_]/gi, '')}`}, text || status);
  }

  function progressBar(percent, message, big = false) {
    const pct = Math.max(0, Math.min(100, Number(percent) || 0));
    const fill = h('span', {style: {width: `${pct}%`}});
    return h('div', {class: big ? 'meter big' : 'meter'},
      h('div', {class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100',
        'aria-valuenow': String(Math.round(pct)), 'aria-label': message ? `Progress: ${message}` : 'Progress'}, fill),
      h('span', {class: 'pct'}, `${Math.round(pct)}%`));
  }

  setInterval(() => {
    for (const node of document.querySelectorAll('time[data-ts]')) {
      node.textContent = relative(Number(node.dataset.ts));
    }
  }, 10000);

  // ---------------------------------------------------------------------------------------------
  // the API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function apiUrl(path, query) {
    const url = new URL(`api/${path}`, document.baseURI);
    for (const [key, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, String(value));
    }
    return url;
  }

  /** A JSON request to the API with the user's token; throws ApiError with the server's message. */
  async function api(path, {method = 'GET', body, query, signal} = {}) {
    const headers = {Authorization: `Bearer ${state.token}`, Accept: 'application/json'};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(apiUrl(path, query), {
        method, headers, signal, credentials: 'omit', cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      if (error.name === 'AbortError') throw error;
      throw new ApiError(0, 'network', 'The server could not be reached.');
    }
    const text = await response.text();
    let data = null;
    if (text) { try { data = JSON.parse(text); } catch { data = null; } }
    if (response.status === 401 && state.me) {
      signOut('The server no longer accepts this token. Sign in again.');
    }
    if (!response.ok) {
      const message = (data && data.message) || `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, (data && data.error) || `http_${response.status}`, message);
    }
    return data;
  }

  /** Run an action, say how it went (toast + screen reader), and refresh the page after it. */
  async function act(label, run, done) {
    try {
      const result = await run();
      const said = typeof done === 'function' ? done(result) : (done || `${label}: done`);
      toast(said);
      announce(said);
      if (state.page) state.page.refresh();
      return result;
    } catch (error) {
      if (error.name === 'AbortError') return undefined;
      const said = `${label} failed: ${error.message}`;
      toast(said, true);
      return undefined;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // what the user may do (the server checks again; this only hides what would be refused)

  const can = {
    write: () => Boolean(state.me && state.me.can_write),
    viewOthers: () => Boolean(state.me && (state.me.view_others || state.me.system)),
    modifyOthers: () => can.write() && Boolean(state.me.modify_others || state.me.system),
    system: () => Boolean(state.me && state.me.system),
    modify: (owner) => can.write() && ((owner !== null && owner !== undefined && owner === state.me.name)
      || can.modifyOthers()),
  };

  // ---------------------------------------------------------------------------------------------
  // signing in and out

  async function signIn(token) {
    state.token = token.trim();
    const me = await api('me');
    state.me = me;
    sessionStorage.setItem(TOKEN_KEY, state.token);
    return me;
  }

  function signOut(reason) {
    state.me = null;
    state.token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    stopStream();
    if (state.page) state.page.close();
    state.page = null;
    showLogin(reason || '');
  }

  function showLogin(reason) {
    $('top').hidden = true;
    $('view').replaceChildren();
    $('login').hidden = false;
    $('login-error').textContent = reason || '';
    const input = $('token');
    input.value = '';
    input.focus();
  }

  function describeMe(me) {
    const roles = [];
    if (me.system) roles.push('system');
    else {
      if (me.modify_others) roles.push('modify others');
      else if (me.view_others) roles.push('view others');
      if (!me.can_write) roles.push('read-only');
    }
    return roles.length ? `${me.name} (${roles.join(', ')})` : me.name;
  }

  function enterApp() {
    $('login').hidden = true;
    $('top').hidden = false;
    $('who').textContent = describeMe(state.me);
    startStream();
    refreshUnread();
    render(true);
  }

  $('login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = $('token').value;
    if (!token.trim()) return;
    $('login-error').textContent = '';
    try {
      await signIn(token);
      enterApp();
    } catch (error) {
      state.token = '';
      $('login-error').textContent = error.status === 401
        ? 'That token was not accepted. Check it, or make a new one with conveyor tokens create.'
        : `Could not sign in: ${error.message}`;
      $('token').focus();
    }
  });

  $('logout').addEventListener('click', () => signOut('Signed out.'));

  // ---------------------------------------------------------------------------------------------
  // the live stream: Server-Sent Events over fetch, resumed from the last seq after a drop

  function setLive(mode) {
    const node = $('live-state');
    node.dataset.state = mode;
    node.textContent = mode;
  }

  function stopStream() {
    if (state.stream) state.stream.abort();
    state.stream = null;
    setLive('offline');
  }

  function startStream() {
    stopStream();
    const controller = new AbortController();
    state.stream = controller;
    followStream(controller).catch(() => {});
  }

  async function followStream(controller) {
    let delay = 1000;
    while (!controller.signal.aborted) {
      try {
        const headers = {Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream'};
        const query = {};
        if (state.lastSeq) {
          headers['Last-Event-ID'] = String(state.lastSeq);
          query.after = state.lastSeq;
        }
        const response = await fetch(apiUrl('events/stream', query), {
          headers, signal: controller.signal, credentials: 'omit', cache: 'no-store',
        });
        if (response.status === 401) { signOut('The server no longer accepts this token. Sign in again.'); return; }
        if (!response.ok || !response.body) throw new Error(`stream answered ${response.status}`);
        setLive('live');
        delay = 1000;
        await readFrames(response.body, controller.signal);
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      if (controller.signal.aborted) return;
      setLive('reconnecting');
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 15000);
    }
  }

  async function readFrames(body, signal) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    try {
      for (;;) {
        const {value, done} = await reader.read();
        if (done || signal.aborted) return;
        buffer += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          handleFrame(frame);
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  function handleFrame(frame) {
    let id = null;
    const data = [];
    for (const line of frame.split('\n')) {
      if (!line || line.startsWith(':')) continue; // a comment: the keep-alive
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'id') id = value;
      else if (field === 'data') data.push(value);
    }
    if (id !== null && /^\d+$/.test(id)) state.lastSeq = Math.max(state.lastSeq, Number(id));
    if (!data.length) return;
    let event;
    try { event = JSON.parse(data.join('\n')); } catch { return; }
    if (typeof event.seq === 'number') state.lastSeq = Math.max(state.lastSeq, event.seq);
    onLiveEvent(event);
  }

  const refreshUnreadSoon = throttle(refreshUnread, 1500);

  function onLiveEvent(event) {
    if (event.kind === 'succeeded' || FAILURE_KINDS.has(event.kind)) refreshUnreadSoon();
    if (state.page) state.page.deliver(event);
  }

  async function refreshUnread() {
    if (!state.me) return;
    try {
      const answer = await api('notifications', {query: {unread: 'true', limit: 100}});
      const n = answer.items.filter((item) => !item.read).length;
      state.unread = n;
      const node = $('unread');
      node.hidden = n === 0;
      node.textContent = n >= 100 ? '99+' : String(n);
      node.setAttribute('aria-label', `${n} unread`);
    } catch { /* the count is a convenience */ }
  }

  /** fn at most once every `ms`, the last call always honoured (trailing). */
  function throttle(fn, ms) {
    let timer = null;
    let last = 0;
    return (...args) => {
      const wait = last + ms - Date.now();
      if (timer) return;
      timer = setTimeout(() => {
        timer = null;
        last = Date.now();
        fn(...args);
      }, Math.max(0, wait));
    };
  }

  // ---------------------------------------------------------------------------------------------
  // pages and the router (#/jobs?status=failed, #/jobs/<id>, ...)

  /** One page's life: its abort signal (requests of a page left are dropped), its live listeners,
      its timers, and how to refresh it. */
  class PageContext {
    constructor() {
      this.controller = new AbortController();
      this.listeners = [];
      this.timers = [];
      this.refresher = null;
    }
    get signal() { return this.controller.signal; }
    get closed() { return this.controller.signal.aborted; }
    get(path, query) { return api(path, {query, signal: this.signal}); }
    onEvent(fn) { this.listeners.push(fn); }
    every(ms, fn) { this.timers.push(setInterval(() => { if (!document.hidden) fn(); }, ms)); }
    deliver(event) {
      for (const fn of this.listeners) {
        try { fn(event); } catch (error) { console.error(error); }
      }
    }
    refresh() { if (this.refresher && !this.closed) this.refresher(); }
    close() {
      this.controller.abort();
      for (const timer of this.timers) clearInterval(timer);
      this.listeners = [];
    }
  }

  const pages = {};

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, '');
    const mark = raw.indexOf('?');
    const path = mark < 0 ? raw : raw.slice(0, mark);
    const params = new URLSearchParams(mark < 0 ? '' : raw.slice(mark + 1));
    const parts = path.split('/').filter(Boolean).map((part) => {
      try { return decodeURIComponent(part); } catch { return part; }
    });
    return {parts, params};
  }

  function hashFor(path, params) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params || {})) {
      if (value !== undefined && value !== null && value !== '') query.set(key, String(value));
    }
    const qs = query.toString();
    return `#/${path}${qs ? `?${qs}` : ''}`;
  }

  async function render(moveFocus) {
    if (!state.me) return;
    if (state.page) state.page.close();
    const {parts, params} = parseHash();
    let name = parts[0] || 'overview';
    if (name === 'jobs' && parts.length > 1) name = 'job';
    if (!pages[name]) name = 'overview';
    for (const link of document.querySelectorAll('#nav a')) {
      const current = link.dataset.page === name || (name === 'job' && link.dataset.page === 'jobs');
      if (current) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    const context = new PageContext();
    state.page = context;
    const view = $('view');
    view.replaceChildren();
    try {
      await pages[name](view, context, parts, params);
    } catch (error) {
      if (error.name === 'AbortError' || context.closed) return;
      view.replaceChildren(h('div', {class: 'card'},
        h('h1', {tabindex: '-1'}, error.status === 404 ? 'Not found' : 'Something went wrong'),
        h('p', {class: 'error'}, error.message)));
    }
    if (moveFocus && !context.closed) {
      const heading = view.querySelector('h1');
      if (heading) { heading.setAttribute('tabindex', '-1'); heading.focus({preventScroll: true}); }
    }
  }

  window.addEventListener('hashchange', () => render(true));

  /** Fill `box` with what `draw` builds, keeping the keyboard focus on the same control
      (matched by its data-key) when the content is redrawn by a live update. */
  function redraw(box, ...nodes) {
    const active = document.activeElement;
    const key = active && box.contains(active) ? active.dataset.key : null;
    box.replaceChildren(...nodes.flat(Infinity).filter((node) => node !== null && node !== undefined && node !== false));
    if (key) {
      const again = box.querySelector(`[data-key="${CSS.escape(key)}"]`);
      if (again) again.focus({preventScroll: true});
    }
  }

  function heading(title, ...extra) {
    return h('div', {class: 'page-head'}, h('h1', {tabindex: '-1'}, title), ...extra);
  }

  function table(columns, rows, empty) {
    const head = h('tr', null, columns.map((col) => h('th', {scope: 'col', class: col.class}, col.label)));
    const body = h('tbody');
    if (!rows.length) {
      body.append(h('tr', null, h('td', {colspan: String(columns.length), class: 'empty'}, empty || 'Nothing here.')));
    }
    for (const row of rows) body.append(row);
    return h('div', {class: 'table-wrap'}, h('table', null, h('thead', null, head), body));
  }

  function cell(content, cls) { return h('td', {class: cls}, content); }

  function jobLink(id) {
    return h('a', {href: `#/jobs/${encodeURIComponent(id)}`, class: 'id', title: id, 'data-key': `job-${id}`}, shortId(id));
  }

  function loading() { return h('p', {class: 'muted'}, 'Loading…'); }

  function failure(error) {
    return h('p', {class: 'error', role: 'alert'}, `Could not load: ${error.message}`);
  }

  /** A section whose content `load()` (re)draws; errors are shown in it, not thrown. */
  function section(context, box, load) {
    const run = async () => {
      try {
        await load();
      } catch (error) {
        if (error.name === 'AbortError' || context.closed) return;
        redraw(box, failure(error));
      }
    };
    return run;
  }

  // ---------------------------------------------------------------------------------------------
  // overview: totals, throughput and failures over time, queue depths, workers

  const CHART_MINUTES = 60;
  const CHART_KINDS = 'succeeded,failed,timed_out';

  pages.overview = async (view, context) => {
    const totals = h('div', {class: 'stats', 'aria-label': 'Jobs by status'});
    const chartBox = h('div', {class: 'chart'}, loading());
    const queuesBox = h('div', null, loading());
    const workersBox = h('div', null, loading());
    const failuresBox = h('div', null, loading());
    view.append(
      heading('Overview'),
      totals,
      h('section', {class: 'card', 'aria-labelledby': 'tp-title'},
        h('h2', {id: 'tp-title'}, `Throughput and failures, last ${CHART_MINUTES} minutes`), chartBox),
      h('div', {class: 'grid'},
        h('section', {class: 'card', 'aria-labelledby': 'qd-title'}, h('h2', {id: 'qd-title'}, 'Queue depths'), queuesBox),
        h('section', {class: 'card', 'aria-labelledby': 'wk-title'}, h('h2', {id: 'wk-title'}, 'Workers'), workersBox)),
      h('section', {class: 'card', 'aria-labelledby': 'rf-title'}, h('h2', {id: 'rf-title'}, 'Recent failures'), failuresBox),
    );

    const loadStats = section(context, totals, async () => {
      const stats = await context.get('stats');
      const all = totalsOf(stats);
      redraw(totals, JOB_STATUSES.map((status) => h('div', {class: 'stat'},
        h('a', {href: hashFor('jobs', {status})},
          h('div', {class: 'n'}, String(all[status] || 0)), h('div', {class: 'l'}, status)))));
    });
    const loadQueues = section(context, queuesBox, async () => {
      const answer = await context.get('queues', {limit: 500});
      redraw(queuesBox, queueDepths(answer.items));
    });
    const loadWorkers = section(context, workersBox, async () => {
      const answer = await context.get('workers', {limit: 500});
      redraw(workersBox, workerSummary(answer.items));
    });
    const loadFailures = section(context, failuresBox, async () => {
      const answer = await context.get('jobs', {status: 'failed', limit: 5});
      redraw(failuresBox, answer.items.length
        ? h('ul', null, answer.items.map((job) => h('li', null, jobLink(job.id), ' ', h('strong', null, job.task), ' ',
          job.error ? `${job.error.type}: ${job.error.message}` : '', ' ', when(job.finished_at))))
        : h('p', {class: 'muted'}, 'No failed jobs.'));
    });

    const chart = new Throughput(chartBox);
    context.refresher = () => { loadStats(); loadQueues(); loadWorkers(); loadFailures(); };
    context.refresher();
    chart.backfill(context).catch((error) => {
      if (error.name !== 'AbortError' && !context.closed) redraw(chartBox, failure(error));
    });
    const soon = throttle(() => { loadStats(); loadQueues(); }, 2000);
    const failuresSoon = throttle(loadFailures, 2000);
    const workersSoon = throttle(loadWorkers, 2000);
    context.onEvent((event) => {
      chart.add(event);
      if (JOB_KINDS.has(event.kind) || event.kind.startsWith('queue_')) soon();
      if (FAILURE_KINDS.has(event.kind)) failuresSoon();
      if (event.kind.startsWith('worker_') || event.kind === 'stop_requested') workersSoon();
    });
    context.every(15000, () => { loadWorkers(); loadQueues(); chart.draw(); });
  };

  /** Job counts by status over every queue, from GET api/stats ({queue: {status: n}}, 'all' summing them). */
  function totalsOf(stats) {
    const table = stats && stats.queues ? stats.queues : stats || {};
    if (table.all) return table.all;
    const sum = {};
    for (const [queue, counts] of Object.entries(table)) {
      if (!counts || typeof counts !== 'object') continue;
      for (const [status, n] of Object.entries(counts)) if (typeof n === 'number') sum[status] = (sum[status] || 0) + n;
      void queue;
    }
    return sum;
  }

  function queueDepths(items) {
    if (!items.length) return h('p', {class: 'muted'}, 'No queues yet.');
    const deepest = Math.max(1, ...items.map((q) => q.queued + q.scheduled));
    return table([
      {label: 'Queue'}, {label: 'Depth'}, {label: 'Queued', class: 'num'}, {label: 'Running', class: 'num'},
      {label: 'Failed', class: 'num opt'}, {label: 'Oldest due', class: 'opt'},
    ], items.map((q) => h('tr', null,
      cell([h('a', {href: hashFor('jobs', {queue: q.name})}, q.name), q.paused ? [' ', badge('paused')] : null]),
      cell(h('span', {class: 'depth', style: {width: `${Math.round(100 * (q.queued + q.scheduled) / deepest)}px`},
        'aria-hidden': 'true'})),
      cell(String(q.queued), 'num'), cell(String(q.running), 'num'), cell(String(q.failed), 'num opt'),
      cell(q.oldest_due ? when(q.oldest_due) : '—', 'opt'))));
  }

  function workerSummary(items) {
    const alive = items.filter((w) => w.state === 'running' || w.state === 'stopping');
    if (!alive.length) return h('p', {class: 'muted'}, 'No worker is running.');
    return table([{label: 'Worker'}, {label: 'Queues'}, {label: 'Busy', class: 'num'}, {label: 'Seen', class: 'opt'}],
      alive.map((w) => h('tr', null,
        cell([h('span', {class: 'mono', title: w.id}, `${w.host}:${w.pid}`), w.leader ? [' ', badge('on', 'leader')] : null,
          w.state !== 'running' ? [' ', badge(w.state)] : null]),
        cell(w.queues.join(', ')), cell(`${w.in_flight}/${w.concurrency}`, 'num'), cell(when(w.last_seen), 'opt'))),
      'No worker is running.');
  }

  /** Per-minute counts of succeeded and failed jobs over the last hour: backfilled from
      GET api/events, then kept up to date by the live stream. Drawn as an SVG bar chart. */
  class Throughput {
    constructor(box) {
      this.box = box;
      this.ok = new Map(); // minute -> count
      this.bad = new Map();
      this.partial = false;
      this.ready = false;
      this.early = []; // live events that came while the history loaded
      this.drawSoon = throttle(() => this.draw(), 1000);
    }

    /** A live event: counted once the history is in (those it also holds are not counted twice). */
    add(event) {
      if (!this.ready) { this.early.push(event); return; }
      if (this.count(event)) this.drawSoon();
    }

    count(event) {
      const minute = Math.floor(event.at / 60);
      if (event.kind === 'succeeded') this.ok.set(minute, (this.ok.get(minute) || 0) + 1);
      else if (FAILURE_KINDS.has(event.kind)) this.bad.set(minute, (this.bad.get(minute) || 0) + 1);
      else return false;
      return true;
    }

    async backfill(context) {
      const since = Date.now() / 1000 - CHART_MINUTES * 60;
      let cursor = await seqAt(context, since);
      let last = cursor;
      for (let page = 0; page < 20 && cursor !== null; page++) {
        const answer = await context.get('events', {after: cursor, kinds: CHART_KINDS, limit: 500});
        for (const event of answer.items) if (event.at >= since) this.count(event);
        last = Math.max(last, answer.next_after);
        cursor = answer.next_after > cursor ? answer.next_after : null; // null: the end of the log
        if (page === 19 && cursor !== null) this.partial = true;
      }
      for (const event of this.early) if (event.seq > last) this.count(event);
      this.early = [];
      this.ready = true;
      this.draw();
    }

    draw() {
      const now = Math.floor(Date.now() / 1000 / 60);
      const minutes = Array.from({length: CHART_MINUTES}, (_, i) => now - CHART_MINUTES + 1 + i);
      const ok = minutes.map((m) => this.ok.get(m) || 0);
      const bad = minutes.map((m) => this.bad.get(m) || 0);
      const top = Math.max(1, ...minutes.map((_, i) => ok[i] + bad[i]));
      const width = 600;
      const height = 160;
      const left = 0;
      const bottom = 1;
      const slot = (width - left) / CHART_MINUTES;
      const plot = height - bottom - 6;
      const sumOk = ok.reduce((a, b) => a + b, 0);
      const sumBad = bad.reduce((a, b) => a + b, 0);
      const summary = `In the last ${CHART_MINUTES} minutes: ${sumOk} succeeded, ${sumBad} failed (busiest minute: ${top}).`;
      const chart = svg('svg', {viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': summary,
        preserveAspectRatio: 'none'});
      chart.append(svg('line', {class: 'axis', x1: 0, x2: width, y1: height - bottom, y2: height - bottom}));
      chart.append(svg('line', {class: 'axis grid', x1: 0, x2: width, y1: height - bottom - plot, y2: height - bottom - plot}));
      minutes.forEach((minute, i) => {
        const x = left + i * slot + 1;
        const hOk = (ok[i] / top) * plot;
        const hBad = (bad[i] / top) * plot;
        const label = `${new Date(minute * 60000).toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'})}: ${ok[i]} succeeded, ${bad[i]} failed`;
        const group = svg('g', null, svg('title', null, label));
        if (ok[i]) group.append(svg('rect', {class: 'ok', x, width: Math.max(1, slot - 2), y: height - bottom - hOk, height: hOk}));
        if (bad[i]) group.append(svg('rect', {class: 'bad', x, width: Math.max(1, slot - 2), y: height - bottom - hOk - hBad, height: hBad}));
        if (ok[i] || bad[i]) chart.append(group);
      });
      const axis = h('div', {class: 'axis-labels', 'aria-hidden': 'true'},
        [-60, -45, -30, -15].map((m) => h('span', null, `${m} min`)), h('span', null, 'now'));
      redraw(this.box, h('div', {class: 'plot'}, h('span', {class: 'peak', 'aria-hidden': 'true'}, String(top)), chart), axis,
        h('div', {class: 'legend'},
        h('span', null, h('span', {class: 'key ok', 'aria-hidden': 'true'}), `succeeded: ${sumOk}`),
        h('span', null, h('span', {class: 'key bad', 'aria-hidden': 'true'}), `failed: ${sumBad}`),
        this.partial ? h('span', null, 'history partial: the busiest part of the hour was not all loaded') : null),
      h('p', {class: 'sr-only'}, summary));
    }
  }

  /** The seq to read from for events at or after `since` (Unix seconds): a search over
      GET api/events?after=N&limit=1, which answers the first event after N (times grow with seqs). */
  async function seqAt(context, since) {
    // The first event after `after` that the user may see: null if it is new enough (or there is
    // none), else its seq. A page holds only what the user may see; next_after is the last seq read.
    const isNew = async (after) => {
      let cursor = after;
      for (let page = 0; page < 5; page++) {
        const answer = await context.get('events', {after: cursor, kinds: CHART_KINDS, limit: 100});
        if (answer.items.length) return answer.items[0].at < since ? answer.items[0].seq : null;
        if (!(answer.next_after > cursor)) return null; // the end of the log
        cursor = answer.next_after;
      }
      return null;
    };
    let old = await isNew(0);
    if (old === null) return 0;
    let low = old - 1; // the first event after low is old
    let high = null; // the first event after high is new enough
    for (let step = 256; high === null; step *= 4) {
      old = await isNew(low + step);
      if (old === null) high = low + step;
      else low = old - 1;
      if (step > 2 ** 52) return low;
    }
    while (high - low > 1) {
      const middle = Math.floor((low + high) / 2);
      old = await isNew(middle);
      if (old === null) high = middle;
      else low = Math.max(middle, old - 1);
    }
    return high;
  }

  // ---------------------------------------------------------------------------------------------
  // jobs: filters, search, selection, bulk retry / cancel with a dry run first

  const JOB_FILTERS = ['queue', 'status', 'task', 'owner', 'q'];

  pages.jobs = async (view, context, parts, params) => {
    const filter = {};
    for (const key of JOB_FILTERS) if (params.get(key)) filter[key] = params.get(key);
    const offset = Math.max(0, Number(params.get('offset')) || 0);
    const selected = new Set();
    let items = [];

    const form = jobFilterForm(filter);
    const listBox = h('div', null, loading());
    const pager = h('div', {class: 'pager'});
    const confirmBox = h('div', {'aria-live': 'polite'});
    const countText = h('span', {class: 'muted', 'aria-live': 'polite'}, '');
    const bulkButtons = [];
    const bulk = h('div', {class: 'bulk', role: 'group', 'aria-label': 'Bulk actions'});
    if (can.write()) {
      const selectionButton = (action, label) => {
        const button = h('button', {type: 'button', disabled: true, class: action === 'cancel' ? 'danger' : '',
          onclick: () => dryRun(action, {ids: [...selected]}, `the ${selected.size} selected job(s)`)}, label);
        bulkButtons.push(button);
        return button;
      };
      bulk.append(countText, selectionButton('retry', 'Retry selected'), selectionButton('cancel', 'Cancel selected'),
        h('span', {class: 'sep', 'aria-hidden': 'true'}),
        h('button', {type: 'button', onclick: () => dryRun('retry', {filter}, 'every job matching the filter')},
          'Retry all matching…'),
        h('button', {type: 'button', class: 'danger',
          onclick: () => dryRun('cancel', {filter}, 'every job matching the filter')}, 'Cancel all matching…'));
    }

    view.append(heading('Jobs'), h('section', {class: 'card'}, form, bulk, confirmBox, listBox, pager));
    context.get('tasks', {limit: 500}).then((answer) => {
      const list = $('task-names');
      if (list) list.replaceChildren(...answer.items.map((task) => h('option', {value: task.name})));
    }).catch(() => {});

    const updateSelection = () => {
      countText.textContent = selected.size ? `${selected.size} selected` : 'None selected';
      for (const button of bulkButtons) button.disabled = selected.size === 0;
    };

    /** Ask the server what the action would change (dry run), show the count, and act on confirm. */
    async function dryRun(action, target, what) {
      const body = {action, dry_run: true, ...target};
      if (target.filter) body.filter = {...target.filter};
      let answer;
      try {
        answer = await api('jobs/bulk', {method: 'POST', body});
      } catch (error) {
        toast(`Dry run failed: ${error.message}`, true);
        return;
      }
      const verb = action === 'cancel' ? 'Cancel' : 'Retry';
      const n = answer.matched;
      const note = n === 0
        ? `No job can be ${action === 'cancel' ? 'cancelled' : 'retried'} in ${what}.`
        : `${verb} ${n} job${n === 1 ? '' : 's'} (${what})? This was a dry run: nothing has changed yet.`;
      const yes = h('button', {type: 'button', class: action === 'cancel' ? 'danger primary' : 'primary',
        disabled: n === 0, 'data-key': 'confirm-yes', onclick: async () => {
          redraw(confirmBox);
          await act(`${verb} jobs`, () => api('jobs/bulk', {method: 'POST', body: {...body, dry_run: false}}),
            (result) => `${verb === 'Cancel' ? 'Cancelled' : 'Retried'} ${result.changed} of ${result.matched} job(s).`);
          selected.clear();
          updateSelection();
        }}, n === 0 ? 'Nothing to do' : `${verb} ${n} job${n === 1 ? '' : 's'}`);
      const no = h('button', {type: 'button', onclick: () => redraw(confirmBox)}, 'Back');
      redraw(confirmBox, h('div', {class: 'confirm', role: 'group', 'aria-label': 'Confirm bulk action'},
        h('p', {class: 'dry-run'}, note), yes, no));
      (n === 0 ? no : yes).focus();
    }

    const columns = [
      {label: h('span', {class: 'sr-only'}, 'Select'), class: 'sel'}, {label: 'Job'}, {label: 'Task'},
      {label: 'Queue', class: 'opt'}, {label: 'Status'}, ...(can.viewOthers() ? [{label: 'Owner', class: 'opt'}] : []),
      {label: 'Progress', class: 'opt'}, {label: 'Created'}, {label: 'Tries', class: 'num opt'},
    ];
    let known = null; // ids shown before, to mark rows that arrive live

    const load = section(context, listBox, async () => {
      const answer = await context.get('jobs', {...filter, limit: PAGE_SIZE, offset});
      items = answer.items;
      const ids = new Set(items.map((job) => job.id));
      for (const id of [...selected]) if (!ids.has(id)) selected.delete(id);
      const all = h('input', {type: 'checkbox', 'aria-label': 'Select every job on this page', 'data-key': 'select-all',
        disabled: !can.write(),
        checked: items.length > 0 && items.every((job) => selected.has(job.id)),
        onchange: (event) => {
          for (const job of items) if (can.modify(job.owner)) { if (event.target.checked) selected.add(job.id); else selected.delete(job.id); }
          load();
        }});
      columns[0].label = all;
      const rows = items.map((job) => {
        const box = h('input', {type: 'checkbox', 'aria-label': `Select job ${job.id}`, 'data-key': `sel-${job.id}`,
          checked: selected.has(job.id), disabled: !can.modify(job.owner), onchange: (event) => {
            if (event.target.checked) selected.add(job.id); else selected.delete(job.id);
            updateSelection();
          }});
        const row = h('tr', {dataset: {jobId: job.id}, class: known && !known.has(job.id) ? 'fresh' : null},
          cell(box, 'sel'), cell(jobLink(job.id)), cell(h('span', {class: 'mono'}, job.task)),
          cell(job.queue, 'opt'), cell(badge(job.status)),
          can.viewOthers() ? cell(job.owner ?? h('span', {class: 'muted'}, '—'), 'opt') : null,
          cell(job.status === 'running' || job.progress ? progressBar(job.progress, job.progress_message) : '', 'opt'),
          cell(when(job.created_at)), cell(String(job.attempts), 'num opt'));
        return row;
      });
      known = ids;
      redraw(listBox, table(columns, rows, Object.keys(filter).length ? 'No job matches the filter.' : 'No jobs yet.'));
      redraw(pager,
        h('span', {class: 'muted'}, items.length ? `${offset + 1}–${offset + items.length}` : ''),
        h('button', {type: 'button', disabled: offset === 0,
          onclick: () => { location.hash = hashFor('jobs', {...filter, offset: Math.max(0, offset - PAGE_SIZE) || ''}); }},
        'Newer'),
        h('button', {type: 'button', disabled: answer.next_offset === null || answer.next_offset === undefined,
          onclick: () => { location.hash = hashFor('jobs', {...filter, offset: answer.next_offset}); }}, 'Older'));
      updateSelection();
    });

    context.refresher = load;
    await load();
    const soon = throttle(load, 1000);
    context.onEvent((event) => {
      if (JOB_KINDS.has(event.kind) && event.job_id) soon();
    });
  };

  function jobFilterForm(filter) {
    const input = (name, label, attrs) => h('div', {class: name === 'q' ? 'field wide' : 'field'},
      h('label', {for: `f-${name}`}, label),
      h('input', {id: `f-${name}`, name, value: filter[name] || '', autocomplete: 'off', ...attrs}));
    const status = h('select', {id: 'f-status', name: 'status'},
      h('option', {value: ''}, 'any'),
      JOB_STATUSES.map((s) => h('option', {value: s, selected: filter.status === s}, s)));
    const form = h('form', {class: 'filters', role: 'search', 'aria-label': 'Filter jobs'},
      input('q', 'Search id or arguments', {type: 'search', placeholder: 'id prefix or text'}),
      h('div', {class: 'field'}, h('label', {for: 'f-status'}, 'Status'), status),
      input('queue', 'Queue', {type: 'text'}),
      input('task', 'Task', {type: 'text', list: 'task-names'}),
      h('datalist', {id: 'task-names'}),
      can.viewOthers() ? input('owner', 'Owner', {type: 'text'}) : null,
      h('div', {class: 'buttons'},
        h('button', {type: 'submit', class: 'primary'}, 'Filter'),
        h('button', {type: 'button', onclick: () => { location.hash = '#/jobs'; }}, 'Clear')));
    const wrapper = h('details', {class: 'filter-box', open: Object.keys(filter).length > 0 || !PHONE.matches},
      h('summary', null, Object.keys(filter).length ? `Filters (${Object.keys(filter).length})` : 'Filters'), form);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const next = {};
      for (const key of JOB_FILTERS) {
        const value = (data.get(key) || '').toString().trim();
        if (value) next[key] = value;
      }
      location.hash = hashFor('jobs', next);
    });
    return wrapper;
  }

  // ---------------------------------------------------------------------------------------------
  // one job: its facts, live progress, stages, error, timeline, mailbox, and what can be done to it

  pages.job = async (view, context, parts) => {
    const id = parts[1];
    const head = h('div');
    const progressBox = h('div', {'aria-live': 'polite'});
    const actionsBox = h('div', {class: 'job-actions', role: 'group', 'aria-label': 'Job actions'});
    const factsBox = h('div');
    const stagesBox = h('div');
    const errorBox = h('div');
    const resultBox = h('div');
    const messagesBox = h('div');
    const timeline = h('ol', {class: 'timeline', 'aria-label': 'Events of this job'});
    const timelineNote = h('p', {class: 'muted'});
    let job = null;
    let lastSeq = 0;

    view.append(
      head,
      h('section', {class: 'card', 'aria-labelledby': 'jd-facts'}, h('h2', {id: 'jd-facts', class: 'sr-only'}, 'Details'),
        progressBox, actionsBox, factsBox),
      errorBox, resultBox, stagesBox, messagesBox,
      h('section', {class: 'card', 'aria-labelledby': 'jd-timeline'}, h('h2', {id: 'jd-timeline'}, 'Timeline'),
        timelineNote, timeline),
    );

    const draw = () => {
      const finished = FINISHED.has(job.status);
      redraw(head, heading(h('span', null, 'Job ', h('span', {class: 'id'}, job.id)),
        badge(job.status), h('a', {href: '#/jobs', class: 'actions'}, '← all jobs')));
      redraw(progressBox, job.status === 'running' || (job.progress && !finished)
        ? [progressBar(job.progress, job.progress_message, true),
          job.progress_message ? h('p', {class: 'note progress-message'}, job.progress_message) : null]
        : null);
      drawActions(actionsBox, job, finished);
      redraw(factsBox, jobFacts(job));
      redraw(errorBox, job.error ? h('section', {class: 'card', 'aria-labelledby': 'jd-error'},
        h('h2', {id: 'jd-error'}, 'Error'),
        h('p', {class: 'err-head'}, `${job.error.type}: ${job.error.message}`),
        job.error.traceback ? h('details', {open: true}, h('summary', null, 'Traceback'),
          h('pre', {class: 'traceback'}, job.error.traceback)) : null) : null);
      redraw(resultBox, job.status === 'succeeded' && !(job.stage_view && job.stage_view.length > 1) ? h('section', {class: 'card', 'aria-labelledby': 'jd-result'},
        h('h2', {id: 'jd-result'}, 'Result'), h('pre', {class: 'json'}, json(job.result))) : null);
      const views = stageRows(job);
      redraw(stagesBox, views && (views.length > 1 || job.pipeline) ? h('section', {class: 'card', 'aria-labelledby': 'jd-stages'},
        h('h2', {id: 'jd-stages'}, 'Stages'), stageTable(views)) : null);
      redraw(messagesBox, job.messages && job.messages.length ? h('section', {class: 'card', 'aria-labelledby': 'jd-mail'},
        h('h2', {id: 'jd-mail'}, 'Mailbox'), table([{label: 'Name'}, {label: 'Payload'}, {label: 'Sent'}, {label: 'Taken'}],
          job.messages.map((m) => h('tr', null, cell(m.name || '(unnamed)'), cell(h('code', null, brief(m.payload))),
            cell(when(m.at)), cell(m.consumed_at ? [when(m.consumed_at), m.stage !== null ? ` by stage ${m.stage}` : ''] : 'waiting'))))) : null);
    };

    const loadJob = async () => {
      job = await context.get(`jobs/${encodeURIComponent(id)}`);
      draw();
    };

    const addEvents = (events) => {
      for (const event of events) {
        if (event.seq <= lastSeq) continue;
        lastSeq = event.seq;
        timeline.append(timelineItem(event));
      }
    };

    const loadEvents = async () => {
      let after = lastSeq;
      for (let page = 0; page < 10; page++) {
        const answer = await context.get(`jobs/${encodeURIComponent(id)}/events`, {after, limit: 500});
        addEvents(answer.items);
        if (answer.items.length < 500) return; // a short page: the end of the log
        after = answer.next_after;
      }
      timelineNote.textContent = 'Only the first 5,000 events are shown.';
    };

    await loadJob();
    await loadEvents().catch((error) => {
      if (error.name !== 'AbortError') timelineNote.textContent = `Could not load the events: ${error.message}`;
    });
    context.refresher = () => { loadJob().catch(() => {}); };

    const soon = throttle(() => { loadJob().catch(() => {}); }, 700);
    context.onEvent((event) => {
      if (event.job_id !== id) return;
      addEvents([event]);
      if (event.kind === 'progress' && job) { // move the bar at once, without a round trip
        job.progress = Number(event.data.percent) || 0;
        job.progress_message = event.data.message || '';
        if (job.status !== 'running') job.status = 'running';
        redraw(progressBox, progressBar(job.progress, job.progress_message, true),
          job.progress_message ? h('p', {class: 'note progress-message'}, job.progress_message) : null);
        return;
      }
      if (FINISHED.has(event.kind) || event.kind === 'timed_out') announce(`Job ${shortId(id)} ${event.kind}.`);
      soon();
    });
  };

  function jobFacts(job) {
    const fact = (label, value) => [h('dt', null, label), h('dd', null, value)];
    return h('dl', {class: 'facts'},
      fact('Task', h('span', {class: 'mono'}, job.task)),
      fact('Queue', h('a', {href: hashFor('jobs', {queue: job.queue})}, job.queue)),
      fact('Owner', job.owner ?? h('span', {class: 'muted'}, 'nobody')),
      fact('Priority', String(job.priority)),
      fact('Arguments', h('pre', {class: 'json'}, [
        job.args && job.args.length ? `args: ${json(job.args)}` : '',
        job.kwargs && Object.keys(job.kwargs).length ? `${job.args && job.args.length ? '\n' : ''}kwargs: ${json(job.kwargs)}` : '',
      ].join('') || '(none)')),
      fact('Created', when(job.created_at)),
      fact('Due', when(job.scheduled_at)),
      fact('Started', when(job.started_at)),
      fact('Finished', when(job.finished_at)),
      fact('Run time', seconds(job.elapsed ?? (job.started_at && job.finished_at ? job.finished_at - job.started_at : null))),
      fact('Attempts', `${job.attempts} (retries ${job.retries} of ${job.max_retries}${job.rescues ? `, rescued ${job.rescues}` : ''})`),
      job.exit_code !== null && job.exit_code !== undefined ? fact('Exit code', String(job.exit_code)) : null,
      job.worker_id ? fact('Worker', h('span', {class: 'mono'}, job.worker_id)) : null,
      job.timeout ? fact('Time-out', seconds(job.timeout)) : null,
      job.key ? fact('Key', h('span', {class: 'mono'}, job.key)) : null,
      job.scheduled_by ? fact('Schedule', [job.scheduled_by, job.tick_at ? [' (tick ', when(job.tick_at), ')'] : '']) : null,
      job.waiting_for !== null && job.waiting_for !== undefined ? fact('Waiting for', `message ${job.waiting_for ? `'${job.waiting_for}'` : '(unnamed)'}`) : null,
      job.wait_until ? fact('Wait ends', when(job.wait_until)) : null,
    );
  }

  function drawActions(box, job, finished) {
    // drawn again only when what they offer changes: a live update must not close the message form
    const key = `${job.status}|${job.waiting_for}|${can.modify(job.owner)}`;
    if (box.dataset.drawn === key) return;
    box.dataset.drawn = key;
    if (!can.modify(job.owner)) {
      redraw(box, h('p', {class: 'note'}, can.write()
        ? `This job is ${job.owner ? `${job.owner}'s` : 'nobody\'s'}: changing it needs the modify-others permission.`
        : 'You are read-only: you may look at this job but not change it.'));
      return;
    }
    const path = `jobs/${encodeURIComponent(job.id)}`;
    const isPipeline = Boolean(job.pipeline || job.stages);
    const buttons = [];
    if (!finished) {
      buttons.push(h('button', {type: 'button', class: 'danger', 'data-key': 'act-cancel',
        onclick: () => act('Cancel', () => api(`${path}/cancel`, {method: 'POST', body: {}}), `Job ${shortId(job.id)} cancelled.`)},
      'Cancel'));
    }
    if (job.status === 'failed' || job.status === 'cancelled') {
      buttons.push(h('button', {type: 'button', class: 'primary', 'data-key': 'act-retry',
        onclick: () => act('Retry', () => api(`${path}/retry`, {method: 'POST', body: {}}), `Job ${shortId(job.id)} queued again.`)},
      'Retry'));
      buttons.push(h('button', {type: 'button', 'data-key': 'act-retry-reset',
        onclick: () => act('Retry', () => api(`${path}/retry`, {method: 'POST', body: {reset: true}}),
          `Job ${shortId(job.id)} queued again, its counters reset.`)}, 'Retry from scratch'));
    }
    if (finished && (isPipeline || job.status !== 'succeeded')) {
      buttons.push(h('button', {type: 'button', 'data-key': 'act-reset',
        onclick: () => act('Reset', () => api(`${path}/reset`, {method: 'POST', body: {}}),
          `Job ${shortId(job.id)} reset to its first stage.`)}, 'Reset'));
    }
    let messageForm = null;
    if (!finished && isPipeline) { // a message is taken by a pipeline's Message stage
      messageForm = h('details', {class: 'send-message'}, h('summary', null, 'Send a message'), messageFormFor(job, path));
    }
    redraw(box, buttons.length ? h('div', {class: 'buttons'}, buttons) : null, messageForm);
  }

  function messageFormFor(job, path) {
    const error = h('p', {class: 'error', role: 'alert'});
    const form = h('form', {class: 'form-grid'},
      h('label', {for: 'm-name'}, 'Name'),
      h('input', {id: 'm-name', name: 'name', type: 'text', value: job.waiting_for || '', autocomplete: 'off',
        placeholder: '(unnamed)'}),
      h('label', {for: 'm-payload'}, 'Payload (JSON, optional)'),
      h('textarea', {id: 'm-payload', name: 'payload', spellcheck: 'false', placeholder: '{"approved": true}'}),
      h('label', {for: 'm-id'}, 'Message id (optional: a repeat is ignored)'),
      h('input', {id: 'm-id', name: 'id', type: 'text', autocomplete: 'off'}),
      error,
      h('div', {class: 'buttons'}, h('button', {type: 'submit', class: 'primary'}, 'Send')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const body = {};
      const name = String(data.get('name') || '').trim();
      if (name) body.name = name;
      const raw = String(data.get('payload') || '').trim();
      if (raw) {
        try { body.payload = JSON.parse(raw); } catch (problem) {
          error.textContent = `The payload is not JSON: ${problem.message}`;
          return;
        }
      }
      const messageId = String(data.get('id') || '').trim();
      if (messageId) body.id = messageId;
      error.textContent = '';
      await act('Send message', () => api(`${path}/messages`, {method: 'POST', body}),
        (answer) => `Message${name ? ` '${name}'` : ''} sent${answer && answer.delivery ? `: ${answer.delivery}` : ''}.`);
    });
    return form;
  }

  /** The stage rows (conveyor.stage_view) the API adds to a job: under stage_views, or under stages
      when those are rows (index, label, status) rather than the frozen stage declarations. */
  function stageRows(job) {
    const looksLikeRows = (rows) => Array.isArray(rows) && rows.length && rows.every((r) => r && 'label' in r && 'status' in r);
    if (looksLikeRows(job.stage_view)) return job.stage_view;
    if (looksLikeRows(job.stage_views)) return job.stage_views;
    if (looksLikeRows(job.stages)) return job.stages;
    return null;
  }

  function stageTable(rows) {
    return table([{label: '#', class: 'num'}, {label: 'Stage'}, {label: 'Status'}, {label: 'Result'},
      {label: 'Started', class: 'opt'}, {label: 'Finished', class: 'opt'}, {label: 'Runs', class: 'num opt'}],
    rows.map((s) => h('tr', {class: s.current ? 'current' : null},
      cell(String(s.index), 'num'),
      cell([h('code', null, s.declared || s.label), s.condition ? h('div', {class: 'note'}, `when ${s.condition}`) : null,
        s.waiting_for !== null && s.waiting_for !== undefined ? h('div', {class: 'note'}, `waiting for message ${s.waiting_for ? `'${s.waiting_for}'` : '(unnamed)'}`) : null,
        s.wait_until ? h('div', {class: 'note'}, 'until ', when(s.wait_until)) : null]),
      cell(badge(s.status)),
      cell(s.has_result ? h('code', {title: brief(s.result, 2000)}, brief(s.result)) : ''),
      cell(when(s.started_at), 'opt'), cell(when(s.finished_at), 'opt'), cell(String(s.attempts), 'num opt'))));
  }

  function timelineItem(event) {
    const data = event.data || {};
    const parts = [];
    if (event.kind === 'progress') parts.push(`${Math.round(Number(data.percent) || 0)}%${data.message ? ` ${data.message}` : ''}`);
    else if (data.error) parts.push(`${data.error.type}: ${data.error.message}`);
    else if (Object.keys(data).length) parts.push(brief(data, 160));
    if (data.retry_at) parts.push(`retry at ${localOf(data.retry_at)}`);
    if (event.worker_id && event.kind === 'started') parts.push(`on ${event.worker_id}`);
    return h('li', {class: `ev-${event.kind.replace(/[^a-z_]/g, '')}`},
      h('strong', null, event.kind), event.attempt ? h('span', {class: 'when'}, `attempt ${event.attempt}`) : null,
      h('span', {class: 'when'}, when(event.at)),
      parts.length && !(event.kind === 'started' && !data.error && parts.length === 1 && !event.worker_id)
        ? h('span', {class: 'data'}, parts.join(' · ')) : null);
  }

  // ---------------------------------------------------------------------------------------------
  // queues

  pages.queues = async (view, context) => {
    const box = h('div', null, loading());
    view.append(heading('Queues'), h('section', {class: 'card'}, box,
      can.modifyOthers() ? null : h('p', {class: 'note'}, 'Pausing a queue needs the modify-others permission.')));
    const load = section(context, box, async () => {
      const answer = await context.get('queues', {limit: 500});
      redraw(box, table([
        {label: 'Queue'}, {label: 'State'}, {label: 'Queued', class: 'num'}, {label: 'Scheduled', class: 'num opt'},
        {label: 'Running', class: 'num'}, {label: 'Failed', class: 'num opt'}, {label: 'Oldest due', class: 'opt'},
        {label: h('span', {class: 'sr-only'}, 'Actions')},
      ], answer.items.map((q) => h('tr', {dataset: {queue: q.name}},
        cell(h('a', {href: hashFor('jobs', {queue: q.name})}, q.name)),
        cell(q.paused ? badge('paused') : badge('on', 'active')),
        cell(String(q.queued), 'num'), cell(String(q.scheduled), 'num opt'), cell(String(q.running), 'num'),
        cell(String(q.failed), 'num opt'), cell(q.oldest_due ? when(q.oldest_due) : '—', 'opt'),
        cell(can.modifyOthers() ? h('button', {type: 'button', 'data-key': `q-${q.name}`, class: q.paused ? 'primary small' : 'small',
          onclick: () => act(q.paused ? 'Resume' : 'Pause',
            () => api(`queues/${encodeURIComponent(q.name)}/${q.paused ? 'resume' : 'pause'}`, {method: 'POST', body: {}}),
            `Queue ${q.name} ${q.paused ? 'resumed' : 'paused'}.`)}, q.paused ? `Resume ${q.name}` : `Pause ${q.name}`) : ''))),
      'No queues yet: a queue appears with its first job.'));
    });
    context.refresher = load;
    await load();
    const soon = throttle(load, 1500);
    context.onEvent((event) => { if (JOB_KINDS.has(event.kind) || event.kind.startsWith('queue_')) soon(); });
    context.every(15000, load);
  };

  // ---------------------------------------------------------------------------------------------
  // workers

  pages.workers = async (view, context) => {
    const box = h('div', null, loading());
    view.append(heading('Workers'), h('section', {class: 'card'}, box));
    const load = section(context, box, async () => {
      const answer = await context.get('workers', {limit: 500});
      redraw(box, table([
        {label: 'Worker'}, {label: 'State'}, {label: 'Queues'}, {label: 'Busy', class: 'num'},
        {label: 'Started', class: 'opt'}, {label: 'Last seen'}, {label: 'Version', class: 'opt'},
        ...(can.system() ? [{label: h('span', {class: 'sr-only'}, 'Actions')}] : []),
      ], answer.items.map((w) => h('tr', null,
        cell([h('div', {class: 'mono'}, `${w.host}:${w.pid}`), h('div', {class: 'note mono'}, w.id)]),
        cell([badge(w.state), w.leader ? [' ', badge('on', 'leader')] : null, w.stop_requested ? [' ', badge('stopping', 'stop asked')] : null]),
        cell(w.queues.join(', ')), cell(`${w.in_flight}/${w.concurrency}`, 'num'),
        cell(when(w.started_at), 'opt'), cell(when(w.last_seen)), cell(w.version, 'opt'),
        can.system() ? cell(w.state === 'running' && !w.stop_requested ? h('button', {type: 'button', class: 'danger small',
          onclick: () => act('Stop worker', () => api('workers/stop', {method: 'POST', body: {worker_ids: [w.id]}}),
            `Worker ${w.host}:${w.pid} asked to stop.`)}, 'Stop') : '') : null)),
      'No worker has registered yet.'));
    });
    context.refresher = load;
    await load();
    const soon = throttle(load, 1500);
    context.onEvent((event) => { if (event.kind.startsWith('worker_') || event.kind === 'stop_requested' || event.kind === 'started') soon(); });
    context.every(10000, load);
  };

  // ---------------------------------------------------------------------------------------------
  // schedules

  function describeSpec(s) {
    if (s.cron) return `cron ${s.cron}${s.tz && s.tz !== 'UTC' ? ` (${s.tz})` : ' (UTC)'}`;
    if (s.every) return `every ${seconds(s.every)}`;
    return '—';
  }

  function describeTarget(target) {
    if (!target) return '—';
    if (target.kind === 'call') return target.task || brief(target);
    if (target.kind === 'pipeline') return `pipeline ${typeof target.pipeline === 'string' ? target.pipeline : (target.name || '')}`.trim();
    return brief(target);
  }

  /** The next few ticks: given by the API (next_ticks), or worked out for an interval schedule. */
  function nextTicks(s) {
    if (Array.isArray(s.next_ticks)) return s.next_ticks.map((t) => (typeof t === 'number' ? t : t.at));
    if (s.paused) return [];
    if (s.every) return [0, 1, 2].map((k) => s.next_at + k * s.every);
    return [s.next_at];
  }

  pages.schedules = async (view, context) => {
    const box = h('div', null, loading());
    const ticksBox = h('div');
    view.append(heading('Schedules'), h('section', {class: 'card'}, box), ticksBox);
    const showTicks = async (s) => {
      redraw(ticksBox, h('section', {class: 'card'}, h('h2', null, `Ticks of ${s.name}`), loading()));
      try {
        const path = `schedules/${encodeURIComponent(s.name)}`;
        const [detail, answer] = await Promise.all([context.get(path), context.get(`${path}/ticks`, {limit: 50})]);
        const items = answer.items || answer;
        redraw(ticksBox, h('section', {class: 'card', 'aria-labelledby': 'ticks-title'},
          h('h2', {id: 'ticks-title', tabindex: '-1'}, `Ticks of ${s.name}`),
          h('p', null, detail.description),
          h('h3', null, s.paused ? 'Next ticks (once resumed)' : 'Next ticks'),
          h('ol', {class: 'next-ticks'}, (detail.next || []).map((t) => h('li', null,
            h('time', {datetime: isoOf(t.at), title: relative(t.at)}, localOf(t.at)),
            t.local ? h('span', {class: 'note'}, ` (${String(t.local).replace('T', ' ')} in ${s.tz || 'UTC'})`) : null,
            t.note ? h('div', {class: 'note'}, t.note) : null))),
          h('h3', null, 'Recent ticks'),
          table([{label: 'Tick'}, {label: 'Outcome'}, {label: 'Job'}, {label: 'Recorded', class: 'opt'}],
            items.map((t) => h('tr', null, cell(h('span', {title: localOf(t.tick_at)}, localOf(t.tick_at))),
              cell([badge(t.outcome.startsWith('skipped') ? 'scheduled' : t.outcome === 'missed' ? 'failed' : 'succeeded', t.outcome),
                t.data && t.data.count ? ` ×${t.data.count}` : '']),
              cell(t.job_id ? jobLink(t.job_id) : '—'), cell(when(t.at), 'opt'))), 'No tick yet.')));
        ticksBox.querySelector('h2').focus();
      } catch (error) {
        if (error.name !== 'AbortError') redraw(ticksBox, failure(error));
      }
    };
    const load = section(context, box, async () => {
      const answer = await context.get('schedules', {limit: 500});
      redraw(box, table([
        {label: 'Schedule'}, {label: 'When'}, {label: 'Runs', class: 'opt'}, {label: 'Next ticks'},
        {label: 'Last tick', class: 'opt'}, {label: 'State'}, {label: h('span', {class: 'sr-only'}, 'Actions')},
      ], answer.items.map((s) => h('tr', {dataset: {schedule: s.name}},
        cell([h('strong', null, s.name), h('div', {class: 'note'}, s.source === 'code' ? 'declared in code' : 'stored')]),
        cell(describeSpec(s)), cell(h('span', {class: 'mono'}, describeTarget(s.target)), 'opt'),
        cell(s.paused ? h('span', {class: 'muted'}, 'paused') : h('ul', {class: 'ticks'},
          nextTicks(s).map((t) => h('li', null, h('time', {datetime: isoOf(t), title: relative(t)}, localOf(t)))))),
        cell([when(s.last_tick_at), s.last_job_id ? [' ', jobLink(s.last_job_id)] : null], 'opt'),
        cell(s.paused ? badge('paused') : badge('on', 'active')),
        cell(h('div', {class: 'buttons'},
          can.modify(s.owner) ? h('button', {type: 'button', class: 'small', 'data-key': `s-${s.name}`,
            onclick: () => act(s.paused ? 'Resume' : 'Pause',
              () => api(`schedules/${encodeURIComponent(s.name)}/${s.paused ? 'resume' : 'pause'}`, {method: 'POST', body: {}}),
              `Schedule ${s.name} ${s.paused ? 'resumed' : 'paused'}.`)}, s.paused ? 'Resume' : 'Pause') : null,
          h('button', {type: 'button', class: 'small quiet', onclick: () => showTicks(s)}, 'Ticks'))))),
      'No schedules.'));
    });
    context.refresher = load;
    await load();
    const soon = throttle(load, 1500);
    context.onEvent((event) => { if (event.kind.startsWith('schedule_')) soon(); });
  };

  // ---------------------------------------------------------------------------------------------
  // services: one row per instance (its replicas summed up), start / stop / restart / reload

  pages.services = async (view, context) => {
    const box = h('div', null, loading());
    const reloadBox = h('div');
    view.append(heading('Services'), h('section', {class: 'card'}, box), reloadBox);

    const control = (name, action, body) => act(`${action[0].toUpperCase()}${action.slice(1)} ${name}`,
      () => api(`services/${encodeURIComponent(name)}/${action}`, {method: 'POST', body: body || {}}),
      `Service ${name}: ${action} asked.`);

    const reloadForm = (instance) => {
      const error = h('p', {class: 'error', role: 'alert'});
      const area = h('textarea', {id: 'svc-params', name: 'params', spellcheck: 'false', rows: '6'});
      area.value = json(instance.params || {});
      const form = h('form', {class: 'form-grid'},
        h('label', {for: 'svc-params'}, `New parameters of ${instance.name} (JSON object)`), area, error,
        h('div', {class: 'buttons'}, h('button', {type: 'submit', class: 'primary'}, 'Reload'),
          h('button', {type: 'button', onclick: () => redraw(reloadBox)}, 'Close')));
      form.addEventListener('submit', async (event) => {
        event.preventDefault();
        let params;
        try { params = JSON.parse(area.value || '{}'); } catch (problem) { error.textContent = `Not JSON: ${problem.message}`; return; }
        if (!params || typeof params !== 'object' || Array.isArray(params)) { error.textContent = 'The parameters must be a JSON object.'; return; }
        redraw(reloadBox);
        await control(instance.name, 'reload', {params});
      });
      redraw(reloadBox, h('section', {class: 'card', 'aria-label': `Reload ${instance.name}`}, form));
      area.focus();
    };

    const load = section(context, box, async () => {
      const answer = await context.get('services', {limit: 500});
      const instances = new Map();
      for (const replica of answer.items) {
        if (!instances.has(replica.name)) instances.set(replica.name, {...replica, replicas: []});
        instances.get(replica.name).replicas.push(replica);
      }
      redraw(box, table([
        {label: 'Instance'}, {label: 'Service', class: 'opt'}, {label: 'Replicas'}, {label: 'Wanted', class: 'opt'},
        {label: 'Restarts', class: 'num opt'}, {label: 'Last error', class: 'opt'}, {label: h('span', {class: 'sr-only'}, 'Actions')},
      ], [...instances.values()].map((inst) => {
        const restarts = inst.replicas.reduce((n, r) => n + (r.restarts || 0), 0);
        const lastError = inst.replicas.map((r) => r.last_error).find(Boolean);
        const mayControl = can.modify(inst.owner);
        return h('tr', {dataset: {service: inst.name}},
          cell([h('strong', null, inst.name), h('div', {class: 'note'}, `queue ${inst.queue} · generation ${inst.generation}`)]),
          cell(h('span', {class: 'mono'}, inst.service), 'opt'),
          cell(h('div', {class: 'buttons'}, inst.replicas.map((r) => h('span', {title: r.worker_id ? `replica ${r.replica} on ${r.worker_id}` : `replica ${r.replica}`},
            badge(r.status, `#${r.replica} ${r.status}`))))),
          cell(inst.wanted ? 'running' : 'stopped', 'opt'),
          cell(String(restarts), 'num opt'),
          cell(lastError ? h('details', null, h('summary', null, `${lastError.type}: ${lastError.message}`),
            lastError.traceback ? h('pre', {class: 'traceback'}, lastError.traceback) : null) : '—', 'opt'),
          cell(mayControl ? h('div', {class: 'buttons'},
            inst.wanted ? null : h('button', {type: 'button', class: 'small primary', onclick: () => control(inst.name, 'start')}, 'Start'),
            inst.wanted ? h('button', {type: 'button', class: 'small danger', onclick: () => control(inst.name, 'stop')}, 'Stop') : null,
            h('button', {type: 'button', class: 'small', onclick: () => control(inst.name, 'restart')}, 'Restart'),
            h('button', {type: 'button', class: 'small', onclick: () => reloadForm(inst)}, 'Reload…')) : ''));
      }), 'No service instances.'));
    });
    context.refresher = load;
    await load();
    const soon = throttle(load, 1000);
    context.onEvent((event) => { if (event.kind.startsWith('service_')) soon(); });
    context.every(15000, load);
  };

  // ---------------------------------------------------------------------------------------------
  // notifications (the user's own)

  pages.notifications = async (view, context, parts, params) => {
    const unreadOnly = params.get('unread') === 'true';
    const box = h('div', null, loading());
    const toggle = h('label', {class: 'check'}, h('input', {type: 'checkbox', checked: unreadOnly,
      onchange: (event) => { location.hash = hashFor('notifications', {unread: event.target.checked ? 'true' : ''}); }}),
    'Unread only');
    const markAll = !can.write() ? null : h('button', {type: 'button', onclick: () => act('Mark read',
      () => api('notifications/read', {method: 'POST', body: {}}), (a) => `${a && a.changed !== undefined ? a.changed : 'All'} marked read.`)
      .then(refreshUnread)}, 'Mark all read');
    view.append(heading('Notifications', h('div', {class: 'actions buttons'}, toggle, markAll)), h('section', {class: 'card'}, box));
    const load = section(context, box, async () => {
      const answer = await context.get('notifications', {unread: unreadOnly ? 'true' : '', limit: 100});
      redraw(box, table([{label: 'When'}, {label: 'Job'}, {label: 'Outcome'}, {label: 'Details', class: 'opt'}, {label: h('span', {class: 'sr-only'}, 'Read')}],
        answer.items.map((n) => h('tr', {class: n.read ? 'read' : 'unread'},
          cell(when(n.at)), cell([jobLink(n.job_id), n.data && n.data.task ? h('div', {class: 'note mono'}, n.data.task) : null]),
          cell([badge(n.status), n.read ? null : [' ', h('strong', null, 'new')]]),
          cell(n.data && n.data.error ? `${n.data.error.type}: ${n.data.error.message}` : brief(n.data && n.data.results, 100), 'opt'),
          cell(n.read || !can.write() ? h('span', {class: 'muted'}, n.read ? 'read' : 'unread') : h('button', {type: 'button', class: 'small',
            onclick: () => act('Mark read', () => api('notifications/read', {method: 'POST', body: {ids: [n.id]}}), 'Marked read.')
              .then(refreshUnread)}, 'Mark read')))),
        unreadOnly ? 'No unread notifications.' : 'No notifications. Jobs enqueued with notify tell their owner here when they end.'));
    });
    context.refresher = load;
    await load();
    const soon = throttle(load, 1500);
    context.onEvent((event) => { if (event.kind === 'succeeded' || FAILURE_KINDS.has(event.kind)) soon(); });
  };

  // ---------------------------------------------------------------------------------------------
  // start: signed in already (a reload of the tab) or not

  (async () => {
    if (!state.token) { showLogin(''); return; }
    try {
      state.me = await api('me');
      enterApp();
    } catch (error) {
      signOut(error.status === 401 ? 'Your session ended. Sign in again.' : `Could not reach the server: ${error.message}`);
    }
  })();
})();
