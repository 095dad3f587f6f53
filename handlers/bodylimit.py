"""A body larger than --max-body-kib is refused with 413 from its headers, before it is read.

Tornado reads a whole body before any handler runs, and its own ``max_body_size`` answers a
bare 400. This delegate sits between the HTTP server and the application: it looks at
``Content-Length`` when the headers arrive and, when it is too large, answers a JSON 413 on the
socket itself and closes it, so not one byte of the body is read. Chunked bodies (no length)
are capped by the HTTP server's ``max_body_size``, set to the same limit."""

from __future__ import annotations

import json
import logging
from typing import Any

from tornado import httputil

from tidings import errors

access_log = logging.getLogger("tornado.access")


class BodyLimit(httputil.HTTPServerConnectionDelegate):
    def __init__(self, app: httputil.HTTPServerConnectionDelegate, limit_kib: int) -> None:
        self.app = app
        self.limit_kib = limit_kib

    def start_request(self, server_conn: object,
                      request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return _Guard(self.app.start_request(server_conn, request_conn), request_conn,
                      self.limit_kib)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)


class _Guard(httputil.HTTPMessageDelegate):
    def __init__(self, inner: httputil.HTTPMessageDelegate, conn: httputil.HTTPConnection,
                 limit_kib: int) -> None:
        self.inner, self.conn, self.limit_kib = inner, conn, limit_kib

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> Any:
        length = headers.get("Content-Length", "").strip()
        if length.isdigit() and int(length) > self.limit_kib * 1024:
            self._refuse(start_line)
            return None
        return self.inner.headers_received(start_line, headers)

    def _refuse(self, start_line: Any) -> None:
        body = json.dumps(errors.too_large(self.limit_kib).to_dict(),
                          separators=(",", ":")).encode()
        head = (b"HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json; "
                b"charset=utf-8\r\nCache-Control: no-store\r\nConnection: close\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        stream = self.conn.detach()  # type: ignore[attr-defined]
        # The path only: a refused request's query may hold a token.
        access_log.warning("413 %s %s (body over %d KiB)", getattr(start_line, "method", "?"),
                           getattr(start_line, "path", "?").split("?", 1)[0], self.limit_kib)
        def written(future: Any) -> None:
            if not future.cancelled():
                future.exception()  # a client that left meanwhile: nothing to tell
            stream.close()

        stream.write(head + body).add_done_callback(written)

    def data_received(self, chunk: bytes) -> Any:
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.inner.finish()

    def on_connection_close(self) -> None:
        self.inner.on_connection_close()
