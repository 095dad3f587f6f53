"""The storage seams: what the rest of tidings may ask of a database, whichever it is.

Three protocols, each with a SQLite and a PostgreSQL implementation that pass one contract
suite (tests/contract/test_store.py):

- `Store`: notifications, per-user read state, idempotency keys, the tenants' stream
  positions (the id of each tenant's newest notification, used to find gaps in a fan-out)
  and the tenants' retention settings, with the removal that enforces them;
- `Directory`: recipients' addresses, preferences, push subscriptions, webhooks, templates;
- `DeliveryQueue`: one row per channel delivery, planned once and claimed with a lease, so
  that several processes never send the same delivery at once and a dead one's are taken over.

Rows leave an implementation as plain dicts and dataclasses in the contract's shape; no
driver type (sqlite3.Row, asyncpg.Record) crosses this seam. A store that cannot be reached
raises `StoreUnavailable`, which the API answers with 503.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from ..models import NewNotification, Principal, iso

Notification = dict[str, Any]

# Statuses: queued -> sending -> sent | failed, or back to queued for a retry; held waits for
# quiet hours or a digest; skipped was never tried (the reason is in last_error).
DUE = ("queued", "held")
LEASE = 45.0  # seconds a claimed delivery is its claimant's; then another process may take it


class StoreUnavailable(Exception):
    """The database does not answer (gone, locked, full): the request may be tried again."""


@dataclass
class CreateRequest:
    """One API call's worth of notifications, created in one transaction with its neighbours."""

    items: list[NewNotification]
    idempotency_key: str | None = None
    # A scheduled entry being sent: created only if the entry is still pending, and marked
    # sent in the same transaction, so it is created once however many processes try.
    schedule_id: str | None = None


@dataclass
class Created:
    notifications: list[Notification]
    # Per notification: the id of its tenant's previous notification (0 for the first), so a
    # receiver of the fan-out can tell whether it missed one.
    prev_ids: list[int] = field(default_factory=list)
    replayed_response: dict[str, Any] | None = None  # set when the idempotency key was seen
    replayed: bool = False


# Why a notification left every inbox (its `removed` column and its deliveries' skip reason).
REPLACED, RECALLED, EXPIRED = "replaced", "recalled", "expired"


@dataclass(frozen=True, slots=True)
class Removal:
    """A `notification_deleted` entry of a tenant's stream: its `event_id` comes from the
    notification id sequence, so it has its place in the stream's order."""

    event_id: int
    notification_id: int
    tenant_id: str
    user_id: str | None  # None: the notification was tenant-wide
    reason: str          # RECALLED or EXPIRED

    def payload(self) -> dict[str, Any]:
        return {"id": self.notification_id, "reason": self.reason, "event_id": self.event_id}


Entry = Notification | Removal  # one step of a tenant's ordered stream


def position(entry: Entry) -> int:
    """An entry's place in its tenant's stream: a notification's id or an event's id."""
    return entry.event_id if isinstance(entry, Removal) else int(entry["id"])


def merge(notifications: list[Notification], removals: list[Removal],
          limit: int) -> list[Entry]:
    """Two pages, each in id order and at most `limit` long, as one page in stream order that
    stops where either page stopped short of what it holds: what follows is read next."""
    ends = [position(page[-1]) for page in (notifications, removals) if len(page) >= limit]
    bound = min(ends) if ends else None
    entries: list[Entry] = sorted([*notifications, *removals], key=position)
    return [e for e in entries if bound is None or position(e) <= bound][:limit]


def chain(entries: list[Entry], prev: int) -> list[tuple[Entry, int]]:
    """Consecutive entries of a tenant's stream, each with the position before it (`prev` for
    the first)."""
    chained: list[tuple[Entry, int]] = []
    for entry in entries:
        chained.append((entry, prev))
        prev = position(entry)
    return chained


MAX_PENDING_SCHEDULED = 10_000  # a tenant's pending scheduled notifications, at most


@dataclass
class Scheduled:
    """A notification request to create at `send_at` (unix seconds)."""

    id: str
    tenant_id: str
    send_at: float
    created_at: float
    request: dict[str, Any]  # "recipients" and the notification's fields (scheduler.py)


