"""Who is connected: tenant -> user -> connections, with counters kept current on every change.

A unicast finds a user's connections by two dictionary look-ups; a broadcast touches only its
tenant; statistics at every level are counters read in O(1), never a scan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from .connections import SSE, WEBSOCKET, Connection

Listener = Callable[[str], None]
UserChange = Callable[[str, str], None]


class Registry:
    def __init__(self) -> None:
        self._tenants: dict[str, dict[str, set[Connection]]] = {}
        self._by_transport: Counter[str] = Counter()
        self._tenant_by_transport: dict[str, Counter[str]] = {}
        self._listeners: list[Listener] = []
        self.on_user_change: UserChange | None = None  # presence mirrors it elsewhere

    def add(self, conn: Connection) -> None:
        users = self._tenants.setdefault(conn.tenant_id, {})
        users.setdefault(conn.user_id, set()).add(conn)
        self._by_transport[conn.transport] += 1
        self._tenant_by_transport.setdefault(conn.tenant_id, Counter())[conn.transport] += 1
        self._changed(conn.tenant_id, conn.user_id)

    def remove(self, conn: Connection) -> None:
        users = self._tenants.get(conn.tenant_id, {})
        connections = users.get(conn.user_id)
        if not connections or conn not in connections:
            return
        connections.discard(conn)
        if not connections:
            del users[conn.user_id]
        self._by_transport[conn.transport] -= 1
        self._tenant_by_transport[conn.tenant_id][conn.transport] -= 1
        if not users:
            del self._tenants[conn.tenant_id]
            del self._tenant_by_transport[conn.tenant_id]
        self._changed(conn.tenant_id, conn.user_id)

    def user(self, tenant_id: str, user_id: str) -> set[Connection]:
        users = self._tenants.get(tenant_id)
        return users.get(user_id, set()) if users else set()

    def tenant(self, tenant_id: str) -> Iterator[Connection]:
        for connections in self._tenants.get(tenant_id, {}).values():
            yield from connections

    def all(self) -> Iterator[Connection]:
        for users in self._tenants.values():
            for connections in users.values():
                yield from connections

    def tenants(self) -> list[str]:
        return list(self._tenants)

    def is_online(self, tenant_id: str, user_id: str) -> bool:
        return bool(self.user(tenant_id, user_id))

    # --- counters ----------------------------------------------------------------------
    def stats(self, tenant_id: str | None = None, user_id: str | None = None) -> dict[str, int]:
        """Connection counts globally, for a tenant, or for one user of a tenant."""
        if tenant_id is None:
            counts = self._by_transport
            users = sum(len(u) for u in self._tenants.values())
        elif user_id is None:
            counts = self._tenant_by_transport.get(tenant_id, Counter())
            users = len(self._tenants.get(tenant_id, {}))
        else:
            mine = self.user(tenant_id, user_id)
            if not mine:  # most recipients of most creates: no connection here
                return {WEBSOCKET: 0, SSE: 0, "total": 0, "users_online": 0}
            counts = Counter(c.transport for c in mine)  # a handful per user at most
            users = 1
        ws, sse = counts[WEBSOCKET], counts[SSE]
        return {WEBSOCKET: ws, SSE: sse, "total": ws + sse, "users_online": users}

    # --- change listeners (the dashboard) ----------------------------------------------
    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unlisten(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def has_tenant(self, tenant_id: str) -> bool:
        return tenant_id in self._tenants

    def _changed(self, tenant_id: str, user_id: str) -> None:
        if self.on_user_change is not None:
            self.on_user_change(tenant_id, user_id)
        for listener in list(self._listeners):
            listener(tenant_id)

