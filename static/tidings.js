/*! tidings.js: browser client for a tidings server. Plain ES2017, no build step.
 *
 *   const t = new Tidings({url: "", token, tenantId: "acme"});
 *   // or: new Tidings({getToken: async () => (await fetch("/my/token")).text()})
 *   t.on("notification", n => console.log(n.title));
 *   t.on("stats", s => badge.textContent = s.unread);
 *   t.on("updated", ({notification, replaces}) => swap(replaces, notification));
 *   t.on("deleted", ({id, reason}) => remove(id));
 *   t.markRead(42); t.close();
 *
 * WebSocket first; Server-Sent Events when the WebSocket never opens (blocked by a
 * proxy, refused). Reconnects by itself with exponential backoff and full jitter and
 * resumes from the largest notification id seen (`since` / `last_event_id`), so
 * nothing sent while it was away is lost and nothing is delivered twice.
 *
 * A notification that replaces an earlier one (the same `key`) carries `replaces`: it is
 * emitted as `notification`, then as `updated` ({notification, replaces}) for a page that
 * keeps an inbox to swap it in place. A notification recalled by the sender, or expired, comes
 * as `deleted` ({id, reason}): take it out. Each of those comes once, live or on resume; the
 * cursor advances with their event ids too.
 *
 * When the server no longer has everything after the cursor (retention removed some:
 * "cursor_expired"), or does not know the cursor at all ("cursor_unknown"), it says so
 * first and the client emits `reset` ({reason, oldest_id}): reload what you show.
 *
 * The token never goes into a WebSocket or EventSource URL (browser history, proxy logs):
 * before each connection the client asks for a one-time ticket over REST, with the token in
 * the Authorization header, and opens the stream with `?ticket=`.
 *
 * Each notification it emits is acknowledged to the server (an `ack` frame over the WebSocket,
 * POST /api/notifications/ack from SSE), which is how the sender's receipts and "email me only
 * if I did not see it" know it was shown: a burst in one batch 0.1 s after it starts, at most
 * one batch a second (of up to 5,000 ids); what is pending when the connection ends goes at
 * once. `ack: false` turns that off.
 */
