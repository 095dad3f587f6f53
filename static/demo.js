/* The demo inbox: lists GET /api/notifications, then shows live ones from tidings.js on top. */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const root = $("demo");
  const query = new URLSearchParams(location.search);

  /** The token's claims, for display and as the default tenant (no verification: the server does that). */
  function claims(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
    } catch (e) {
      return {};
    }
  }

  // A token given in the address is moved out of it at once (history, shoulder-surfing) and
  // kept for this tab only; the streams themselves are opened with one-time tickets.
  if (query.get("token")) {
    sessionStorage.setItem("tidings-demo-token", query.get("token"));
    const rest = new URLSearchParams(query);
    rest.delete("token");
    history.replaceState(null, "", location.pathname + (rest.toString() ? `?${rest}` : ""));
  }
  const token = root.dataset.token || query.get("token") || sessionStorage.getItem("tidings-demo-token") || "";
  if (!token) {
    $("setup").hidden = false;
    $("conn-status").hidden = true;
    $("mark-all").hidden = true;
    return;
  }
  const claim = claims(token);
  const tenantId = root.dataset.tenantId || query.get("tenant_id") || claim.tenant_id || "";
  const userId = root.dataset.userId || claim.sub || "you";
  // The first screen comes from the connection itself (`recent`, `unread`): no REST call.
  const client = new Tidings({url: "", token, tenantId, transport: query.get("transport") || "auto",
                              snapshot: 50, autoConnect: false});
  const items = new Map(); // id -> {n, li}
  let unread = 0;

  $("inbox-card").hidden = false;
  $("who").textContent = `Signed in as ${userId} · tenant ${tenantId}`;
  $("curl-hint").textContent =
    `TOKEN=$(.venv/bin/python server.py token --dev --tenant ${tenantId} --user backend --role service)\n` +
    `curl -X POST ${location.origin}/api/notifications \\\n` +
    `  -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\\n` +
    `  -d '{"user_id": "${userId}", "title": "Hello ${userId}", "type": "success"}'`;

  function setUnread(n) {
    unread = Math.max(0, n);
    const badge = $("unread-count");
    badge.textContent = String(unread);
    badge.dataset.count = String(unread);
    $("mark-all").disabled = unread === 0;
    document.title = (unread ? `(${unread}) ` : "") + "Demo inbox · tidings";
  }

  function setStatus(state, text) {
    const el = $("conn-status");
    el.dataset.state = state;
    el.dataset.transport = client.current || "";
    el.textContent = text;
    el.className = "pill " + ({live: "ok", connecting: "warn", offline: "bad"}[state] || "");
  }

  function ago(iso) {
    const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
    if (!(s >= 0)) return "";
    if (s < 45) return "just now";
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return new Date(iso).toLocaleDateString();
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text) e.textContent = text;
    return e;
  }

  function render(n) {
    const li = el("li", n.read_at ? "" : "unread");
    li.dataset.id = String(n.id);
    li.appendChild(el("span", "dot " + (n.type || "info")));
    const body = el("div", "body");
    body.appendChild(el("div", "title", n.title));
    if (n.message) body.appendChild(el("div", "msg", n.message));
    const meta = [ago(n.created_at), n.type, n.priority !== "normal" ? n.priority : "", n.user_id ? "" : "everyone"];
    const metaLine = el("div", "meta", meta.filter(Boolean).join(" · "));
    if (n.group) { // a thread: its chip shows only that thread (click again for all)
      li.dataset.group = n.group;
      const chip = el("button", "pill plain info thread", "thread " + n.group);
      chip.type = "button";
      chip.dataset.action = "thread";
      chip.addEventListener("click", () => showThread(thread === n.group ? null : n.group));
      metaLine.append(" ", chip);
    }
    body.appendChild(metaLine);
    if (n.actions && n.actions.length) { // buttons: links the server checked are http(s)
      const row = el("div", "actions");
      for (const a of n.actions) {
        if (!/^https?:\/\//i.test(a.url)) continue;
        const link = el("a", "btn secondary small", a.label);
        link.href = a.url;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        link.dataset.action = "link";
        row.appendChild(link);
      }
      body.appendChild(row);
    }
    li.appendChild(body);
    if (!n.read_at) {
      const btn = el("button", "btn secondary small", "Mark read");
      btn.type = "button";
      btn.dataset.action = "read";
      btn.addEventListener("click", () => markRead(n.id));
      li.appendChild(btn);
    }
    return li;
  }

  let thread = null; // the group shown alone, or null for every notification
  function showThread(group) {
    thread = group;
    for (const {n, li} of items.values()) li.hidden = group !== null && n.group !== group;
    $("inbox-count").textContent = group === null ? `${items.size} shown` : `thread ${group}`;
  }

  function add(n, live) {
    if (items.has(n.id)) return false;
    const li = render(n);
    items.set(n.id, {n, li});
    const list = $("inbox");
    if (live) {
      li.classList.add("new");
      list.insertBefore(li, list.firstChild);
    } else {
      list.appendChild(li);
    }
    $("inbox-empty").hidden = true;
    li.hidden = thread !== null && n.group !== thread;
    if (thread === null) $("inbox-count").textContent = `${items.size} shown`;
    return true;
  }

  function showRead(id) {
    const item = items.get(id);
    if (!item || item.n.read_at) return false;
    item.n.read_at = new Date().toISOString();
    item.li.classList.remove("unread");
    const btn = item.li.querySelector("[data-action=read]");
    if (btn) btn.remove();
    return true;
  }

  async function markRead(id) {
    if (showRead(id)) setUnread(unread - 1); // optimistic; the server's stats_update confirms
    try { await client.markRead(id); } catch (e) { toast({type: "error", title: "Could not mark read", message: e.message}); }
  }

  function toast(n) {
    const t = el("div", "toast " + (n.type || "info"));
    t.setAttribute("role", "status");
    t.appendChild(el("div", "title", n.title));
    if (n.message) t.appendChild(el("div", "msg", n.message));
    $("toasts").appendChild(t);
    setTimeout(() => t.remove(), 5000);
  }

  $("mark-all").addEventListener("click", async () => {
    for (const id of items.keys()) showRead(id);
    setUnread(0);
    try { await client.markAllRead(); } catch (e) { toast({type: "error", title: "Could not mark all read", message: e.message}); }
  });

  client.on("connected", (info) => {
    setStatus("live", `Live · ${info.transport === "sse" ? "SSE" : "WebSocket"}`);
    if (info.recent) { // the first connection; a resume replays what it missed instead
      info.recent.forEach((n) => add(n, false));
      $("inbox-empty").hidden = items.size > 0;
      setUnread(info.unread);
    }
  });
  // The server no longer has all we missed (retention), or not our cursor: draw the inbox
  // again from REST; what the stream replays meanwhile is added as usual, never twice.
  async function reload() {
    items.clear();
    $("inbox").textContent = "";
    window.tidingsDemo.reloads = (window.tidingsDemo.reloads || 0) + 1;
    try {
      const [page, stats] = await Promise.all([
        client.request("GET", "/api/notifications?limit=50"),
        client.request("GET", "/api/notifications/stats")]);
      page.notifications.forEach((n) => add(n, false));
      setUnread(stats.unread);
    } catch (e) {
      toast({type: "error", title: "Could not reload the inbox", message: e.message});
    }
    $("inbox-empty").hidden = items.size > 0;
    $("inbox-count").textContent = `${items.size} shown`;
    window.tidingsDemo.reloaded = (window.tidingsDemo.reloaded || 0) + 1;
  }
  client.on("reset", reload);
  client.on("disconnected", () => setStatus("offline", "Reconnecting…"));
  client.on("stats", (s) => {
    if (!s || typeof s.unread !== "number") return;
    window.tidingsDemo.serverStats = s; // the server's latest word, for the console and the tests
    setUnread(s.unread);
  });
  client.on("error", (e) => { if (e.fatal) setStatus("offline", "Token refused"); });
  client.on("notification", (n) => {
    if (n.replaces && items.has(n.replaces)) return; // swapped in place on "updated"
    if (!add(n, true)) return;
    if (!n.read_at) setUnread(unread + 1);
    toast(n);
  });
  // A notification with the same key replaced one shown here: the new one takes its place.
  client.on("updated", ({notification: n, replaces}) => {
    const old = items.get(replaces);
    if (!old || items.has(n.id)) return;
    const li = render(n);
    li.classList.add("new");
    old.li.replaceWith(li);
    items.delete(replaces);
    items.set(n.id, {n, li});
    setUnread(unread + (n.read_at ? 0 : 1) - (old.n.read_at ? 0 : 1));
    toast(n);
  });
  // Recalled by the sender, or expired: it goes.
  client.on("deleted", ({id}) => {
    const item = items.get(id);
    if (!item) return;
    item.li.remove();
    items.delete(id);
    if (!item.n.read_at) setUnread(unread - 1);
    $("inbox-empty").hidden = items.size > 0;
    $("inbox-count").textContent = `${items.size} shown`;
  });

  function start() {
    setStatus("connecting", "Connecting…");
    client.connect();
  }

  window.tidingsDemo = {client};
  start();
})();
