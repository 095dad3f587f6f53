"""Email, SMS, push and webhooks after the live push: plan delivery rows, then send them.

The planner turns each new notification into one delivery row per (recipient, channel,
address) as the preferences say: queued, held (quiet hours, digest) or skipped (with why).
It reads the notifications from the database after a cursor that moves in the same
transaction as the rows, so a crash never loses or doubles a plan. The worker sends what is
due, retries temporary failures with exponential backoff and jitter, and survives a restart.
The real-time core never waits for any of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import preferences as prefs
from . import suppressions
from .channels import (
    Channel,
    DeliveryError,
    MessageTemplate,
    PushSubscription,
    Recipient,
    SubscriptionGone,
    WebhookTarget,
    render,
    render_digest,
)
from .metrics import Metrics
from .presence import Presence
from .receipts import Receipts
from .store import DUE, Delivery, DeliveryQueue, Directory, Planned, Store, StoreUnavailable
from .store.protocol import gone
from .unsubscribe import ALL_TYPES, UnsubscribeLinks, Unsubscription

log = logging.getLogger("tidings.deliveries")

ADDRESSED = ("email", "sms", "push")   # per user; the webhook is per tenant
MAX_ATTEMPTS = 10                       # 2 s, 4 s ... 5 min apart: about 13 min in all
BACKOFF_BASE = 2.0                      # seconds before the 2nd attempt; doubles each time
BACKOFF_CAP = 300.0
CONCURRENT_SENDS = 8
SENDS_PER_TENANT = 2                    # one tenant's slow receiver cannot hold up the rest
IDLE_WAKE = 60.0                        # look again at least this often
PLAN_BATCH = 500                        # notifications planned per read
PLAN_AFTER = 0.01                       # seconds a wake waits for more creates to plan
LOOP_BACKOFF = (1.0, 30.0)              # a loop that failed waits, doubling, then goes on
STOP_GRACE = 3.0                        # seconds a stop waits for sends under way
TURNED_OFF = "turned off in the user's preferences"
_MISSING = {"email": "no email address", "sms": "no phone number",
            "push": "no push subscription"}


@dataclass(frozen=True)
class TenantView:
    """What planning needs of a tenant, read once per batch of notifications."""

    defaults: dict[str, Any]
    has_webhook: bool


class Orchestrator:
    def __init__(self, store: Store, directory: Directory, queue: DeliveryQueue,
                 channels: dict[str, Channel], presence: Presence, metrics: Metrics,
                 receipts: Receipts, clock: Callable[[], float] = time.time,
                 links: UnsubscribeLinks | None = None) -> None:
        self.notifications = store
        self.metrics = metrics
        self.receipts = receipts
        self.directory = directory
        self.queue = queue
        self.channels = channels
        self.presence = presence
        self.clock = clock
        self.links = links  # List-Unsubscribe on every email, when given
        self.backoff_base = BACKOFF_BASE
        self.max_attempts = MAX_ATTEMPTS
        self._plan_wanted = asyncio.Event()
        self._send_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: dict[asyncio.Task[None], list[Delivery]] = {}

    async def start(self) -> None:
        self._plan_wanted.set()  # catch up with notifications created while we were down
        self._tasks = [asyncio.create_task(self._forever(self._plan_loop), name="tidings-planner"),
                       asyncio.create_task(self._forever(self._send_loop), name="tidings-sender")]

    def running(self) -> bool:
        return all(not t.done() for t in self._tasks)

    async def _forever(self, loop: Callable[[], Any]) -> None:
        """Runs a loop again after any error (a locked or full database, a bug), with backoff:
        channels must never stop for good."""
        delay = LOOP_BACKOFF[0]
        while True:
            try:
                await loop()
            except StoreUnavailable as e:
                log.warning("%s: the store does not answer (%s); again in %.0fs",
                            loop.__name__.strip("_"), e, delay)
            except Exception:
                log.exception("%s failed; again in %.0fs", loop.__name__.strip("_"), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, LOOP_BACKOFF[1])

    async def stop(self, grace: float = STOP_GRACE) -> None:
        for task in self._tasks:  # no new plans or claims
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        # A send under way may already be with the provider: let it finish and be recorded,
        # else it would be sent again after the restart. What is still running is cut off
        # and given back to the queue, due at once (for this process's next start or another).
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=grace)
        cut_off = [group for task, group in self._in_flight.items() if not task.done()]
        for task in self._in_flight:
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        if cut_off:
            try:
                await self.queue.release([d for group in cut_off for d in group])
            except StoreUnavailable:
                log.warning("%d cut-off deliveries wait for their lease to run out",
                            len(cut_off))

    def notification_created(self, _tenant_id: str = "") -> None:
        self._plan_wanted.set()

    def wake(self) -> None:
        """Looks for due deliveries now (after a clock change, a new subscription, ...)."""
        self._send_wanted.set()

    # --- planning ----------------------------------------------------------------------
    async def _plan_loop(self) -> None:
        while True:
            await self._plan_wanted.wait()
            # A moment for the creates right behind this one: under a stream of them, one
            # pass plans many commits' notifications, not each commit's on its own.
            await asyncio.sleep(PLAN_AFTER)
            self._plan_wanted.clear()
            while True:
                cursor = await self.queue.planned_through()
                batch = await self.notifications.unplanned(cursor, PLAN_BATCH)
                if not batch:
                    break
                planned: list[Planned] = []
                tenants: dict[str, TenantView] = {}  # looked up once per batch
                for notification in batch:
                    try:
                        tenant = notification["tenant_id"]
                        if tenant not in tenants:
                            tenants[tenant] = await self._tenant_view(tenant)
                        planned += _unsent(await self.plan(notification, tenants[tenant]),
                                           gone(notification.get("removed"),
                                                notification.get("expires_at"), self.clock()))
                    except Exception:
                        log.exception("planning deliveries of notification %d failed",
                                      notification["id"])
                # Another process may have planned these meanwhile: then nothing is written.
                if await self.queue.add_planned(planned, cursor, batch[-1]["id"]) and planned:
                    for row in planned:
                        if row.status == "skipped":  # decided at planning: an outcome too
                            self.metrics.delivered(row.channel, row.status)
                    self.wake()
                if len(batch) < PLAN_BATCH and not self._plan_wanted.is_set():
                    # All there was when it was read; a create since sets _plan_wanted. No
                    # second look to find nothing (two reads per wake under a stream of creates).
                    break

    async def _tenant_view(self, tenant: str) -> TenantView:
        return TenantView(await self.directory.preferences(tenant, ""),
                          bool(await self.directory.webhook(tenant)))

    async def plan(self, n: dict[str, Any], view: TenantView) -> list[Planned]:
        tenant, type_, urgent = n["tenant_id"], n["type"], n["priority"] == "urgent"
        wanted = set(n["channels"]) if n.get("channels") is not None else None
        addressed = [c for c in ADDRESSED if c in self.channels and (wanted is None or c in wanted)]
        hook = view.has_webhook and "webhook" in self.channels and (wanted is None or
                                                                     "webhook" in wanted)
        if not addressed and not hook:
            return []  # nothing could deliver it: no look-ups per user
        defaults = view.defaults
        users = [] if not addressed else \
            [n["user_id"]] if n["user_id"] else await self.directory.known_users(tenant)
        now = self.clock()
        planned: list[Planned] = []
        for user in users:
            own = await self.directory.preferences(tenant, user)
            merged = prefs.merge(defaults, own)
            profile = await self.directory.recipient(tenant, user) or {}
            for channel in addressed:
                value = prefs.channel_value(merged, type_, channel)
                if value is False:
                    # The user's own opt-out (an unsubscribe link, say) shows as a skip where
                    # there was an address to send to; a default that is off plans nothing.
                    if prefs.turned_off(own, type_, channel) and \
                            await self._targets(tenant, user, channel, profile):
                        planned.append(Planned(n["id"], tenant, user, channel, "skipped",
                                               last_error=TURNED_OFF))
                    continue
                row = {"notification_id": n["id"], "tenant_id": tenant, "user_id": user,
                       "channel": channel, "only_offline": value == "offline",
                       "unless_acknowledged": value == "unacknowledged"}
                online = value in ("offline", "unacknowledged") and \
                    await self.presence.is_online(tenant, user)
                if value == "offline" and online:
                    planned.append(Planned(**row, status="skipped",
                                           last_error="user was online"))
                    continue
                targets = await self._targets(tenant, user, channel, profile)
                if not targets:
                    planned.append(Planned(**row, status="skipped",
                                           last_error=_MISSING[channel]))
                    continue
                digest = merged["digest"] if channel == "email" and not urgent and \
                    merged["digest"] != "off" else None
                due = prefs.digest_due(digest, profile.get("timezone"), now) if digest else None
                # A user with a live connection has escalate_after seconds to acknowledge it;
                # one with none gets it at once.
                escalate = now + merged["escalate_after"] if value == "unacknowledged" and \
                    online else None
                # Quiet hours apply when it would go: now, when the digest period ends, or when
                # the wait for an acknowledgement does.
                quiet = None if urgent else prefs.quiet_until(
                    merged["quiet_hours"], profile.get("timezone"), due or escalate or now)
                for target in targets:
                    if due or quiet or escalate:
                        planned.append(Planned(**row, target=target, status="held",
                                               digest=digest, next_attempt_at=max(
                                                   due or 0, quiet or 0, escalate or 0)))
                    else:
                        planned.append(Planned(**row, target=target, status="queued",
                                               next_attempt_at=now))
        if hook:
            merged = prefs.merge(defaults, await self.directory.preferences(tenant, n["user_id"])
                                 if n["user_id"] else {})
            value = prefs.channel_value(merged, type_, "webhook")
            # "offline" and "unacknowledged" look at the notification's user; a broadcast has
            # no one user, so for it they send as true does.
            user = n["user_id"]
            online = user is not None and value in ("offline", "unacknowledged") and \
                await self.presence.is_online(tenant, user)
            if value == "offline" and online:
                planned.append(Planned(n["id"], tenant, user, "webhook", "skipped",
                                       last_error="user was online", only_offline=True))
            elif value is not False:
                # A direct notification's webhook may wait for its user's acknowledgement.
                wait = value == "unacknowledged" and online
                planned.append(Planned(
                    n["id"], tenant, user, "webhook", "held" if wait else "queued",
                    next_attempt_at=now + merged["escalate_after"] if wait else now,
                    only_offline=value == "offline" and user is not None,
                    unless_acknowledged=value == "unacknowledged" and user is not None))
        return planned

    async def _targets(self, tenant: str, user: str, channel: str,
                       profile: dict[str, Any]) -> list[str]:
        if channel == "push":
            return [s["endpoint"] for s in await self.directory.subscriptions(tenant, user)]
        address = profile.get("phone" if channel == "sms" else "email")
        return [address] if address else []

    # --- sending -----------------------------------------------------------------------
    async def _send_loop(self) -> None:
        # Sends run as their own tasks, so that one slow provider or webhook does not hold up
        # the deliveries due after it; new ones are claimed while fewer than the limit run.
        while True:
            self._send_wanted.clear()
            wait = IDLE_WAKE  # when busy, a finishing send wakes the loop
            free = CONCURRENT_SENDS - len(self._in_flight)
            if free > 0:
                # One at a time (a claimed row is `sending` at once), skipping the tenants that
                # have SENDS_PER_TENANT under way: a tenant's slow receiver holds up only its
                # own deliveries.
                busy = Counter(group[0].tenant_id for group in self._in_flight.values())
                full = [t for t, n in busy.items() if n >= SENDS_PER_TENANT]
                due = await self.queue.claim_due(self.clock(), limit=1, skip_tenants=full)
                if due:
                    for group in _groups(due):
                        self._start_send(group)
                    continue
                next_at = await self.queue.next_due()
                if next_at is not None:
                    wait = min(IDLE_WAKE, next_at - self.clock())
            if wait > 0:
                try:
                    # asyncio.timeout, not wait_for: on 3.11 a stop that lands as the timeout
                    # fires is swallowed by wait_for, and the loop would wait a minute more.
                    async with asyncio.timeout(max(wait, 0.01)):
                        await self._send_wanted.wait()
                except TimeoutError:
                    pass

    def _start_send(self, group: list[Delivery]) -> None:
        task = asyncio.create_task(self._guarded(group), name=f"tidings-send-{group[0].id}")
        self._in_flight[task] = group
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self.wake()

    async def _guarded(self, group: list[Delivery]) -> None:
        try:
            await self._send(group)
        except StoreUnavailable as e:  # the lease runs out and it is claimed again
            log.warning("delivery %d: the store does not answer (%s)", group[0].id, e)
        except Exception as e:  # a bug, not a provider: keep the worker alive, retry later
            log.exception("delivery %d failed unexpectedly", group[0].id)
            try:
                await self._failed(group, DeliveryError(type(e).__name__, permanent=False))
            except StoreUnavailable:
                pass

    async def _send(self, group: list[Delivery]) -> None:
        # Replaced, recalled or expired since it was planned: what has not gone out never does.
        removed = await self.notifications.removed([x.notification_id for x in group],
                                                   self.clock())
        for reason in sorted(set(removed.values())):
            await self._finish([x for x in group if removed.get(x.notification_id) == reason],
                               "skipped", error=reason)
        group = [x for x in group if x.notification_id not in removed]
        if not group:
            return
        d = group[0]
        channel = self.channels.get(d.channel)
        if channel is None:
            return await self._finish(group, "skipped", error=f"{d.channel} is off")
        if d.unless_acknowledged and d.user_id and await self.receipts.is_acknowledged(
                d.notification_id, d.user_id):
            return await self._finish(group, "skipped", error="acknowledged")
        if d.only_offline and d.user_id and await self.presence.is_online(d.tenant_id,
                                                                            d.user_id):
            return await self._finish(group, "skipped", error="user was online")
        recipient = await self._recipient(d)
        if recipient is None:
            return await self._finish(group, "skipped", error="the address is gone")
        if recipient.email and await self.directory.suppressed(
                d.tenant_id, suppressions.normalize(recipient.email)):
            return await self._finish(group, "skipped", error=suppressions.SKIPPED)
        notifications = [n for n in [await self.notifications.notification(x.notification_id)
                                     for x in group] if n is not None]
        if not notifications:  # removed by retention since it was planned
            return await self._finish(group, "skipped", error="the notification is gone")
        try:
            rendered = await self._render(group, notifications)
            provider_id = await channel.send(recipient, rendered)
        except SubscriptionGone as e:
            await self.directory.remove_subscription(d.tenant_id, e.endpoint)
            log.info("push subscription of tenant=%s user=%s removed: gone", d.tenant_id,
                     d.user_id)
            return await self._finish(group, "failed", error=str(e))
        except DeliveryError as e:
            return await self._failed(group, e)
        await self._finish(group, "sent", provider_id=provider_id)
        log.info("%s delivery %s sent tenant=%s user=%s (attempt %d)", d.channel,
                 ",".join(str(x.id) for x in group), d.tenant_id, d.user_id or "*", d.attempts)

    async def _finish(self, group: list[Delivery], status: str, *, error: str | None = None,
                      provider_id: str | None = None, retry_at: float | None = None) -> None:
        """Records a send's outcome on its rows, then counts it."""
        await self.queue.finish(group, status, error=error, provider_id=provider_id,
                                retry_at=retry_at)
        self.metrics.delivered(group[0].channel, status, len(group))

    async def _failed(self, group: list[Delivery], e: DeliveryError) -> None:
        d = group[0]
        if e.permanent or d.attempts >= self.max_attempts:
            log.warning("%s delivery %d failed for good after %d attempt(s): %s", d.channel,
                        d.id, d.attempts, e)
            return await self._finish(group, "failed", error=str(e))
        delay = min(BACKOFF_CAP, self.backoff_base * 2 ** (d.attempts - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: retries of one outage don't stampede
        log.info("%s delivery %d will retry in %.1fs: %s", d.channel, d.id, delay, e)
        await self._finish(group, "queued", error=str(e), retry_at=self.clock() + delay)

    async def _recipient(self, d: Delivery) -> Recipient | None:
        if d.channel == "webhook":
            hook = await self.directory.webhook(d.tenant_id)
            return Recipient(d.user_id, webhook=WebhookTarget(**hook)) if hook else None
        if d.channel == "push":
            sub = await self.directory.subscription(d.tenant_id, d.target or "")
            if sub is None:
                return None
            return Recipient(d.user_id, push=PushSubscription(sub["endpoint"], sub["p256dh"],
                                                              sub["auth"]))
        if d.channel == "sms":
            return Recipient(d.user_id, phone=d.target)
        return Recipient(d.user_id, email=d.target)

    async def _render(self, group: list[Delivery], notifications: list[dict[str, Any]]) -> Any:
        d = group[0]
        profile = await self.directory.recipient(d.tenant_id, d.user_id or "") or {}
        extra = {"user": {"id": d.user_id, **profile}}
        if d.digest:
            rendered = render_digest(notifications, extra=extra)
        else:
            stored = await self.directory.template(d.tenant_id, notifications[0]["type"],
                                                   d.channel)
            template = MessageTemplate(**stored) if stored else None
            rendered = render(notifications[0], d.channel, template, extra)
        if d.channel == "email" and self.links is not None and d.user_id:
            # A digest mixes types: its link turns off the user's default.
            type_ = ALL_TYPES if d.digest else notifications[0]["type"]
            headers = self.links.headers(Unsubscription(d.tenant_id, d.user_id, type_))
            rendered = dataclasses.replace(rendered, headers=headers)
        return rendered


def _unsent(planned: list[Planned], reason: str | None) -> list[Planned]:
    """The plan of a notification that left before it was planned (`reason`): every row that
    would go is skipped, so its deliveries show why they never went."""
    if reason is None:
        return planned
    return [dataclasses.replace(row, status="skipped", last_error=reason, next_attempt_at=None)
            if row.status in DUE else row for row in planned]


def _groups(due: list[Delivery]) -> list[list[Delivery]]:
    """Digest emails of one user and period go out as one message; the rest one by one."""
    groups: dict[tuple[Any, ...], list[Delivery]] = {}
    for d in due:
        key = (d.tenant_id, d.user_id, d.target, d.digest) if d.digest else (d.id,)
        groups.setdefault(key, []).append(d)
    return list(groups.values())
