"""REST clients: ``Tidings`` (blocking) and ``AsyncTidings`` (asyncio), one method per call.

Each call is described once (method, path, body, how to read the answer) in ``_Calls``; the
two clients differ only in how they send it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from . import errors
from .models import Created, Delivery, Event, Inbox, Notification, Stats, Template, Webhook

DEFAULT_TIMEOUT = 10.0


@dataclass
class _Call:
    method: str
    path: str
    read: Callable[[httpx.Response], Any]
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _json(response: httpx.Response) -> Any:
    return response.json()


def _none(_response: httpx.Response) -> None:
    return None


def _seg(value: str) -> str:
    return quote(str(value), safe="")


def check(response: httpx.Response) -> httpx.Response:
    """Raises the TidingsError subclass of an error answer."""
    if response.status_code >= 400:
        raise errors.from_response(response.status_code, response.content, response.headers)
    return response


class _Calls:
    """What each call sends and how its answer is read; ``_send`` is the client's."""

    def _send(self, call: _Call) -> Any:
        raise NotImplementedError

    # --- notifications --------------------------------------------------------------
    def notify(self, title: str, *, user_id: str | None = None,
               user_ids: list[str] | None = None, broadcast: bool = False,
               message: str | None = None, type: str | None = None,
               priority: str | None = None, data: dict[str, Any] | None = None,
               channels: list[str] | None = None, idempotency_key: str | None = None,
               **more: Any) -> Created:
        """Creates one notification (``user_id``), one per user (``user_ids``) or a
        tenant-wide one (``broadcast=True``). Keyword arguments the server knows beyond these
        (``key``, ``group``, ``actions``, ``ttl``…) pass through as they are."""
        body: dict[str, Any] = {"title": title, **more}
        for name, value in (("user_id", user_id), ("user_ids", user_ids),
                            ("message", message), ("type", type), ("priority", priority),
                            ("data", data), ("channels", channels)):
            if value is not None:
                body[name] = value
        if broadcast:
            body["broadcast"] = True
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}

        def read(response: httpx.Response) -> Created:
            return Created.from_json(response.json(),
                                     response.headers.get("Idempotent-Replayed") == "true")
        return self._send(_Call("POST", "/api/notifications", read, json=body, headers=headers))

    def broadcast(self, title: str, **kwargs: Any) -> Created:
        return self.notify(title, broadcast=True, **kwargs)

    def inbox(self, *, unread: bool = False, limit: int | None = None,
              before: int | None = None) -> Inbox:
        params: dict[str, Any] = {}
        if unread:
            params["unread"] = "true"
        if limit is not None:
            params["limit"] = limit
        if before is not None:
            params["before"] = before
        return self._send(_Call("GET", "/api/notifications", lambda r: Inbox.from_json(r.json()),
                                params=params))

    def read(self, notification_id: int) -> Stats:
        return self._send(_Call("POST", f"/api/notifications/{int(notification_id)}/read",
                                lambda r: Stats.from_json(r.json()["stats"])))

    def read_all(self) -> Stats:
        return self._send(_Call("POST", "/api/notifications/read-all",
                                lambda r: Stats.from_json(r.json()["stats"])))

    def delete(self, notification_id: int) -> None:
        return self._send(_Call("DELETE", f"/api/notifications/{int(notification_id)}", _none))

    def stats(self) -> Stats:
        return self._send(_Call("GET", "/api/notifications/stats",
                                lambda r: Stats.from_json(r.json())))

    def connections(self) -> dict[str, Any]:
        return self._send(_Call("GET", "/api/notifications/connections", _json))

    def deliveries(self, notification_id: int) -> list[Delivery]:
        return self._send(_Call(
            "GET", f"/api/notifications/{int(notification_id)}/deliveries",
            lambda r: [Delivery.from_json(d) for d in r.json()["deliveries"]]))

    # --- recipients and preferences ---------------------------------------------------
    def preferences(self, *, tenant_default: bool = False) -> dict[str, Any]:
        params = {"tenant_default": "true"} if tenant_default else {}
        return self._send(_Call("GET", "/api/preferences", _json, params=params))

    def put_preferences(self, preferences: dict[str, Any], *,
                        tenant_default: bool = False) -> dict[str, Any]:
        params = {"tenant_default": "true"} if tenant_default else {}
        return self._send(_Call("PUT", "/api/preferences", _json, params=params,
                                json=preferences))

    def user(self, user_id: str) -> dict[str, Any]:
        return self._send(_Call("GET", f"/api/users/{_seg(user_id)}", _json))

    def put_user(self, user_id: str, *, email: str | None = None, phone: str | None = None,
                 timezone: str | None = None, locale: str | None = None) -> dict[str, Any]:
        body = {k: v for k, v in (("email", email), ("phone", phone), ("timezone", timezone),
                                  ("locale", locale)) if v is not None}
        return self._send(_Call("PUT", f"/api/users/{_seg(user_id)}", _json, json=body))

    # --- webhook and templates (admin) ------------------------------------------------
    def webhook(self) -> Webhook:
        return self._send(_Call("GET", "/api/webhook", lambda r: Webhook.from_json(r.json())))

    def put_webhook(self, url: str) -> Webhook:
        return self._send(_Call("PUT", "/api/webhook", lambda r: Webhook.from_json(r.json()),
                                json={"url": url}))

    def delete_webhook(self) -> None:
        return self._send(_Call("DELETE", "/api/webhook", _none))

    def template(self, type: str, channel: str) -> Template:
        return self._send(_Call("GET", f"/api/templates/{_seg(type)}/{_seg(channel)}",
                                lambda r: Template.from_json(r.json())))

    def put_template(self, type: str, channel: str, *, subject: str = "", text: str = "",
                     html: str = "") -> Template:
        return self._send(_Call("PUT", f"/api/templates/{_seg(type)}/{_seg(channel)}",
                                lambda r: Template.from_json(r.json()),
                                json={"subject": subject, "text": text, "html": html}))

    def delete_template(self, type: str, channel: str) -> None:
        return self._send(_Call("DELETE", f"/api/templates/{_seg(type)}/{_seg(channel)}", _none))


