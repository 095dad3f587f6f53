'use strict';
/*
 * The node floor: what a user would pick instead of tidings for WebSocket fan-out, node's
 * http server with `ws`, doing the same transport work as bench/floor.py and answering the
 * same routes (WebSocket only; the benchmarks run it with --node):
 *
 * - GET /healthz
 * - GET /ws/notifications?token=…&tenant_id=…: the HS256 token checked before the upgrade
 *   (signature, exp, nbf, sub, tenant_id; 401 JSON otherwise), `connected` first.
 * - POST /api/notifications with a Bearer token (and X-Tenant-ID, which must match the
 *   token's tenant when sent): `broadcast` sends the notification to every WebSocket;
 *   `user_id` creates one, `user_ids` one each; 201 with the notification(s) and the counts.
 *
 * Run: node bench/node/floor.js --port 8899 --jwt-secret s3cret
 */

const crypto = require('node:crypto');
const http = require('node:http');
const { parseArgs } = require('node:util');
const { WebSocket, WebSocketServer } = require('ws');

const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    'jwt-secret': { type: 'string' },
  },
});
if (!args.port || !args['jwt-secret']) {
  console.error('usage: node floor.js [--host H] --port N --jwt-secret S');
  process.exit(2);
}
const secret = Buffer.from(args['jwt-secret']);

/* The claims of a valid HS256 token (and of the tenant asked for, when one is), else null. */
function claimsOf(token, tenant) {
  const parts = typeof token === 'string' ? token.split('.') : [];
  if (parts.length !== 3) return null;
  let header, claims;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url'));
    claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
  } catch {
    return null;
  }
  if (header === null || header.alg !== 'HS256' || claims === null || typeof claims !== 'object') {
    return null;
  }
  const expected = crypto.createHmac('sha256', secret)
    .update(`${parts[0]}.${parts[1]}`).digest();
  const given = Buffer.from(parts[2], 'base64url');
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) return null;
  const now = Date.now() / 1000;
  if (!Number.isFinite(claims.exp) || Math.trunc(claims.exp) <= now) return null;
  if (claims.nbf !== undefined && !(Number.isFinite(claims.nbf) && Math.trunc(claims.nbf) <= now)) {
    return null;
  }
  if (typeof claims.sub !== 'string' || claims.tenant_id == null) return null;
  if (tenant != null && tenant !== claims.tenant_id) return null;
  return claims;
}

let nextId = 1;
let nextConnection = 1;

/* As floor.py: a key that is present keeps its value, even null. */
function field(body, key, fallback) {
  return Object.prototype.hasOwnProperty.call(body, key) ? body[key] : fallback;
}

function notification(tenant, userId, body) {
  if (!Object.prototype.hasOwnProperty.call(body, 'title')) throw new TypeError('no title');
  return {
    id: nextId++, tenant_id: tenant, user_id: userId,
    type: field(body, 'type', 'info'), title: body.title,
    message: field(body, 'message', ''), data: field(body, 'data', {}),
    priority: field(body, 'priority', 'normal'),
    created_at: new Date().toISOString(), read_at: null,
  };
}

// No permessage-deflate (tidings negotiates none either); ws sets TCP_NODELAY on every socket.
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

/*
 * The broadcast as a ws user writes it: JSON.stringify once, ws.send to each open client.
 * ws frames per client: each send measures the string, builds that client's 2-4 byte frame
 * header and writes header and payload (the string is UTF-8 encoded again by each socket's
 * write); only the JSON text is shared.
 */
function broadcast(n) {
  const frame = JSON.stringify({ type: 'notification', notification: n });
  let sent = 0;
  for (const client of wss.clients) {
    if (client.readyState === WebSocket.OPEN) {
      client.send(frame);
      sent += 1;
    }
  }
  return { websocket: sent, sse: 0 };
}

function answer(res, status, doc) {
  const body = JSON.stringify(doc);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=UTF-8',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}

function deny(res) {
  answer(res, 401, { error: { code: 'invalid_token', message: 'invalid token' } });
}

function create(req, res) {
  const auth = req.headers.authorization || '';
  const claims = claimsOf(auth.slice(7), req.headers['x-tenant-id']);
  if (claims === null || !auth.startsWith('Bearer ')) return deny(res);
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks));
      const tenant = claims.tenant_id;
      if (Array.isArray(body.user_ids)) {
        const ns = body.user_ids.map((u) => notification(tenant, u, body));
        return answer(res, 201, { notifications: ns, delivery: { websocket: 0, sse: 0 } });
      }
      const n = notification(tenant, field(body, 'user_id', null), body);
      const delivery = body.broadcast ? broadcast(n) : { websocket: 0, sse: 0 };
      return answer(res, 201, { notification: n, delivery });
    } catch (err) {
      return answer(res, 400, { error: { code: 'invalid_body', message: String(err.message) } });
    }
  });
}

const server = http.createServer((req, res) => {
  const path = req.url.split('?', 1)[0];
  if (path === '/healthz' && req.method === 'GET') return answer(res, 200, { status: 'ok' });
  if (path === '/api/notifications') {
    if (req.method === 'POST') return create(req, res);
    return answer(res, 405, { error: { code: 'method_not_allowed', message: req.method } });
  }
  return answer(res, 404, { error: { code: 'not_found', message: path } });
});
server.keepAliveTimeout = 0; // keep idle keep-alive connections open, as Tornado does

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://localhost');
  const claims = url.pathname === '/ws/notifications'
    ? claimsOf(url.searchParams.get('token'), url.searchParams.get('tenant_id'))
    : null;
  if (claims === null) {
    const status = url.pathname === '/ws/notifications' ? '401 Unauthorized' : '404 Not Found';
    const body = JSON.stringify({ error: { code: 'invalid_token', message: 'invalid token' } });
    socket.end(`HTTP/1.1 ${status}\r\nContent-Type: application/json; charset=UTF-8\r\n`
      + `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('error', () => {}); // a client's protocol error: ws closes the connection
    ws.on('message', () => {}); // acknowledgements are ignored, as floor.py does
    ws.send(JSON.stringify({
      type: 'connected', connection_id: String(nextConnection++),
      user_id: claims.sub, tenant_id: claims.tenant_id,
    }));
  });
});

server.listen(Number(args.port), args.host);

function stop() {
  for (const client of wss.clients) client.terminate();
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