@dataclass
class Delivery:
    id: int
    notification_id: int
    tenant_id: str
    user_id: str | None
    channel: str
    target: str | None
    status: str
    attempts: int
    digest: str | None
    only_offline: bool
    unless_acknowledged: bool = False  # skipped ("acknowledged") when the user acknowledged it


@dataclass
class Planned:
    """A delivery row to create."""

    notification_id: int
    tenant_id: str
    user_id: str | None
    channel: str
    status: str
    target: str | None = None
    next_attempt_at: float | None = None
    last_error: str | None = None
    digest: str | None = None
    only_offline: bool = False
    unless_acknowledged: bool = False


class Push(NamedTuple):
    """A notification written to live connections of one process: one record however many
    connections (a broadcast reaches thousands; a row each would cost more than the push).
    `connections` holds a line per connection, see `pack_connections`."""

    notification_id: int
    tenant_id: str
    at: float
    connections: str


def pack_connections(connections: Iterable[tuple[str, str, str]]) -> str:
    """(connection id, user id, transport) as lines of tab-separated fields: none of them
    can hold a tab or a line break (ids refuse control characters)."""
    return "\n".join("\t".join(c) for c in connections)


def unpack_lines(packed: str) -> list[list[str]]:
    """The fields of each line, as `pack_connections` and `pack_frame_acks` write them."""
    return [line.split("\t") for line in packed.split("\n")] if packed else []


ACKS_PER_RECIPIENT = 10  # acknowledgement rows kept per notification and user: no one grows it


class Ack(NamedTuple):
    """A user's acknowledgement of a notification from one connection ('': from every SSE
    connection of the user that was pushed it, when a REST call names none)."""

    notification_id: int
    tenant_id: str
    user_id: str
    connection_id: str
    at: float


class FrameAcks(NamedTuple):
    """The ids one WebSocket frame acknowledged. These are the volume (every client
    acknowledges everything it is sent), so they stay as the frame wrote them ("42,43": nothing is done per id
    until the write) and are written packed, a row per notification and write (see
    `frame_ack_lines`), not a row each. A connection bounds them: it acknowledges at most as
    many ids as it was sent, and a write keeps one line per connection and notification, so
    they never outgrow what was sent."""

    tenant_id: str
    user_id: str
    connection_id: str
    at: float
    ids: str  # notification ids, comma-separated, each below 2**63


# tenant -> notification id as written -> connection -> its line
AckLines = dict[str, dict[str, dict[str, str]]]


def frame_ack_lines(frames: Iterable[FrameAcks]) -> AckLines:
    """Per tenant and notification id, a line per connection that acknowledged it,
    "connection\tuser\tat", its first (frames come in order): a lookup and a store per id,
    nothing more."""
    tenants: AckLines = {}
    for tenant, user, connection, at, ids in frames:
        line = f"{connection}\t{user}\t{at!r}"
        lines = tenants.setdefault(tenant, {})
        for n in ids.split(","):
            found = lines.get(n)
            if found is None:
                lines[n] = {connection: line}
            elif connection not in found:
                found[connection] = line
    return tenants


def frame_ack_ids(tenants: AckLines) -> set[int]:
    return {int(n) for lines in tenants.values() for n in lines}


def pack_frame_acks(tenants: AckLines, owners: dict[int, tuple[str, str | None]],
                    ) -> list[tuple[int, str, str]]:
    """(notification id, tenant, acknowledgements) rows, the lines kept only where the
    notification is the user's (or the user's tenant's, for a broadcast); `owners` holds
    each notification's tenant and user."""
    rows = []
    for tenant, lines in tenants.items():
        for n, by_connection in lines.items():
            owner = owners.get(int(n))
            if owner is None or owner[0] != tenant:
                continue
            found = list(by_connection.values())
            if owner[1] is not None:  # a user's own: that user's lines only
                field = f"\t{owner[1]}\t"
                found = [line for line in found if field in line]
            if found:
                rows.append((int(n), tenant, "\n".join(found)))
    return rows