def _settings(url: str | None, token: str | None) -> tuple[str, str]:
    url = url or os.environ.get("TIDINGS_URL") or "http://127.0.0.1:8888"
    token = token or os.environ.get("TIDINGS_TOKEN")
    if not token:
        raise ValueError("no token: pass token= or set TIDINGS_TOKEN")
    return url.rstrip("/"), token


def _headers(token: str, tenant: str | None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "User-Agent": "tidings-client"}
    if tenant:
        headers["X-Tenant-ID"] = tenant
    return headers


class Tidings(_Calls):
    """The blocking client. ``url`` and ``token`` default to $TIDINGS_URL and $TIDINGS_TOKEN;
    ``tenant``, when given, must be the token's (the server checks)."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 tenant: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url, self.token = _settings(url, token)
        self.tenant = tenant
        self._http = httpx.Client(base_url=self.url, headers=_headers(self.token, tenant),
                                  timeout=timeout, transport=transport)

    def _send(self, call: _Call) -> Any:
        try:
            response = self._http.request(call.method, call.path, params=call.params,
                                          json=call.json, headers=call.headers)
        except httpx.TransportError as e:
            raise errors.Unreachable("unreachable", f"{self.url}: {e}") from e
        return call.read(check(response))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Tidings:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class AsyncTidings(_Calls):
    """The asyncio client: every method of ``Tidings``, awaited, and ``subscribe()``."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 tenant: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url, self.token = _settings(url, token)
        self.tenant = tenant
        self._http = httpx.AsyncClient(base_url=self.url, headers=_headers(self.token, tenant),
                                       timeout=timeout, transport=transport)

    async def _send(self, call: _Call) -> Any:  # type: ignore[override]
        try:
            response = await self._http.request(call.method, call.path, params=call.params,
                                                json=call.json, headers=call.headers)
        except httpx.TransportError as e:
            raise errors.Unreachable("unreachable", f"{self.url}: {e}") from e
        return call.read(check(response))

    def subscribe(self, since: int | None = None, *, transport: str = "auto",
                  events: bool = False, backoff: float = 0.5, max_backoff: float = 30.0,
                  idle_timeout: float = 90.0) -> AsyncIterator[Event]:
        """The user's notifications as they arrive, forever: ``async for event in ...``.

        Reconnects by itself (exponential backoff with full jitter, ``backoff`` doubling up
        to ``max_backoff`` seconds), resumes after the last id it gave so that nothing is
        lost and nothing comes twice, and with ``transport="auto"`` falls back to SSE when
        the WebSocket is refused or blocked. ``since``: start after this id (e.g. the newest
        of an inbox page just read); without it, only what arrives from now on.
        ``events=True`` also yields "connected", "stats_update", "notification_deleted" and
        "reset" events. An Unauthorized or Forbidden answer ends it with that exception."""
        from .subscribe import Subscription
        return Subscription(self, since, transport=transport, events=events, backoff=backoff,
                            max_backoff=max_backoff, idle_timeout=idle_timeout).events()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncTidings:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()


__all__ = ["AsyncTidings", "Created", "Notification", "Tidings"]
