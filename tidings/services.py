"""Builds the domain's services once, at start; handlers receive them, never import them."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from .auth import TokenVerifier
from .broadcaster import Broadcaster
from .broker import Broker, InProcessBroker
from .config import Secret, Settings
from .dashboard import Dashboard
from .db import Database
from .registry import Registry
from .store import SQLiteStore

log = logging.getLogger("tidings")


@dataclass
class Services:
    settings: Settings
    db: Database
    store: SQLiteStore
    registry: Registry
    broker: Broker
    broadcaster: Broadcaster
    verifier: TokenVerifier
    dashboard: Dashboard
    started_at: float = field(default_factory=time.time)

    @classmethod
    async def open(cls, settings: Settings) -> Services:
        verifier = TokenVerifier(settings)  # fails before the database is touched
        db = await Database.open(settings.db, settings.synchronous)
        store = SQLiteStore(db)
        registry = Registry()
        broker = InProcessBroker()
        broadcaster = Broadcaster(store, registry, broker, settings.heartbeat)
        broadcaster.start()
        dashboard = Dashboard(broadcaster)
        dashboard.start()
        return cls(settings, db, store, registry, broker, broadcaster, verifier, dashboard)

    async def close(self) -> None:
        await self.dashboard.stop()
        await self.broadcaster.stop()
        await self.broker.close()
        await self.db.close()


def kept_secret(settings: Settings, name: str, nbytes: int = 32) -> Secret:
    """A random secret made once and kept beside the database (mode 0600), so that restarts
    and the `token` command agree on it."""
    path = Path(settings.db).parent / name
    if path.exists():
        return Secret(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    path.touch(mode=0o600)
    path.write_text(value + "\n")
    log.info("made a new secret in %s", path)
    return Secret(value)
