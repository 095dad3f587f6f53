"""What every handler shares: services, the caller's identity, JSON in and out, errors."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any
from urllib.parse import unquote_plus

import tornado.web

from tidings import errors, logs, validation
from tidings.connections import encode
from tidings.errors import TidingsError
from tidings.models import Principal
from tidings.services import Services
from tidings.store import StoreUnavailable

access_log = logging.getLogger("tornado.access")
app_log = logging.getLogger("tidings.http")

SECRET_PARAMS = frozenset({"token", "access_token", "ticket", "once"})

_HTTP_CODES = {400: "bad_request", 401: "invalid_token", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "too_large", 429: "too_many_requests"}


def _secret_name(name: str) -> bool:
    """Judged on the name decoded as often as it decodes (``%2574oken`` too): a log never
    holds what some later decoding would read as a token."""
    for _ in range(4):
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return name.strip().lower() in SECRET_PARAMS


def redact(uri: str) -> str:
    """The URI with secret query parameters replaced, for logs. A parameter is judged by its
    name as Tornado reads it (percent-decoded: ``?%74oken=`` is ``token``), so no spelling
    the server accepts is logged whole. The signed token of an unsubscribe link goes too."""
    path, sep, query = uri.partition("?")
    path = logs.redact_path(path)
    if not sep:
        return path
    pairs = []
    for pair in query.split("&"):
        name, eq, _value = pair.partition("=")
        if _secret_name(name):
            pair = f"{name}{eq}[redacted]"
        pairs.append(pair)
    return f"{path}?{'&'.join(pairs)}"


def without_secrets(uri: str) -> str:
    """The URI without its secret query parameters at all (for a redirect's `next`)."""
    path, sep, query = uri.partition("?")
    kept = [p for p in query.split("&") if p and not _secret_name(p.partition("=")[0])]
    return path + (f"?{'&'.join(kept)}" if kept else "")


def log_request(handler: tornado.web.RequestHandler) -> None:
    """The access log: method, redacted URI, status, client and time; never a token. The
    client is the one a trusted proxy forwarded for, else the peer."""
    status = handler.get_status()
    if status == 101:  # an upgraded WebSocket: its own "opened" and "closed" lines say more
        return
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    request = handler.request
    client = handler.client_ip() if isinstance(handler, ServicesMixin) else request.remote_ip
    access_log.log(level, "%d %s %s (%s) %.1fms", status, request.method, redact(request.uri or ""),
                   client, 1000.0 * request.request_time())


def token_from(request: Any) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    values = request.query_arguments.get("token")
    return values[-1].decode("utf-8", "replace") if values else None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def proxy_networks(cidrs: tuple[str, ...]) -> list[Network]:
    try:
        return [ipaddress.ip_network(c, strict=False) for c in cidrs]
    except ValueError as e:
        raise ValueError(f"--trusted-proxies: {e}") from None


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None


# No inline script anywhere: scripts come from /static; the JSON data blocks are not run.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self' {ws}; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def set_page_headers(handler: tornado.web.RequestHandler) -> None:
    """What every HTML page sends: CSP, nosniff, no referrer, no framing."""
    host = handler.request.host or ""
    handler.set_header("Content-Security-Policy", PAGE_CSP.format(ws=f"ws://{host} wss://{host}"))
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Referrer-Policy", "no-referrer")
    handler.set_header("X-Frame-Options", "DENY")


class ServicesMixin:
    """Stores the services given in the URL table; the only state a handler has."""

    services: Services

    def initialize(self, services: Services) -> None:
        self.services = services

    def authenticate(self) -> Principal:
        """The caller, from its token; the tenant named (header or query) must be the token's."""
        request = self.request  # type: ignore[attr-defined]
        principal = self.services.verifier.verify(token_from(request))
        # Each tenant named must be the token's: a header and a query that disagree are a 403
        # even when one of them matches.
        for named in (*request.headers.get_list("X-Tenant-ID"),
                      *self.get_query_arguments("tenant_id")):  # type: ignore[attr-defined]
            if named != principal.tenant_id:
                raise errors.tenant_mismatch()
        return principal

    def _from_proxy(self) -> bool:
        """Whether the peer is a trusted proxy (its X-Forwarded-* headers are believed)."""
        peer = _ip(self.request.remote_ip or "")  # type: ignore[attr-defined]
        networks = self.settings.get("trusted_proxies") or []  # type: ignore[attr-defined]
        return peer is not None and any(peer in net for net in networks)

    def client_ip(self) -> str:
        """The client's address: the peer, or, behind a trusted proxy, the nearest address in
        X-Forwarded-For that is not itself a trusted proxy."""
        request = self.request  # type: ignore[attr-defined]
        peer = request.remote_ip or ""
        if not self._from_proxy():
            return str(peer)
        networks = self.settings.get("trusted_proxies") or []  # type: ignore[attr-defined]
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        for hop in reversed([h for h in hops if h]):
            ip = _ip(hop)
            if ip is None:
                break
            if not any(ip in net for net in networks):
                return str(ip)
        return str(peer)

    def is_https(self) -> bool:
        request = self.request  # type: ignore[attr-defined]
        if request.protocol == "https":
            return True
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return self._from_proxy() and proto == "https"

    def check_input(self) -> None:
        """Before any handler runs: every query parameter and path part is storable text."""
        request = self.request  # type: ignore[attr-defined]
        for name, values in request.query_arguments.items():
            for raw in values:
                try:
                    value = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise errors.invalid(name, "must be UTF-8") from None
                validation.text(value, name)
        for part in self.path_args:  # type: ignore[attr-defined]
            validation.text(part, "path")
        for header in ("X-Tenant-ID", "Idempotency-Key"):
            validation.query_text(request.headers.get(header), header)

    def check_cursors(self) -> None:
        """The resume cursors a stream accepts, each named when it is wrong."""
        request = self.request  # type: ignore[attr-defined]
        for name in ("since", "last_event_id"):
            validation.cursor(self.get_query_argument(name, None), name)  # type: ignore
        validation.cursor(request.headers.get("Last-Event-ID"), "Last-Event-ID")

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """For every handler: the URI redacted (Tornado's own would log `?token=`)."""
        if isinstance(value, TidingsError | tornado.web.HTTPError):
            return  # an answer to the client, not a server fault; the access log has it
        request = self.request  # type: ignore[attr-defined]
        if isinstance(value, StoreUnavailable):  # answered 503; the cause, without a trace
            app_log.warning("%s %s: %s", request.method, redact(request.uri or ""), value)
            return
        app_log.error("uncaught exception in %s %s", request.method, redact(request.uri or ""),
                      exc_info=(typ, value, tb))


class BaseHandler(ServicesMixin, tornado.web.RequestHandler):
    def prepare(self) -> None:
        self.check_input()

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def check_xsrf_cookie(self) -> None:
        """The API authenticates with bearer tokens, not cookies: XSRF does not apply."""

    def json_body(self) -> dict[str, Any]:
        return validation.json_body(self.request.body)

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(encode(value))

    def allowed_methods(self) -> list[str]:
        """The methods this handler implements, for the Allow header of a 405."""
        base = tornado.web.RequestHandler
        return [m for m in self.SUPPORTED_METHODS if m not in ("HEAD", "OPTIONS")
                and getattr(type(self), m.lower()) is not getattr(base, m.lower())]

    def no_content(self) -> None:
        self.set_status(204)
        self.finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, StoreUnavailable):
            error = errors.store_unavailable()
        if isinstance(error, TidingsError):
            self.set_status(error.status)
            for name, value in error.headers.items():
                self.set_header(name, value)
            body = error.to_dict()
        else:
            if isinstance(error, tornado.web.HTTPError) and error.log_message:
                message = error.log_message % error.args if error.args else error.log_message
            else:
                message = self._reason
            code = _HTTP_CODES.get(status_code, "internal_error" if status_code >= 500 else
                                   "error")
            if status_code == 405:
                self.set_header("Allow", ", ".join(self.allowed_methods()))
            body = {"error": {"code": code, "message": message}}
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(encode(body))


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        raise errors.not_found(f"route {self.request.path}")
