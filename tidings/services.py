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
from .channels import Channel, build_channels, close_channels
from .config import Secret, Settings
from .dashboard import Dashboard
from .db import Database
from .delivery_store import DeliveryStore
from .orchestrator import Orchestrator
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
    channels: dict[str, Channel]
    deliveries: DeliveryStore
    orchestrator: Orchestrator
    started_at: float = field(default_factory=time.time)

    @classmethod
    async def open(cls, settings: Settings) -> Services:
        # Settings that cannot work stop the start before anything is opened.
        verifier = TokenVerifier(settings)
        channels = build_channels(settings)
        db = await Database.open(settings.db, settings.synchronous)
        store = SQLiteStore(db)
        registry = Registry()
        broker = InProcessBroker()
        broadcaster = Broadcaster(store, registry, broker, settings.heartbeat)
        await broadcaster.start()
        deliveries = DeliveryStore(db)
        dashboard = Dashboard(broadcaster, deliveries)
        dashboard.start()
        orchestrator = Orchestrator(deliveries, channels, registry)
        broadcaster.on_activity.append(orchestrator.notification_created)
        await orchestrator.start()
        return cls(settings, db, store, registry, broker, broadcaster, verifier, dashboard,
                   channels, deliveries, orchestrator)

    async def close(self) -> None:
        await self.dashboard.stop()
        await self.broadcaster.stop()
        await self.orchestrator.stop()
        await close_channels(self.channels)
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
