/* Dashboard client: applies the live snapshots of /admin/ws to the page, no reloads.
 *
 * Message (server -> page), sent on open and then at most a few times a second on change:
 *   {"type": "overview",
 *    "tenants": [{"tenant_id", "websocket", "sse", "users_online", "sent_last_minute", "delivered_last_minute"}],
 *    "global": {"websocket", "sse", "total"},
 *    "history": [{"t": unix_seconds, "connections": N, "sent": N}]}
 * Cells are found by [data-tenant="…"] [data-field="…"] and [data-global] [data-field="…"].
 * A tenant's page (a table with data-receipts-tenant) also gets, when they change:
 *   {"type": "receipts", "tenant_id", "notifications": {id: {"pushed", "acknowledged", "read"}}}
 */
(function () {
  "use strict";

  const FIELDS = ["websocket", "sse", "users_online", "sent_last_minute", "delivered_last_minute"];
  const status = document.getElementById("live-status");
  const rows = document.getElementById("tenant-rows");
  const chartBox = document.getElementById("chart");
  let chart = null;

  function setStatus(state, text) {
    if (!status) return;
    status.dataset.state = state;
    status.textContent = text;
    status.className = "pill " + ({live: "ok", connecting: "warn", offline: "bad"}[state] || "");
  }

  /** Write a value into a cell; flash it when it changed so the eye catches it. */
  function put(cell, value) {
    if (!cell) return;
    const text = String(value == null ? 0 : value);
    if (cell.textContent === text) return;
    cell.textContent = text;
    cell.classList.remove("flash");
    void cell.offsetWidth; // restart the animation
    cell.classList.add("flash");
  }

  function makeRow(tenantId) {
    const tr = document.createElement("tr");
    tr.dataset.tenant = tenantId;
    const name = document.createElement("td");
    const a = document.createElement("a");
    a.href = "/admin/tenants/" + encodeURIComponent(tenantId);
    a.textContent = tenantId;
    name.appendChild(a);
    tr.appendChild(name);
    for (const f of FIELDS) {
      const td = document.createElement("td");
      td.className = "num";
      td.dataset.field = f;
      tr.appendChild(td);
    }
    return tr;
  }

  function applyTenants(tenants) {
    const seen = new Set();
    for (const t of tenants) {
      seen.add(t.tenant_id);
      if (rows && !rows.querySelector(`tr[data-tenant="${CSS.escape(t.tenant_id)}"]`)) {
        rows.appendChild(makeRow(t.tenant_id));
      }
      // Every element of this tenant: its overview row, or the tenant page's summary cards.
      for (const scope of document.querySelectorAll(`[data-tenant="${CSS.escape(t.tenant_id)}"]`)) {
        for (const f of FIELDS) put(scope.querySelector(`[data-field="${f}"]`), t[f]);
      }
    }
    if (!rows) return;
    for (const tr of Array.from(rows.querySelectorAll("tr[data-tenant]"))) {
      if (!seen.has(tr.dataset.tenant)) tr.remove();
    }
    const table = document.getElementById("tenants-table");
    const empty = document.getElementById("tenants-empty");
    if (table) table.hidden = tenants.length === 0;
    if (empty) empty.hidden = tenants.length !== 0;
  }

  function applyGlobal(g, tenantCount) {
    const scope = document.querySelector("[data-global]");
    if (!scope || !g) return;
    for (const f of ["websocket", "sse", "total"]) put(scope.querySelector(`[data-field="${f}"]`), g[f]);
    put(scope.querySelector('[data-field="tenants"]'), tenantCount);
  }

  function cssVar(name, fallback) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
  }

  function chartData(history) {
    return [history.map((p) => p.t), history.map((p) => p.connections), history.map((p) => p.sent)];
  }

  function drawChart(history) {
    if (!chartBox || typeof uPlot === "undefined") return;
    const data = chartData(history || []);
    chartBox.toggleAttribute("data-empty", data[0].length < 2);
    if (chart) { chart.setData(data); return; }
    const axis = {stroke: cssVar("--muted", "#666"), grid: {stroke: cssVar("--border", "#eee")}, ticks: {stroke: cssVar("--border", "#eee")}};
    chart = new uPlot({
      width: chartBox.clientWidth || 600,
      height: 240,
      cursor: {drag: {x: false, y: false}},
      // Always the last hour, counts from zero: a young server's few points stay readable.
      scales: {
        x: {time: true, range: () => { const now = Date.now() / 1000; return [now - 3600, now]; }},
        conn: {range: (u, min, max) => [0, Math.max(4, Math.ceil((max || 0) * 1.15))]},
        sent: {range: (u, min, max) => [0, Math.max(4, Math.ceil((max || 0) * 1.15))]},
      },
      series: [
        {},
        {label: "Connections", stroke: cssVar("--accent", "#3b5bdb"), width: 2, scale: "conn", value: (u, v) => v == null ? "–" : v},
        {label: "Sent", stroke: cssVar("--ok", "#2b8a3e"), fill: "rgba(43,138,62,.08)", width: 1.5, scale: "sent", value: (u, v) => v == null ? "–" : v},
      ],
      axes: [
        Object.assign({}, axis),
        Object.assign({}, axis, {scale: "conn", label: "connections"}),
        Object.assign({}, axis, {scale: "sent", side: 1, label: "sent", grid: {show: false}}),
      ],
    }, data, chartBox);
    new ResizeObserver(() => chart.setSize({width: chartBox.clientWidth, height: 240})).observe(chartBox);
  }

  // What the page shows, kept whole: the socket sends it once, then only what changed.
  const state = {tenants: new Map(), global: null, history: []};
  const HISTORY_POINTS = 360;

  function applyReceipts(notifications) {
    for (const [id, r] of Object.entries(notifications || {})) {
      const cell = document.querySelector(`tr[data-id="${CSS.escape(id)}"] [data-receipts]`);
      if (!cell) continue;
      for (const f of ["pushed", "acknowledged", "read"]) put(cell.querySelector(`[data-field="${f}"]`), r[f]);
    }
  }

  function apply(msg) {
    if (!msg) return;
    if (msg.type === "receipts") {
      applyReceipts(msg.notifications);
      window.tidingsReceipts = msg.notifications; // for the console and the tests
      return;
    }
    if (msg.type === "overview") {
      state.tenants = new Map((msg.tenants || []).map((t) => [t.tenant_id, t]));
      state.history = msg.history || [];
    } else if (msg.type === "changes") {
      for (const t of msg.tenants || []) state.tenants.set(t.tenant_id, t);
      for (const id of msg.removed || []) {
        state.tenants.delete(id);
        // a tenant page keeps its cards: nothing connected, nothing sent in the last minute
        for (const scope of document.querySelectorAll(`[data-tenant="${CSS.escape(id)}"]`)) {
          for (const f of FIELDS) put(scope.querySelector(`[data-field="${f}"]`), 0);
        }
      }
      state.history = state.history.concat(msg.history || []).slice(-HISTORY_POINTS);
    } else {
      return;
    }
    state.global = msg.global;
    const tenants = Array.from(state.tenants.values())
      .sort((a, b) => (a.tenant_id < b.tenant_id ? -1 : 1));
    applyTenants(tenants);
    applyGlobal(state.global, tenants.length);
    if (msg.type === "overview" || (msg.history || []).length) drawChart(state.history);
    // the whole current picture, for the console and the tests
    window.tidingsOverview = {type: "overview", tenants, global: state.global, history: state.history};
  }

  /** "3 min ago" for every <time data-relative>. */
  function relativeTimes() {
    const fmt = new Intl.RelativeTimeFormat(undefined, {numeric: "auto"});
    for (const el of document.querySelectorAll("time[data-relative]")) {
      const t = Date.parse(el.getAttribute("datetime"));
      if (isNaN(t)) continue;
      const s = Math.round((t - Date.now()) / 1000);
      const [v, unit] = Math.abs(s) < 60 ? [s, "second"] : Math.abs(s) < 3600 ? [Math.round(s / 60), "minute"]
        : Math.abs(s) < 86400 ? [Math.round(s / 3600), "hour"] : [Math.round(s / 86400), "day"];
      el.textContent = fmt.format(v, unit);
      el.title = new Date(t).toLocaleString();
    }
  }

  // ---- the socket: reconnects with exponential backoff and full jitter ----
  let attempt = 0;
  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const table = document.querySelector("[data-receipts-tenant]");
    const watch = table ? `?tenant=${encodeURIComponent(table.dataset.receiptsTenant)}` : "";
    const ws = new WebSocket(`${proto}//${location.host}/admin/ws${watch}`);
    let openedAt = 0;
    setStatus("connecting", attempt ? "Reconnecting…" : "Connecting…");
    ws.onopen = () => { openedAt = Date.now(); setStatus("live", "Live"); };
    ws.onmessage = (ev) => {
      try { apply(JSON.parse(ev.data)); } catch (e) { console.error("admin socket:", e); }
    };
    ws.onclose = (ev) => {
      if (ev.code === 4401 || ev.code === 1008) { location.href = "/admin/login"; return; } // session ended
      if (openedAt && Date.now() - openedAt > 10000) attempt = 0;
      setStatus("offline", "Offline, retrying…");
      const delay = Math.random() * Math.min(30000, 1000 * 2 ** attempt++);
      setTimeout(connect, delay);
    };
  }

  const initial = document.getElementById("overview-data");
  if (initial) {
    const data = JSON.parse(initial.textContent);
    drawChart(data.history || []);
    window.tidingsOverview = data;
  }
  relativeTimes();
  setInterval(relativeTimes, 30000);
  connect();
})();
