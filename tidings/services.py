"""Builds the domain's services once, at start; handlers receive them, never import them.

Only here are implementations chosen, from the settings: SQLite or PostgreSQL behind the
store seams, in-process or Redis behind the broker and presence seams.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from .activity import Activity
from .auth import TokenVerifier
from .bounces import SesEvents
from .channels import Channel, build_channels, close_channels
from .config import Secret, Settings
from .dashboard import Dashboard
from .expiry import Expiry
from .fanout import Broker
from .fanout.local import LocalBroker
from .hub import Hub
from .inapp import InAppChoices
from .metrics import Metrics
from .orchestrator import Orchestrator
from .outbound import OutboundPolicy
from .presence import Presence
from .presence.local import LocalPresence
from .publisher import Publisher
from .receipts import Receipts
from .registry import Registry
from .retention import Retention
from .scheduler import Scheduler
from .sns import SnsVerifier
from .store import DeliveryQueue, Directory, Store, is_postgres, open_backend
from .tickets import LocalTickets, Tickets
from .unsubscribe import UnsubscribeLinks

log = logging.getLogger("tidings")


@dataclass
class Services:
    settings: Settings
    store: Store
    directory: Directory
    queue: DeliveryQueue
    registry: Registry
    broker: Broker
    presence: Presence
    hub: Hub
    publisher: Publisher
    activity: Activity
    verifier: TokenVerifier
    dashboard: Dashboard
    channels: dict[str, Channel]
    orchestrator: Orchestrator
    metrics: Metrics
    receipts: Receipts
    tickets: Tickets
    links: UnsubscribeLinks
    ses_events: SesEvents
    retention: Retention
    scheduler: Scheduler
    expiry: Expiry

    @classmethod
    async def open(cls, settings: Settings) -> Services:
        # Settings that cannot work stop the start before anything is opened.
        verifier = TokenVerifier(settings)
        channels = build_channels(settings)
        links = UnsubscribeLinks(_link_secret(settings), settings.public_url)
        backend = await open_backend(settings.db, settings.synchronous)
        registry = Registry()
        broker, presence = _fanout(settings, registry)
        registry.on_user_change = presence.changed
        await presence.start()
        activity = Activity()
        metrics = Metrics(activity, presence, channels)
        receipts = Receipts(backend.receipts)
        receipts.start()
        hub = Hub(backend.store, registry, broker, presence, metrics, receipts,
                  settings.heartbeat, InAppChoices(backend.directory))
        await hub.start()
        publisher = Publisher(backend.store, hub, broker, presence, activity, metrics)
        await publisher.start()
        dashboard = Dashboard(activity, presence, registry, backend.store, backend.queue,
                              receipts)
        dashboard.start()
        orchestrator = Orchestrator(backend.store, backend.directory, backend.queue, channels,
                                    presence, metrics, receipts, links=links)
        activity.listeners.append(orchestrator.notification_created)
        await orchestrator.start()
        retention = Retention(backend.store, settings.housekeeping_interval)
        retention.start()
        scheduler = Scheduler(backend.schedule, publisher)
        scheduler.start()
        expiry = Expiry(backend.store, publisher.publish_removals, settings.housekeeping_interval)
        expiry.start()
        return cls(settings, backend.store, backend.directory, backend.queue, registry, broker,
                   presence, hub, publisher, activity, verifier, dashboard, channels,
                   orchestrator, metrics, receipts, _tickets(settings), links,
                   SesEvents(SnsVerifier(OutboundPolicy.from_settings(settings),
                                         settings.sns_host),
                             backend.directory, backend.queue),
                   retention, scheduler, expiry)

    async def health(self) -> dict[str, str]:
        """What does not answer or has stopped: empty when all is well."""
        problems: dict[str, str] = {}
        if not await self.store.ping():
            problems["store"] = "does not answer"
        elif self.publisher.store_failing():
            problems["store"] = "creates are failing"
        if not self.broker.healthy():
            problems["broker"] = "does not answer"
        if not self.presence.healthy():
            problems["presence"] = "does not answer"
        if not (self.publisher.running() and self.orchestrator.running()
                and self.receipts.running() and self.retention.running()
                and self.scheduler.running() and self.expiry.running()):
            problems["background"] = "a background task has stopped"
        return problems

    async def close(self) -> None:
        await self.scheduler.stop()  # before the publisher: a send under way finishes there
        await self.expiry.stop()
        await self.retention.stop()
        await self.dashboard.stop()
        await self.publisher.stop()
        await self.orchestrator.stop()
        await self.hub.stop()
        await self.receipts.stop()
        await close_channels(self.channels)
        await self.ses_events.aclose()
        await self.presence.close()
        await self.tickets.close()
        await self.broker.close()
        await self.store.close()


def _fanout(settings: Settings, registry: Registry) -> tuple[Broker, Presence]:
    if not settings.redis_url:
        return LocalBroker(), LocalPresence(registry)
    from .fanout.redis import RedisBroker
    from .presence.redis import RedisPresence
    return RedisBroker(settings.redis_url), RedisPresence(settings.redis_url, registry)


def _tickets(settings: Settings) -> Tickets:
    if not settings.redis_url:
        return LocalTickets()
    from .tickets import RedisTickets
    return RedisTickets(settings.redis_url)
def _link_secret(settings: Settings) -> str:
    """What signs the links in emails: the JWT secret (every process has the same), else the
    cookie secret (with --jwt-public-key; give every process the same --cookie-secret)."""
    secret = settings.jwt_secret or settings.cookie_secret
    if not secret:
        log.warning("no --jwt-secret nor --cookie-secret: the unsubscribe links in emails "
                    "work only until this process stops")
        return secrets.token_urlsafe(32)
    return str(secret)


def data_dir(settings: Settings) -> Path:
    """Where kept secrets live: beside the SQLite file, or `data/` with PostgreSQL."""
    return Path("data") if is_postgres(settings.db) else Path(settings.db).parent


def kept_secret(settings: Settings, name: str, nbytes: int = 32) -> Secret:
    """A random secret made once and kept beside the database (mode 0600), so that restarts
    and the `token` command agree on it."""
    path = data_dir(settings) / name
    if path.exists():
        return Secret(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    path.touch(mode=0o600)
    path.write_text(value + "\n")
    log.info("made a new secret in %s", path)
    return Secret(value)
