// The operator's dashboard: a small single-page app over the JSON API.
// Every value from a job reaches the page through textContent or an attribute set by code,
// never through innerHTML. The API token lives in this tab's sessionStorage and travels
// only in the Authorization header (live updates use fetch() streams, not EventSource, so
// the token never goes into a URL).
'use strict';

(() => {
  const ROOT = document.querySelector('meta[name="ingest-api-root"]').content;
  const TOKEN_KEY = 'ingest-api-token';
  const STATES = ['waiting', 'delayed', 'active', 'completed', 'failed', 'cancelled'];
  const FINAL = new Set(['completed', 'failed', 'cancelled']);
  const main = document.getElementById('main');
  let cleanups = [];

  // ---- small helpers ---------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = String(value);
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    return node;
  }

  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return '-';
    const s = Math.max(0, seconds);
    if (s < 60) return `${Math.round(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
    return `${(s / 86400).toFixed(1)} d`;
  }

  function fmtTime(value) {
    if (!value) return '-';
    const d = new Date(value);
    return isNaN(d) ? '-' : d.toLocaleString();
  }

  function jobHref(id) { return '#/job/' + encodeURIComponent(id); }

  function stateBadge(state) {
    return el('span', { class: 'state ' + (STATES.includes(state) ? state : ''), text: state });
  }

  function progressBar(pct, attrs) {
    const value = Math.max(0, Math.min(100, Number(pct) || 0));
    return el('progress', { max: 100, value, ...attrs, 'aria-label': 'progress' });
  }

  function notice(text, isError) {
    const box = document.getElementById('notice');
    box.textContent = text;
    box.classList.toggle('error', Boolean(isError));
    box.hidden = !text;
  }

  // Server clock minus ours, so ages agree with the times Redis stamps jobs with.
  let clockSkewMs = 0;
  function serverNow() { return Date.now() + clockSkewMs; }
  function ageSince(iso) { return iso ? (serverNow() - Date.parse(iso)) / 1000 : null; }

  // ---- token and requests ----------------------------------------------------------

  const token = {
    get: () => sessionStorage.getItem(TOKEN_KEY),
    set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
    clear: () => sessionStorage.removeItem(TOKEN_KEY),
  };

  class AuthError extends Error {}
  class ApiFailure extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function askToken(reason) {
    const form = document.getElementById('token-form');
    document.getElementById('token-reason').textContent = reason;
    form.hidden = false;
    document.getElementById('token-input').focus();
  }

  function authHeaders(extra) {
    const headers = { ...extra };
    const t = token.get();
    if (t) headers.Authorization = 'Bearer ' + t;
    return headers;
  }

  // A 401 asks for the token, unless the request was sent with a token since replaced.
  function refused(sentWith) {
    if (sentWith !== token.get()) return;
    askToken(sentWith
      ? 'The API refused this token (401). Enter the right one.'
      : 'This API needs its token (401). Enter it to go on.');
  }

  async function api(method, path, body, okStatuses) {
    const init = { method, headers: authHeaders({ Accept: 'application/json' }), cache: 'no-store' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const sentWith = token.get();
    const resp = await fetch(ROOT + path, init);
    if (resp.status === 401) {
      refused(sentWith);
      throw new AuthError('401');
    }
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok && !(okStatuses || []).includes(resp.status)) {
      const detail = data && typeof data.detail === 'string' ? data.detail : resp.statusText;
      throw new ApiFailure(resp.status, `${resp.status}: ${detail}`);
    }
    return data;
  }

  function report(err) {
    if (err instanceof AuthError) return;
    notice(String(err.message || err), true);
  }

  // ---- live updates: server-sent events over fetch() -------------------------------

  const liveBadge = document.getElementById('live');
  let liveStreams = 0;
  function setLive(delta) {
    liveStreams += delta;
    liveBadge.textContent = liveStreams > 0 ? 'live' : 'offline';
    liveBadge.classList.toggle('on', liveStreams > 0);
  }

  function parseBlock(block, stream) {
    let type = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (!line || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (name === 'id') stream.lastId = value;
      else if (name === 'event') type = value;
      else if (name === 'data') data.push(value);
      else if (name === 'retry' && /^\d+$/.test(value)) stream.retryMs = Number(value);
    }
    if (!data.length) return null;
    try { return { type, data: JSON.parse(data.join('\n')) }; } catch (e) { return null; }
  }

  function openStream(path, onEvent, lastId) {
    const stream = { lastId: lastId || null, retryMs: 2000, closed: false, ctrl: null };
    (async () => {
      while (!stream.closed) {
        stream.ctrl = new AbortController();
        const sentWith = token.get();
        const headers = authHeaders({ Accept: 'text/event-stream' });
        if (stream.lastId) headers['Last-Event-ID'] = stream.lastId;
        let live = false;
        try {
          const resp = await fetch(ROOT + path, { headers, signal: stream.ctrl.signal, cache: 'no-store' });
          if (resp.status === 401) {
            if (!stream.closed) refused(sentWith);
            return;
          }
          if (!resp.ok || !resp.body) throw new Error(`events: ${resp.status}`);
          setLive(1);
          live = true;
          const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value.replace(/\r\n?/g, '\n');
            let end;
            while ((end = buffer.indexOf('\n\n')) >= 0) {
              const event = parseBlock(buffer.slice(0, end), stream);
              buffer = buffer.slice(end + 2);
              if (event) onEvent(event.type, event.data);
            }
          }
        } catch (err) {
          // Aborted on close, or the connection dropped: reconnect below unless closed.
        } finally {
          if (live) setLive(-1);
        }
        if (stream.closed) return;
        await new Promise((resolve) => setTimeout(resolve, stream.retryMs));
      }
    })();
    const close = () => { stream.closed = true; if (stream.ctrl) stream.ctrl.abort(); };
    cleanups.push(close);
    return stream;
  }

  function every(ms, fn) {
    const handle = setInterval(fn, ms);
    cleanups.push(() => clearInterval(handle));
  }

  // Runs fn at most once per `ms` however many events ask for it.
  function debounced(ms, fn) {
    let timer = null;
    const run = () => {
      if (timer !== null) return;
      timer = setTimeout(() => { timer = null; fn(); }, ms);
    };
    cleanups.push(() => { if (timer !== null) clearTimeout(timer); });
    return run;
  }

  // ---- Overview --------------------------------------------------------------------

  function drawChart(box, t) {
    const n = t.completed.length;
    const width = 600, height = 130, top = 14, bottom = 18;
    const max = Math.max(1, ...t.completed.map((c, i) => c + t.failed[i]));
    const scale = (height - top - bottom) / max;
    const bar = width / n;
    const covered = Date.parse(t.covered_from);
    const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img',
      'aria-label': 'completed and failed jobs per minute, last hour', id: 'throughput' });
    for (let i = 0; i < n; i++) {
      const x = i * bar;
      const start = Date.parse(t.minute_starts[i]);
      if (start + 60000 <= covered) {
        chart.append(svg('rect', { x, y: top, width: bar - 1, height: height - top - bottom, class: 'gap' }));
        continue;
      }
      const ch = t.completed[i] * scale, fh = t.failed[i] * scale;
      const base = height - bottom;
      const group = svg('g', {});
      const title = svg('title', {});
      title.textContent = `${new Date(start).toLocaleTimeString()}: ${t.completed[i]} completed, ` +
        `${t.failed[i]} failed, ${t.retried[i]} retried`;
      group.append(title);
      group.append(svg('rect', { x, y: base - ch, width: bar - 1, height: ch, class: 'c' }));
      group.append(svg('rect', { x, y: base - ch - fh, width: bar - 1, height: fh, class: 'f' }));
      chart.append(group);
    }
    const label = (x, anchor, text) => {
      const node = svg('text', { x, y: height - 4, 'text-anchor': anchor });
      node.textContent = text;
      chart.append(node);
    };
    label(2, 'start', '-60 min');
    label(width - 2, 'end', 'now');
    const peak = svg('text', { x: 2, y: 10 });
    peak.textContent = `max ${max}/min`;
    chart.append(peak);
    const sum = (xs) => xs.reduce((a, b) => a + b, 0);
    const done = sum(t.completed), failed = sum(t.failed), retried = sum(t.retried);
    const rate = done + failed ? ((100 * failed) / (done + failed)).toFixed(1) + ' %' : '-';
    box.replaceChildren(chart, el('p', { class: 'muted', id: 'throughput-summary' },
      `Last hour: ${done} completed, ${failed} failed (failure rate ${rate}), ` +
      `${retried} attempts retried.`,
      covered > Date.parse(t.minute_starts[0])
        ? ` The capped events stream covers only since ${new Date(covered).toLocaleTimeString()}.`
        : ''));
  }

  function viewOverview() {
    const counts = el('div', { class: 'cards', id: 'counts' });
    const health = el('div', { class: 'card', id: 'health' }, 'loading...');
    const chartBox = el('div', { id: 'chart' }, 'loading...');
    const workers = el('div', { id: 'workers' }, 'loading...');
    main.append(
      el('h1', { text: 'Overview' }),
      counts,
      el('h2', { text: 'Health' }), health,
      el('h2', { text: 'Throughput' }), chartBox,
      el('h2', { text: 'Workers' }), workers,
    );
    let throughput = null;

    async function loadStats() {
      const [stats, verdict] = await Promise.all([
        api('GET', 'stats'),
        api('GET', 'health/queue', undefined, [503]),
      ]);
      clockSkewMs = Date.parse(stats.server_time) - Date.now();
      counts.replaceChildren(...STATES.map((s) => el('div', { class: 'card', 'data-state': s },
        el('a', { href: '#/jobs?state=' + s },
          el('div', { class: 'n', text: stats.counts[s] }), el('div', { class: 'muted', text: s })))));
      counts.append(el('div', { class: 'card', id: 'oldest' },
        el('div', { class: 'n', text: fmtAge(stats.oldest_waiting_s) }),
        el('div', { class: 'muted', text: 'oldest waiting' })));
      health.replaceChildren(
        el('div', { class: 'verdict ' + (verdict.healthy ? 'ok' : 'bad'), id: 'verdict',
          text: verdict.healthy ? 'healthy' : 'unhealthy' }),
        el('div', { class: 'muted' },
          `redis ${verdict.details.redis_status}, ${verdict.details.worker_concurrency} slots live`),
        el('ul', { id: 'reasons' }, (verdict.reasons || []).map((r) => el('li', { text: r }))),
      );
    }

    async function loadWorkers() {
      const w = await api('GET', 'workers');
      const rows = w.workers.map((wk) => el('tr', { 'data-worker': wk.worker_id },
        el('td', { text: wk.worker_id }),
        el('td', { class: 'opt', text: `${wk.host || '?'} / ${wk.pid || '?'}` }),
        el('td', {}, progressBar(wk.slots ? (100 * wk.busy) / wk.slots : 0), ` ${wk.busy} / ${wk.slots}`),
        el('td', { text: wk.beat_at ? fmtAge(serverNow() / 1000 - wk.beat_at) : '-' }),
        el('td', { text: wk.stopping ? 'stopping' : 'serving' })));
      workers.replaceChildren(
        el('p', { class: 'muted', text: `${w.busy_slots} of ${w.total_slots} slots busy` }),
        el('div', { class: 'table-wrap' }, el('table', {},
          el('thead', {}, el('tr', {}, ['worker', 'host / pid', 'slots busy / total', 'heartbeat age', '']
            .map((h, i) => el('th', { class: i === 1 ? 'opt' : null, text: h })))),
          el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 5, text: 'no live workers' }))))));
    }

    async function loadThroughput() {
      throughput = await api('GET', 'stats/throughput');
      drawChart(chartBox, throughput);
    }

    function countEvent(type, data) {
      if (!throughput || !['completed', 'failed', 'retried'].includes(type) || !data.id) return;
      const ms = Number(String(data.id).split('-')[0]);
      const first = Date.parse(throughput.minute_starts[0]);
      let slot = Math.floor((ms - first) / 60000);
      const n = throughput.completed.length;
      while (slot >= n) {
        for (const k of ['completed', 'failed', 'retried']) { throughput[k].shift(); throughput[k].push(0); }
        throughput.minute_starts.shift();
        throughput.minute_starts.push(new Date(Date.parse(throughput.minute_starts[n - 2]) + 60000).toISOString());
        slot -= 1;
      }
      if (slot >= 0) throughput[type][slot] += 1;
      redrawChart();
    }

    const refresh = () => Promise.all([loadStats(), loadWorkers()]).catch(report);
    const refreshSoon = debounced(500, refresh);
    const redrawChart = debounced(500, () => throughput && drawChart(chartBox, throughput));
    refresh();
    loadThroughput().catch(report);
    openStream('events', (type, data) => { refreshSoon(); countEvent(type, data); });
    // Heartbeats are not events: ages and worker lists refresh on a timer as well.
    every(5000, refresh);
    every(60000, () => loadThroughput().catch(report));
  }

  // ---- Jobs ------------------------------------------------------------------------

  function viewJobs(params) {
    const state = STATES.includes(params.get('state')) ? params.get('state') : '';
    const tenant = params.get('tenant') || '';
    const prefix = params.get('prefix') || '';
    const order = ['asc', 'desc'].includes(params.get('order')) ? params.get('order') : '';
    const form = el('form', { class: 'filters', id: 'job-filters' },
      el('label', {}, 'state', el('select', { name: 'state' },
        el('option', { value: '', text: 'all' }),
        STATES.map((s) => el('option', { value: s, selected: s === state, text: s })))),
      el('label', {}, 'tenant', el('input', { name: 'tenant', value: tenant, placeholder: 'tenant id' })),
      el('label', {}, 'job id prefix', el('input', { name: 'prefix', value: prefix, placeholder: 'prefix' })),
      el('label', {}, 'time order', el('select', { name: 'order' },
        el('option', { value: '', text: 'default' }),
        el('option', { value: 'desc', selected: order === 'desc', text: 'newest first' }),
        el('option', { value: 'asc', selected: order === 'asc', text: 'oldest first' }))),
      el('button', { type: 'submit', class: 'primary', text: 'Show' }));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const q = new URLSearchParams();
      for (const [k, v] of new FormData(form)) if (v) q.set(k, String(v));
      location.hash = '#/jobs?' + q.toString();
    });
    const body = el('tbody', { id: 'job-rows' });
    const more = el('button', { type: 'button', id: 'load-more', text: 'Load more', hidden: true });
    const status = el('p', { class: 'muted', id: 'jobs-status' });
    main.append(
      el('h1', { text: 'Jobs' }), form,
      el('div', { class: 'table-wrap' }, el('table', {},
        el('thead', {}, el('tr', {}, ['id', 'tenant', 'state', 'progress', 'attempt', 'age', 'worker']
          .map((h, i) => el('th', { class: i === 1 || i === 6 ? 'opt' : null, text: h })))),
        body)),
      status, more);

    const rows = new Map();
    let cursor = null;
    let shown = 0;

    function row(job) {
      const tr = el('tr', { 'data-job-id': job.job_id },
        el('td', { class: 'id' }, el('a', { href: jobHref(job.job_id), text: job.job_id })),
        el('td', { class: 'opt', text: job.tenant_id }),
        el('td', { class: 'st' }, stateBadge(job.state)),
        el('td', { class: 'pr' }, progressBar(job.progress), ` ${Math.round(job.progress)}%`),
        el('td', { class: 'at', text: `${job.attempt} / ${job.max_attempts}` }),
        el('td', { text: fmtAge(ageSince(job.enqueued_at)) }),
        el('td', { class: 'opt', text: job.worker_id || '-' }));
      rows.set(job.job_id, tr);
      return tr;
    }

    async function load() {
      const q = new URLSearchParams({ limit: '50' });
      if (state) q.set('state', state);
      if (tenant) q.set('tenant_id', tenant);
      if (prefix) q.set('job_id_prefix', prefix);
      if (order) q.set('order', order);
      if (cursor) q.set('cursor', cursor);
      more.disabled = true;
      const page = await api('GET', 'jobs?' + q.toString());
      for (const job of page.jobs) if (!rows.has(job.job_id)) body.append(row(job));
      shown += page.jobs.length;
      cursor = page.next_cursor;
      more.hidden = !cursor;
      more.disabled = false;
      status.textContent = `${shown} jobs shown` + (cursor
        ? ((tenant || prefix) ? '; filtering examines up to 1000 jobs per page: load more to go on.' : '.')
        : '; end of list.');
    }

    more.addEventListener('click', () => load().catch(report));
    load().catch(report);
    openStream('events', (type, data) => {
      const tr = rows.get(data.job_id);
      if (!tr) return;
      if (data.state) tr.querySelector('.st').replaceChildren(stateBadge(data.state));
      if (typeof data.progress === 'number') {
        tr.querySelector('.pr').replaceChildren(progressBar(data.progress), ` ${Math.round(data.progress)}%`);
      }
      if (typeof data.attempt === 'number') {
        const at = tr.querySelector('.at');
        at.textContent = `${data.attempt} / ${at.textContent.split('/')[1].trim()}`;
      }
    });
  }

  // ---- Job -------------------------------------------------------------------------

  const TIMELINE_TEXT = {
    enqueued: (e) => (e.retry ? 'queued again (retry)' : 'enqueued'),
    started: (e) => `attempt ${e.attempt} started` + (e.worker ? ` on ${e.worker}` : ''),
    progress: (e) => `attempt ${e.attempt} at ${Math.round(e.progress)}%` + (e.message ? `: ${e.message}` : ''),
    retried: (e) => `attempt ${e.attempt} failed; retry due ${fmtTime(e.due_at ? Number(e.due_at) : null)}`,
    failed: (e) => `attempt ${e.attempt} failed` + (e.error ? `: ${e.error}` : ''),
    completed: (e) => `attempt ${e.attempt} completed`,
    cancelled: () => 'cancelled',
    cancel_requested: () => 'cancel requested',
    stalled: (e) => `attempt ${e.attempt} stalled (its holder's lease ran out); queued again`,
    released: (e) => `attempt ${e.attempt} released at shutdown; queued again`,
  };

  function viewJob(jobId) {
    const title = el('h1', {}, 'Job ', el('span', { id: 'job-id', text: jobId }));
    const bar = progressBar(0, { id: 'job-progress' });
    const pct = el('span', { id: 'job-percent', text: '0%' });
    const message = el('div', { class: 'muted', id: 'job-message' });
    const cancelBtn = el('button', { type: 'button', id: 'cancel-button', class: 'danger', text: 'Cancel' });
    const retryBtn = el('button', { type: 'button', id: 'retry-button', class: 'primary', text: 'Retry' });
    const fields = el('dl', { class: 'fields', id: 'job-fields' });
    const error = el('pre', { class: 'error', id: 'job-error' });
    const errorBox = el('section', { hidden: true }, el('h2', { text: 'Error' }), error);
    const result = el('pre', { id: 'job-result' });
    const resultBox = el('section', { hidden: true }, el('h2', { text: 'Result' }), result);
    const payload = el('pre', { id: 'job-payload' });
    const timeline = el('ol', { class: 'timeline', id: 'timeline' });
    const timelineNote = el('p', { class: 'muted', id: 'timeline-note' });
    main.append(title,
      el('div', {}, bar, ' ', pct), message,
      el('div', { class: 'actions' }, cancelBtn, retryBtn),
      el('div', { class: 'two' },
        el('section', {}, el('h2', { text: 'Fields' }), fields),
        el('section', {}, el('h2', { text: 'Attempts' }), timeline, timelineNote)),
      errorBox, resultBox,
      el('section', {}, el('h2', { text: 'Payload (secrets redacted)' }), payload));

    let job = null;
    const milestones = new Map(); // attempt -> last quarter shown

    function showProgress(p, msg) {
      const value = Math.max(0, Math.min(100, Number(p) || 0));
      bar.value = value;
      bar.setAttribute('value', String(value));
      pct.textContent = `${Math.round(value)}%`;
      if (msg !== undefined) message.textContent = msg || '';
    }

    function render(j) {
      job = j;
      showProgress(j.progress, j.message);
      const rowsOf = [
        ['state', stateBadge(j.state)], ['status', j.status], ['tenant', j.tenant_id],
        ['queue', j.queue], ['priority', j.priority], ['attempt', `${j.attempt} / ${j.max_attempts}`],
        ['worker', j.worker_id || '-'], ['enqueued', fmtTime(j.enqueued_at)],
        ['started', fmtTime(j.started_at)], ['finished', fmtTime(j.finished_at)],
        ['due', fmtTime(j.due_at)], ['cancel requested', j.cancel_requested ? 'yes' : 'no'],
      ];
      fields.replaceChildren(...rowsOf.flatMap(([k, v]) => [el('dt', { text: k }),
        el('dd', { 'data-field': k }, v)]));
      error.textContent = j.error || '';
      errorBox.hidden = !j.error;
      result.textContent = j.result === null || j.result === undefined ? '' : JSON.stringify(j.result, null, 2);
      resultBox.hidden = !result.textContent;
      payload.textContent = j.payload ? JSON.stringify(j.payload, null, 2) : '(not stored)';
      cancelBtn.disabled = FINAL.has(j.state) || j.cancel_requested;
      retryBtn.disabled = !(j.state === 'failed' || j.state === 'cancelled');
    }

    function addEvent(e) {
      if (!TIMELINE_TEXT[e.type]) return;
      if (e.type === 'progress') {
        const quarter = Math.floor((Number(e.progress) || 0) / 25);
        if ((milestones.get(e.attempt) ?? 0) >= quarter) return;
        milestones.set(e.attempt, quarter);
      }
      const ms = e.id ? Number(String(e.id).split('-')[0]) : Date.now();
      timeline.append(el('li', { class: e.type, 'data-type': e.type, 'data-attempt': e.attempt },
        el('time', { text: new Date(ms).toLocaleTimeString() }), TIMELINE_TEXT[e.type](e)));
    }

    async function load() {
      render(await api('GET', 'jobs/' + encodeURIComponent(jobId)));
    }
    const reload = debounced(200, () => load().catch(report));

    async function start() {
      await load();
      const history = await api('GET', 'jobs/' + encodeURIComponent(jobId) + '/events');
      history.events.forEach(addEvent);
      timelineNote.textContent = history.complete ? '' : 'Older events of this job have left the capped events stream.';
      const last = history.events.length ? history.events[history.events.length - 1].id : null;
      openStream('events?job_id=' + encodeURIComponent(jobId), (type, data) => {
        if (type === 'snapshot') { render(data); return; }
        addEvent(data);
        if (type === 'progress') showProgress(data.progress, data.message);
        else reload();
      }, last);
    }

    async function act(verb) {
      try {
        await api('POST', `jobs/${encodeURIComponent(jobId)}/${verb}`);
        notice(verb === 'retry' ? 'Queued again.' : 'Cancel sent.');
        if (verb === 'retry') milestones.clear();
        reload();
      } catch (err) { report(err); }
    }
    cancelBtn.addEventListener('click', () => act('cancel'));
    retryBtn.addEventListener('click', () => act('retry'));
    start().catch(report);
  }

  // ---- Dead letters ----------------------------------------------------------------

  function viewDead(params) {
    const scan = ['500', '2000', '5000'].includes(params.get('scan')) ? params.get('scan') : '500';
    const summary = el('p', { class: 'muted', id: 'dead-summary' }, 'loading...');
    const groups = el('div', { id: 'groups' });
    const scanSelect = el('select', { id: 'dead-scan' }, ['500', '2000', '5000'].map((n) =>
      el('option', { value: n, selected: n === scan, text: `newest ${n}` })));
    scanSelect.addEventListener('change', () => { location.hash = '#/dead?scan=' + scanSelect.value; });
    const purgeState = el('select', { id: 'purge-state' },
      ['failed', 'cancelled', 'completed'].map((s) => el('option', { value: s, text: s })));
    const purgeBtn = el('button', { type: 'button', class: 'danger', id: 'purge-button', text: 'Purge' });
    main.append(el('h1', { text: 'Dead letters' }),
      el('div', { class: 'filters' }, el('label', {}, 'group over', scanSelect)),
      summary, groups,
      el('h2', { text: 'Purge finished jobs' }),
      el('div', { class: 'filters' }, el('label', {}, 'state', purgeState), purgeBtn));
    let queue = null;

    async function retryIds(ids) {
      const out = await api('POST', 'jobs:retry', { job_ids: ids });
      notice(`Queued again: ${out.retried} of ${ids.length}.`);
      await load();
    }

    function groupCard(g) {
      const list = el('ul', { hidden: true }, g.job_ids.map((id) => el('li', {},
        el('a', { href: jobHref(id), text: id }), ' ',
        el('button', { type: 'button', text: 'Retry', onclick: () => retryIds([id]).catch(report) }))));
      const tenants = Object.entries(g.tenants).map(([t, n]) => `${t} (${n})`).join(', ');
      return el('div', { class: 'card group', 'data-count': g.count },
        el('pre', { class: 'error', text: g.error }),
        el('div', { class: 'muted' }, `${g.count} jobs; tenants ${tenants}; latest ${fmtTime(g.latest_at)}`),
        el('div', { class: 'actions' },
          el('button', { type: 'button', class: 'primary', text: `Retry all ${g.count}`,
            onclick: () => retryIds(g.job_ids).catch(report) }),
          el('button', { type: 'button', text: 'Show jobs', onclick: () => { list.hidden = !list.hidden; } })),
        list);
    }

    async function load() {
      const [dead, stats] = await Promise.all([api('GET', 'dead-letters?scan=' + scan), api('GET', 'stats')]);
      queue = stats.queue;
      summary.textContent = `${dead.total_failed} failed jobs; the groups below cover the newest ${dead.examined}.`;
      groups.replaceChildren(...(dead.groups.length ? dead.groups.map(groupCard) : [el('p', { text: 'No failed jobs.' })]));
    }

    purgeBtn.addEventListener('click', async () => {
      const s = purgeState.value;
      if (!queue || !window.confirm(`Delete every ${s} job of queue ${queue}?`)) return;
      try {
        const out = await api('DELETE', `queues/${encodeURIComponent(queue)}/jobs?state=${s}`);
        notice(`Purged ${out.removed} ${s} jobs.`);
        await load();
      } catch (err) { report(err); }
    });
    load().catch(report);
  }

  // ---- routing and the token form --------------------------------------------------

  function route() {
    for (const fn of cleanups) fn();
    cleanups = [];
    main.replaceChildren();
    const hash = location.hash.replace(/^#/, '') || '/';
    const [path, query] = hash.split('?');
    const params = new URLSearchParams(query || '');
    const parts = path.split('/');
    const page = parts[1] === 'job' && parts[2] ? 'job' : (parts[1] || 'overview');
    for (const a of document.querySelectorAll('header nav a')) {
      a.classList.toggle('current', a.dataset.nav === page || (page === 'job' && a.dataset.nav === 'jobs'));
    }
    if (page === 'jobs') viewJobs(params);
    else if (page === 'job') {
      let id = '';
      try { id = decodeURIComponent(parts.slice(2).join('/')); } catch (e) { id = ''; }
      viewJob(id);
    }
    else if (page === 'dead') viewDead(params);
    else viewOverview();
  }

  const form = document.getElementById('token-form');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const input = document.getElementById('token-input');
    if (input.value) token.set(input.value);
    input.value = '';
    form.hidden = true;
    notice('');
    route();
  });
  document.getElementById('token-clear').addEventListener('click', () => {
    token.clear();
    form.hidden = true;
    route();
  });
  document.getElementById('token-close').addEventListener('click', () => { form.hidden = true; });
  document.getElementById('token-button').addEventListener('click', () =>
    askToken('Enter the API token (INGEST_API_TOKEN). It is kept in this tab only.'));
  window.addEventListener('hashchange', () => { notice(''); route(); });
  route();
})();
