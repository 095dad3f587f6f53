"""The subscriber: one user's stream over WebSocket or SSE, reconnecting and resuming.

The cursor is the largest notification or event id seen; every (re)connection asks for what
came after it (``since``), and a notification whose id is not above the last one given to the
caller is dropped, so a replay that overlaps what was already given never repeats it."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from . import errors
from .models import Event, Notification

if TYPE_CHECKING:
    from .client import AsyncTidings

TRANSPORTS = ("auto", "websocket", "sse")
WS_PATH = "/ws/notifications"
SSE_PATH = "/api/notifications/stream"
OPEN_TIMEOUT = 10.0


class _Dropped(Exception):
    """The connection failed or ended: try again after a backoff."""


class _Blocked(Exception):
    """The WebSocket cannot get through (refused upgrade, a proxy in the way): use SSE."""


def _fatal(error: errors.TidingsError) -> bool:
    """Errors no retry can fix: a refused token, a wrong tenant, a bad request."""
    return isinstance(error, errors.Unauthorized | errors.Forbidden | errors.BadRequest) \
        and bool(error.code)


class Subscription:
    def __init__(self, client: AsyncTidings, since: int | None, *, transport: str = "auto",
                 events: bool = False, backoff: float = 0.5, max_backoff: float = 30.0,
                 idle_timeout: float = 90.0) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport: one of {', '.join(TRANSPORTS)}")
        self.client = client
        self.cursor = since  # resume after this (largest notification or event id seen)
        self.last = since  # the last notification id given to the caller
        self.mode = transport
        self.use_sse = transport == "sse"
        self.all_events = events
        self.backoff, self.max_backoff = backoff, max_backoff
        self.idle_timeout = idle_timeout
        self.attempt = 0

    # --- the loop ---------------------------------------------------------------------
    async def events(self) -> AsyncIterator[Event]:
        while True:
            wait = 0.0
            try:
                stream = self._sse() if self.use_sse else self._websocket()
                async for event in stream:
                    yield event
                wait = self._next_delay()  # the server ended it (shutdown): come back
            except _Blocked:
                if self.mode != "auto":
                    wait = self._next_delay()
                else:
                    self.use_sse = True  # at once: this is not the server being down
            except errors.RateLimited as e:
                wait = max(e.retry_after or 0.0, self._next_delay())
            except errors.TidingsError as e:
                if _fatal(e):
                    raise
                wait = self._next_delay()
            except (_Dropped, httpx.TransportError, OSError, TimeoutError, ConnectionClosed):
                wait = self._next_delay()
            if wait:
                await asyncio.sleep(wait)

    def _next_delay(self) -> float:
        """Full jitter: a random wait up to backoff * 2^attempt, capped."""
        ceiling = min(self.max_backoff, self.backoff * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return random.uniform(0, ceiling)

    # --- what both transports share ---------------------------------------------------
    async def _credentials(self) -> tuple[dict[str, str], dict[str, str]]:
        """(query, headers) that authenticate a stream: a one-use ticket where the server
        offers them, else the token in the Authorization header (never in the URL)."""
        params: dict[str, str] = {}
        if self.client.tenant:
            params["tenant_id"] = self.client.tenant
        if self.cursor is not None:
            params["since"] = str(self.cursor)
        response = await self.client._http.post("/api/tickets")
        if response.status_code in (404, 405):  # a server without tickets
            return params, {"Authorization": f"Bearer {self.client.token}"}
        if response.status_code >= 400:
            raise errors.from_response(response.status_code, response.content,
                                       response.headers)
        return {**params, "ticket": response.json()["ticket"]}, {}

    def _handle(self, message: dict[str, Any], transport: str) -> Event | None:
        """Updates the cursor; returns the event to give the caller, if any."""
        kind = message.get("type", "")
        if kind == "notification":
            notification = Notification.from_json(message["notification"])
            if self.last is not None and notification.id <= self.last:
                return None  # already given: an overlapping replay
            self.last = notification.id
            self.cursor = max(self.cursor or 0, notification.id)
            return Event(kind, message["notification"], transport, notification)
        if kind == "connected":
            self.attempt = 0
            if self.cursor is None and isinstance(message.get("last_id"), int):
                self.cursor = self.last = message["last_id"]  # a fresh start resumes from here
        elif kind == "notification_deleted" and isinstance(message.get("event_id"), int):
            self.cursor = max(self.cursor or 0, message["event_id"])
        elif kind == "reset" and message.get("reason") == "cursor_unknown":
            self.cursor = self.last = None  # the server has nothing after it: go on live
        return Event(kind, message, transport) if self.all_events else None

    # --- WebSocket --------------------------------------------------------------------
    async def _websocket(self) -> AsyncIterator[Event]:
        params, headers = await self._credentials()
        base = self.client.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        url = f"{base}{WS_PATH}?{urlencode(params)}"
        try:
            ws = await connect(url, additional_headers=headers, open_timeout=OPEN_TIMEOUT,
                               user_agent_header="tidings-client", max_size=2 ** 22)
        except InvalidStatus as e:
            error = errors.from_response(e.response.status_code, e.response.body or b"",
                                         e.response.headers)
            if error.code and (error.status < 500 and error.status != 404):
                raise error from None  # tidings said no: not a proxy in the way
            if error.status >= 500:
                raise _Dropped() from None
            raise _Blocked() from None
        except InvalidHandshake:
            raise _Blocked() from None
        connected = False
        try:
            async with ws:
                async for raw in ws:
                    message = json.loads(raw)
                    connected = connected or message.get("type") == "connected"
                    event = self._handle(message, "websocket")
                    if event is not None:
                        yield event
        except ConnectionClosed:
            pass
        if not connected:
            raise _Blocked()  # accepted, then cut before a word: something in the way
        raise _Dropped()

    # --- SSE --------------------------------------------------------------------------
    async def _sse(self) -> AsyncIterator[Event]:
        params, headers = await self._credentials()
        timeout = httpx.Timeout(OPEN_TIMEOUT, read=self.idle_timeout)
        async with httpx.AsyncClient(base_url=self.client.url, timeout=timeout,
                                     headers={"User-Agent": "tidings-client"}) as http, \
                aconnect_sse(http, "GET", SSE_PATH, params=params, headers=headers) as source:
            response = source.response
            if response.status_code != 200:
                await response.aread()
                raise errors.from_response(response.status_code, response.content,
                                           response.headers)
            async for sse in source.aiter_sse():
                if sse.event == "heartbeat" or not sse.data:
                    continue  # a heartbeat, or the `retry:` advice alone
                data = json.loads(sse.data) if sse.data else {}
                if sse.event == "notification":
                    message = {"type": "notification", "notification": data}
                elif sse.event == "stats_update":
                    message = {"type": "stats_update", "stats": data}
                else:
                    message = {**data, "type": sse.event}
                event = self._handle(message, "sse")
                if event is not None:
                    yield event
        raise _Dropped()