(function (root) {
  "use strict";

  const AUTH_CLOSE_CODES = new Set([1008, 4401, 4403]); // the token was refused: retrying will not help
  const SEEN_LIMIT = 2000; // notification and event ids remembered for de-duplication
  // Acknowledgements of a burst go in one frame or request, ACK_DELAY ms after its first
  // notification, and at most one batch each ACK_INTERVAL ms: under a steady stream a client
  // sends one a second, not one per burst (the server writes receipts once a second anyway).
  const ACK_DELAY = 100;
  const ACK_INTERVAL = 1000;
  const ACK_MAX_IDS = 500; // the server takes 500 ids at a time
  const ACK_MAX_FRAMES = 10; // frames (or requests) a batch: the server takes 20 frames a second

  class Tidings {
    /**
     * @param {object} o
     * @param {string} [o.url]        server base URL ("" or omitted: this page's origin)
     * @param {string} [o.token]      JWT of the user
     * @param {function} [o.getToken] async () => JWT, asked before each connection (instead of token)
     * @param {string} [o.tenantId]
     * @param {"auto"|"websocket"|"sse"} [o.transport]
     * @param {number} [o.since]      resume cursor: deliver only ids larger than this (e.g. the inbox's newest id)
     * @param {number} [o.snapshot]   1–50: the first "connected" carries `recent`, the newest notifications
     * @param {boolean} [o.ack]       acknowledge each notification emitted (default true)
     * @param {number} [o.minDelay]   first reconnect delay ceiling, ms (default 1000)
     * @param {number} [o.maxDelay]   reconnect delay cap, ms (default 30000)
     * @param {boolean} [o.autoConnect] default true
     */
    constructor(o) {
      if (!o || !(o.token || o.getToken)) throw new Error("Tidings: a token or getToken is required");
      const base = o.url || (root.location ? root.location.origin : "");
      this.url = base.replace(/\/+$/, "");
      this.token = o.token || null;
      this.getToken = o.getToken || null;
      this._generation = 0; // bumped by every open and teardown: a ticket fetched for an older one is dropped
      this.tenantId = o.tenantId || null;
      this.transport = o.transport || "auto";
      this.lastId = typeof o.since === "number" ? o.since : null;
      this.snapshot = o.snapshot || null;
      this.ack = o.ack !== false;
      this._unacked = []; // ids emitted and not yet acknowledged
      this._ackedAt = -Infinity; // when the last batch went (performance.now())
      this.minDelay = o.minDelay || 1000;
      this.maxDelay = o.maxDelay || 30000;
      this.stableAfter = 10000; // a connection up this long resets the backoff
      this.connectTimeout = 8000; // a WebSocket that has not opened by then counts as failed
      this.idleTimeout = 75000; // no frame at all for this long: the link is dead, reconnect
      this.connected = false;
      this.current = null; // "websocket" | "sse" while connected
      this._listeners = new Map();
      this._seen = new Set();
      this._attempt = 0;
      this._wsEverOpened = false;
      this._mode = this.transport === "sse" ? "sse" : "websocket";
      this._closed = false;
      this._onOnline = () => { if (this._retryTimer) this._open(); }; // back online: retry now
      if (root.addEventListener) root.addEventListener("online", this._onOnline);
      if (o.autoConnect !== false) this._open();
    }

    on(name, fn) {
      if (!this._listeners.has(name)) this._listeners.set(name, new Set());
      this._listeners.get(name).add(fn);
      return this;
    }

    off(name, fn) {
      const set = this._listeners.get(name);
      if (set) set.delete(fn);
      return this;
    }

    /** Mark one notification read: over the open WebSocket, else over REST. */
    markRead(id) {
      if (this.current === "websocket" && this._sock && this._sock.readyState === 1) {
        this._sock.send(JSON.stringify({type: "mark_read", id: id}));
        return Promise.resolve();
      }
      return this.request("POST", `/api/notifications/${encodeURIComponent(id)}/read`);
    }

    markAllRead() {
      return this.request("POST", "/api/notifications/read-all");
    }

    /** Authenticated REST call to the same server; resolves to the parsed JSON body. */
    async request(method, path, body) {
      const headers = {Authorization: `Bearer ${await this._token()}`};
      if (this.tenantId) headers["X-Tenant-ID"] = this.tenantId;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const res = await fetch(this.url + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      });
      const data = res.status === 204 ? null : await res.json().catch(() => null);
      if (!res.ok) {
        const err = new Error((data && data.error && data.error.message) || `HTTP ${res.status}`);
        err.status = res.status;
        err.code = data && data.error && data.error.code;
        throw err;
      }
      return data;
    }

    /** Open the connection; the constructor does this unless autoConnect is false. */
    connect() {
      this._closed = false;
      if (!this._sock && !this.connected) this._open();
      return this;
    }

    /** Replace the token (e.g. after a refresh) and reconnect with it. */
    setToken(token) {
      this._sendAcks(true);
      this.token = token;
      this._closed = false;
      this._attempt = 0;
      this._teardown();
      this._open();
    }

    close() {
      this._sendAcks(true);
      this._closed = true;
      if (root.removeEventListener) root.removeEventListener("online", this._onOnline);
      this._teardown();
    }

    // ---- internals ----

    _emit(name, detail) {
      const set = this._listeners.get(name);
      if (!set) return;
      for (const fn of Array.from(set)) {
        try { fn(detail); } catch (e) { setTimeout(() => { throw e; }); } // never break the client
      }
    }

    async _token() {
      return this.getToken ? await this.getToken() : this.token;
    }

    _query(cursorName, ticket) {
      const q = new URLSearchParams({ticket});
      if (this.tenantId) q.set("tenant_id", this.tenantId);
      if (this.lastId !== null) q.set(cursorName, String(this.lastId));
      else if (this.snapshot) q.set("snapshot", String(this.snapshot)); // a resume needs none
      return q.toString();
    }

    async _open() {
      clearTimeout(this._retryTimer);
      this._retryTimer = null;
      if (this._closed) return;
      const generation = ++this._generation; // a later open or a teardown supersedes this one
      let ticket;
      try {
        ticket = (await this.request("POST", "/api/tickets")).ticket;
      } catch (e) {
        if (generation !== this._generation) return;
        // A refused token will not be taken on a retry either; anything else (offline, 503) is retried.
        this._lost(e.status === 401 || e.status === 403 ? {code: "auth", status: e.status, reason: e.code} : null);
        return;
      }
      if (generation !== this._generation || this._closed) return;
      if (this._mode === "websocket") this._openWebSocket(ticket); else this._openSSE(ticket);
    }

    _openWebSocket(ticket) {
      const ws = new WebSocket(`${this.url.replace(/^http/, "ws")}/ws/notifications?${this._query("since", ticket)}`);
      let opened = false;
      this._sock = ws;
      const openTimer = setTimeout(() => ws.close(), this.connectTimeout);
      ws.onopen = () => { opened = true; this._wsEverOpened = true; clearTimeout(openTimer); };
      ws.onmessage = (ev) => {
        let frame;
        try { frame = JSON.parse(ev.data); } catch (e) { return; }
        this._handle(frame.type, frame, "websocket");
      };
      ws.onclose = (ev) => {
        clearTimeout(openTimer);
        if (this._sock !== ws) return; // superseded by setToken()/close()
        clearInterval(this._keepAlive);
        this._sock = null;
        if (!opened && !this._wsEverOpened && this.transport === "auto") {
          this._mode = "sse"; // never got through: assume WebSockets are blocked here
          this._open();
          return;
        }
        this._lost(AUTH_CLOSE_CODES.has(ev.code) ? {code: "auth", closeCode: ev.code, reason: ev.reason} : null);
      };
      this._keepAlive = setInterval(() => {
        if (ws.readyState === 1) ws.send('{"type":"ping"}');
      }, this.idleTimeout / 3);
    }

    _openSSE(ticket) {
      const es = new EventSource(`${this.url}/api/notifications/stream?${this._query("last_event_id", ticket)}`);
      this._sock = es;
      const on = (name) => es.addEventListener(name, (ev) => {
        if (typeof ev.data !== "string") return; // the transport's own "error", handled below
        let data = null;
        try { data = ev.data ? JSON.parse(ev.data) : null; } catch (e) { return; }
        this._handle(name, data, "sse");
      });
      ["connected", "reset", "notification", "notification_deleted", "stats_update", "heartbeat",
       "error"].forEach(on);
      // EventSource would reconnect by itself with its own timing and the id of its
      // last event; the library owns reconnects instead (backoff, the resume cursor).
      es.onerror = () => {
        if (this._sock !== es) return;
        es.close();
        this._sock = null;
        this._lost(null);
      };
    }

    /** One frame (WebSocket) or event (SSE), normalised to the same handling. */
    _handle(type, data, transport) {
      this._touch();
      switch (type) {
        case "connected":
          this.connected = true;
          this.current = transport;
          this._connectedAt = Date.now();
          this._connectionId = data && data.connection_id;
          this._startId = data && typeof data.last_id === "number" ? data.last_id : null;
          // A first connection resumes from the server's newest id, so a drop loses nothing.
          if (this.lastId === null && this._startId !== null) this.lastId = this._startId;
          const info = Object.assign({}, data || {}, {transport});
          delete info.type;
          this._emit("connected", info);
          break;
        case "notification": {
          const n = transport === "websocket" ? data.notification : data;
          if (!n || !this._first(n.id)) return; // never shown twice
          this._emit("notification", n);
          if (typeof n.replaces === "number") this._emit("updated", {notification: n, replaces: n.replaces});
          this._acknowledge(n.id);
          break;
        }
        case "notification_deleted": // recalled or expired; its event id has its place in the stream
          if (!data || typeof data.id !== "number" || !this._first(data.event_id)) return;
          this._emit("deleted", {id: data.id, reason: data.reason});
          break;
        case "reset": {
          const detail = Object.assign({}, data || {});
          delete detail.type;
          if (detail.reason === "cursor_unknown") {
            // The server does not know our cursor (its history was reset, or it is another
            // server): resume from where this connection started, and forget the ids seen,
            // which may be given again to new notifications.
            this.lastId = this._startId;
            this._seen.clear();
          }
          this._emit("reset", detail);
          break;
        }
        case "stats_update":
          this._emit("stats", (data && data.stats) || data);
          break;
        case "error":
          if (data) this._emit("error", data.error || data);
          break;
        default: // pong, heartbeat: liveness only
      }
    }

    /** True the first time a stream id (notification or event) comes; moves the cursor past it. */
    _first(id) {
      if (typeof id !== "number" || this._seen.has(id)) return false;
      this._seen.add(id);
      if (this._seen.size > SEEN_LIMIT) this._seen.delete(this._seen.values().next().value);
      if (this.lastId === null || id > this.lastId) this.lastId = id;
      return true;
    }

    /** Queue an acknowledgement; a burst goes out as one frame (WebSocket) or request (SSE). */
    _acknowledge(id) {
      if (!this.ack) return;
      this._unacked.push(id);
      if (this._ackTimer) return;
      const wait = Math.max(ACK_DELAY, this._ackedAt + ACK_INTERVAL - performance.now());
      this._ackTimer = setTimeout(() => this._sendAcks(false), wait);
    }

    /** Sends a batch: up to ACK_MAX_FRAMES frames (WebSocket) or requests (SSE) of pending
     * ids, the rest a second later. `final`: the connection they came on is ending, so all of
     * them go now, over the socket while it is open and the rest over REST (a WebSocket's
     * new connection was not sent them, and the server would ignore them from it). */
    _sendAcks(final) {
      clearTimeout(this._ackTimer);
      this._ackTimer = null;
      if (!this._unacked.length) return;
      this._ackedAt = performance.now();
      const ws = this.current === "websocket" && this._sock && this._sock.readyState === 1 ? this._sock : null;
      for (let n = 0; this._unacked.length && (final || n < ACK_MAX_FRAMES); n++) {
        const ids = this._unacked.splice(0, ACK_MAX_IDS);
        if (ws && n < ACK_MAX_FRAMES) {
          ws.send(JSON.stringify({type: "ack", ids}));
        } else {
          const body = {ids};
          if (this._connectionId && this.current === "sse") body.connection_id = this._connectionId;
          this.request("POST", "/api/notifications/ack", body).catch(() => {}); // a record, not a delivery
        }
      }
      if (this._unacked.length) this._ackTimer = setTimeout(() => this._sendAcks(false), ACK_INTERVAL);
    }

    /** Restart the idle watchdog: a silent link for idleTimeout is treated as dead. */
    _touch() {
      clearTimeout(this._idleTimer);
      this._idleTimer = setTimeout(() => {
        if (!this._sock) return;
        this._teardown(true);
        this._lost(null);
      }, this.idleTimeout);
    }

    _lost(authError) {
      this._sendAcks(true);
      clearInterval(this._keepAlive);
      clearTimeout(this._idleTimer);
      const wasConnected = this.connected;
      this.connected = false;
      this.current = null;
      if (wasConnected && Date.now() - this._connectedAt >= this.stableAfter) this._attempt = 0;
      if (wasConnected) this._emit("disconnected", {willRetry: !authError && !this._closed});
      if (authError) {
        this._emit("error", Object.assign({fatal: true, message: "token refused; call setToken()"}, authError));
        return; // do not hammer a server that refuses this token
      }
      if (this._closed) return;
      // Exponential backoff with full jitter: a random delay in [0, min(cap, base * 2^n)).
      const ceiling = Math.min(this.maxDelay, this.minDelay * Math.pow(2, this._attempt++));
      this._retryTimer = setTimeout(() => this._open(), Math.random() * ceiling);
    }

    _teardown(keepState) {
      this._generation++;
      clearTimeout(this._retryTimer);
      clearInterval(this._keepAlive);
      clearTimeout(this._idleTimer);
      const s = this._sock;
      this._sock = null;
      if (s) s.close();
      if (keepState) return;
      if (this.connected) {
        this.connected = false;
        this.current = null;
        this._emit("disconnected", {willRetry: false});
      }
    }
  }

  root.Tidings = Tidings;
  if (typeof module === "object" && module.exports) module.exports = Tidings;
})(typeof window !== "undefined" ? window : globalThis);