class ReceiptBook(Protocol):
    """Who was pushed, acknowledged and read which notification."""

    async def record(self, pushes: list[Push], acks: list[Ack],
                     frames: list[FrameAcks]) -> None:
        """Writes pushes and acknowledgements in one transaction. Of `acks` (from REST) the
        first of each is kept, at most ACKS_PER_RECIPIENT per notification and user; any
        acknowledgement of a notification that is not the user's is dropped."""
    async def receipts(self, tenant_id: str, notification_ids: list[int],
                       user_id: str | None = None) -> dict[int, list[dict[str, Any]]]:
        """Per notification, one entry per recipient that was pushed it, acknowledged it or
        read it (only `user_id`'s when given), in the API's shape."""
    async def acknowledged(self, notification_id: int, user_id: str) -> bool: ...


class Store(Protocol):
    async def create_batch(self, requests: list[CreateRequest]) -> list[Created]:
        """Creates every request in one transaction; ids are given in commit order."""
    async def save_responses(self, answers: list[tuple[str, str, dict[str, Any]]]) -> None: ...
    async def inbox(self, who: Principal, *, unread: bool = False, limit: int = 50,
                    before: int | None = None, group: str | None = None,
                    ) -> list[Notification]: ...
    async def after(self, who: Principal, after_id: int, limit: int = 500,
                    ) -> list[Notification]: ...
    async def counts(self, who: Principal, upto: int | None = None) -> dict[str, int]: ...
    async def by_type(self, who: Principal) -> dict[str, int]: ...
    async def mark_read(self, who: Principal, notification_id: int) -> None: ...
    async def mark_all_read(self, who: Principal) -> None: ...
    async def delete(self, who: Principal, notification_id: int) -> None: ...
    async def recent(self, tenant_id: str, limit: int = 20) -> list[Notification]:
        """A tenant's newest notifications (the dashboard's list), newest first, including
        those that left every inbox: each has `ended`, why it left (REPLACED, RECALLED,
        EXPIRED) or None while it is live."""
    async def notification(self, notification_id: int) -> Notification | None: ...
    async def unplanned(self, after_id: int, limit: int = 500) -> list[dict[str, Any]]:
        """What delivery planning reads of notifications after an id, oldest first (with
        `removed` and `expires_at`, so a plan for one that is gone is all skips)."""
    async def tenant_range(self, tenant_id: str, after_id: int, through_id: int,
                           limit: int = 500) -> list[tuple[Entry, int]]:
        """A tenant's stream entries (notifications, whether removed since or not, and
        removals) with after_id < position <= through_id, oldest first, each with its
        tenant's previous position: what a fan-out receiver missed."""
    async def removals_after(self, who: Principal, since: int, after_id: int,
                             limit: int = 500) -> list[Removal]:
        """What a client resuming from `since` is told was removed: the user's removals with
        event ids above `after_id`, of notifications it could have seen (ids up to `since`),
        oldest first."""
    async def recall(self, tenant_id: str, notification_id: int) -> tuple[Removal, int] | None:
        """Removes a live notification of the tenant for every recipient and writes its
        removal (with its tenant's previous position) in one transaction, its id taken in
        order with the notifications'; unsent deliveries are skipped. None when there is no
        such live notification."""
    async def expire(self, now: float, limit: int = 500) -> list[tuple[Removal, int]]:
        """Removes at most `limit` live notifications whose `expires_at` has passed, writing
        each one's removal as `recall` does, in one transaction; returns them in id order."""
    async def removed(self, notification_ids: list[int], now: float) -> dict[int, str]:
        """Of these notifications, the ones no longer live, each with why."""
    async def positions(self, tenant_ids: list[str]) -> dict[str, int]:
        """The newest notification id of each tenant (0 when it has none)."""
    async def last_id(self) -> int:
        """The largest id ever given (0 for none), also when retention has removed it."""
    async def tenant_settings(self, tenant_id: str) -> dict[str, Any]:
        """`retention_days`, `retention_count` (None: not limited) and `pruned_through`
        (the highest id retention removed, 0 for none); the defaults for an unknown tenant."""
    async def put_tenant_settings(self, tenant_id: str,
                                  changes: dict[str, int | None]) -> dict[str, Any]:
        """Changes the settings named in `changes` (others stay); returns them all."""
    async def retention_tenants(self) -> list[dict[str, Any]]:
        """Every tenant with a retention limit: `tenant_id`, `retention_days`,
        `retention_count`."""
    async def prune(self, tenant_id: str, *, older_than: float | None, keep: int | None,
                    limit: int = 500) -> int:
        """Removes, in one transaction, at most `limit` of the tenant's oldest notifications
        that are older than `older_than` (unix seconds) or not among its newest `keep`, with
        the rows that refer to them (receipts, deliveries and their attempts), and raises the
        tenant's `pruned_through` to the highest id removed. Only an unbroken run of the
        oldest goes, so every id of the tenant up to `pruned_through` is gone. Returns how
        many were removed; two callers at once remove each notification once."""
    async def prune_idempotency_keys(self, older_than: float) -> int: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class Directory(Protocol):
    async def put_recipient(self, tenant_id: str, user_id: str,
                            fields: dict[str, Any]) -> None: ...
    async def recipient(self, tenant_id: str, user_id: str) -> dict[str, Any] | None: ...
    async def known_users(self, tenant_id: str) -> list[str]: ...
    async def put_preferences(self, tenant_id: str, user_id: str,
                              body: dict[str, Any]) -> None: ...
    async def preferences(self, tenant_id: str, user_id: str) -> dict[str, Any]: ...
    async def in_app_preferences(self, tenant_id: str) -> dict[str, dict[str, Any]]:
        """Every stored preferences body of the tenant that mentions in_app, by owner ('' for
        the tenant's defaults); others may come too."""
    async def add_subscription(self, tenant_id: str, user_id: str, endpoint: str, p256dh: str,
                               auth: str) -> bool:
        """Registers (or renews) a user's push endpoint; False, changing nothing, when the
        endpoint belongs to another user (of this tenant or another)."""
    async def remove_subscription(self, tenant_id: str, endpoint: str,
                                  user_id: str | None = None) -> bool: ...
    async def subscriptions(self, tenant_id: str, user_id: str) -> list[dict[str, str]]: ...
    async def subscription(self, tenant_id: str, endpoint: str) -> dict[str, str] | None: ...
    async def put_webhook(self, tenant_id: str, url: str, secret: str) -> None: ...
    async def webhook(self, tenant_id: str) -> dict[str, str] | None: ...
    async def delete_webhook(self, tenant_id: str) -> bool: ...
    async def put_template(self, tenant_id: str, type_: str, channel: str,
                           parts: dict[str, str]) -> None: ...
    async def template(self, tenant_id: str, type_: str,
                       channel: str) -> dict[str, str] | None: ...
    async def delete_template(self, tenant_id: str, type_: str, channel: str) -> bool: ...
    async def suppress(self, tenant_id: str, address: str, reason: str,
                       detail: str | None = None) -> bool:
        """Puts an address on the tenant's suppression list (email is never sent to it);
        False, changing nothing, when it is there already. Addresses are compared as given:
        the caller lower-cases them."""
    async def suppressed(self, tenant_id: str, address: str) -> bool: ...
    async def suppressions(self, tenant_id: str, after: str = "", limit: int = 100,
                           ) -> list[dict[str, Any]]:
        """The tenant's list in address order, addresses after `after`: each
        {"address", "reason", "detail", "created_at"}."""
    async def unsuppress(self, tenant_id: str, address: str) -> bool: ...


class DeliveryQueue(Protocol):
    async def planned_through(self) -> int: ...
    async def add_planned(self, planned: list[Planned], from_id: int, through_id: int) -> bool:
        """Creates the rows and moves the plan cursor from `from_id` to `through_id` in one
        transaction; False (and nothing written) when another process moved it first."""
    async def claim_due(self, now: float, limit: int = 50, lease: float = LEASE,
                        skip_tenants: Collection[str] = ()) -> list[Delivery]:
        """Marks due deliveries (and ones whose claimant's lease ran out) `sending` for this
        claimant, one more attempt each, and returns them; a claimed digest comes whole.
        Deliveries of `skip_tenants` (those with all their sends under way) wait."""
    async def next_due(self) -> float | None: ...
    async def finish(self, deliveries: list[Delivery], status: str, *, error: str | None = None,
                     provider_id: str | None = None, retry_at: float | None = None) -> None: ...
    async def release(self, deliveries: list[Delivery]) -> None:
        """Gives claimed deliveries back, due now, without counting the attempt (a stop)."""
    async def for_notifications(self, notification_ids: list[int], tenant_id: str,
                                user_id: str | None = None,
                                ) -> dict[int, list[dict[str, Any]]]: ...
    async def tenant_of_sent(self, channel: str, provider_id: str) -> str | None:
        """The tenant of the delivery sent on `channel` with the provider's id `provider_id`
        (an SES message id), or None."""


class ScheduleBook(Protocol):
    """Notifications to create later. An entry is pending until the create that sends it
    marks it sent (`CreateRequest.schedule_id`) or a cancel does; a sender claims due ones
    with a lease, so several processes do not all try, and one that died is taken over."""

    async def add(self, entry: Scheduled, idempotency_key: str | None = None,
                  ) -> tuple[Scheduled, bool]:
        """Stores a pending entry. With an idempotency key the tenant used before, stores
        nothing and returns that first entry (whatever became of it) and True."""
    async def pending(self, tenant_id: str, limit: int = 500) -> list[Scheduled]:
        """The tenant's pending entries, soonest first."""
    async def cancel(self, tenant_id: str, schedule_id: str, now: float) -> bool:
        """Cancels a pending entry of the tenant; False when there is none (sent, cancelled,
        unknown or another tenant's)."""
    async def claim(self, now: float, limit: int = 50, lease: float = LEASE,
                    ) -> list[Scheduled]:
        """Pending entries due by `now` whose lease (if any) ran out, each leased to this
        caller until `now + lease`."""
    async def next_due(self) -> float | None:
        """When the soonest pending entry can be claimed, or None."""
    async def prune(self, older_than: float) -> int:
        """Forgets sent and cancelled entries done before `older_than`."""


TENANT_SETTINGS = ("retention_days", "retention_count")


def tenant_settings(row: dict[str, Any] | None) -> dict[str, Any]:
    """A tenant's settings row in the contract's shape; the defaults when there is none."""
    row = row or {}
    return {**{name: row.get(name) for name in TENANT_SETTINGS},
            "pruned_through": int(row.get("pruned_through") or 0)}


def doomed(rows: list[dict[str, Any]], older_than: float | None, cut: int) -> list[int]:
    """Of a tenant's oldest rows (id order), the unbroken run that retention removes: ids up
    to `cut` (beyond the newest N kept) or created before `older_than`. Stopping at the first
    one kept keeps "everything up to pruned_through is gone" true, although creation times
    may be a few milliseconds out of id order."""
    ids: list[int] = []
    for row in rows:
        if row["id"] <= cut or (older_than is not None and row["created_at"] < older_than):
            ids.append(row["id"])
        else:
            break
    return ids


def shape(id_: int, tenant_id: str, user_id: str | None, type_: str, title: str, message: str,
          data: Any, priority: str, created_at: str, read_at: float | None,
          group: str | None = None, actions: Any = None, *, key: str | None = None,
          replaces: int | None = None, expires_at: float | None = None) -> Notification:
    """A notification in the contract's shape; `group`, `actions`, `key`, `replaces` and
    `expires_at` only when it has them, so the many that have none stay as small as they
    were."""
    found = {"id": id_, "tenant_id": tenant_id, "user_id": user_id, "type": type_,
             "title": title, "message": message, "data": data, "priority": priority,
             "created_at": created_at, "read_at": iso(read_at) if read_at else None}
    if group is not None:
        found["group"] = group
    if actions:
        found["actions"] = list(actions)
    if key is not None:
        found["key"] = key
    if replaces is not None:
        found["replaces"] = replaces
    if expires_at is not None:
        found["expires_at"] = iso(expires_at)
    return found


def actions_json(actions: Any) -> str | None:
    """`actions` as stored: a JSON list, or NULL for none."""
    return json.dumps(list(actions), separators=(",", ":")) if actions else None


def gone(removed: str | None, expires_at: float | None, now: float) -> str | None:
    """Why a notification is no longer live, or None when it is."""
    if removed:
        return removed
    return EXPIRED if expires_at is not None and expires_at <= now else None


def ts(value: float | None) -> str | None:
    return iso(value) if value else None
