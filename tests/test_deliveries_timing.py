"""When deliveries go: quiet hours and digests with a controlled clock, and "only when
offline" against a live WebSocket."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from server import Server
from tidings.config import Secret
from tidings.models import iso

from .clients import Api, WSClient, eventually
from .deliveries import ALICE, SENDER, notify, profile, settled, until

pytest_plugins = ["tests.peers.fixtures"]

BERLIN = ZoneInfo("Europe/Berlin")
UTC = datetime.UTC


@dataclasses.dataclass
class Mail:
    """A server with email on, whose orchestrator reads `now` (unix seconds) as its clock."""

    server: Server
    api: Api
    now: float

    def move_to(self, when: float) -> None:
        self.now = when
        self.server.services.orchestrator.wake()


async def email_server(smtp_peer: Any, start_server: Any, at: datetime.datetime) -> Mail:
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    mail = Mail(server, Api(server.port), at.timestamp())
    server.services.orchestrator.clock = lambda: mail.now
    await profile(mail.api, email="alice@example.com", timezone=str(at.tzinfo))
    return mail


def all_held(count: int = 1) -> Any:
    return lambda ds: len(ds) == count and all(d["status"] == "held" for d in ds)


@pytest.mark.gen_test(timeout=10)
async def test_quiet_hours_hold_until_they_end_urgent_passes(smtp_peer, start_server):
    mail = await email_server(smtp_peer, start_server,
                              datetime.datetime(2026, 1, 15, 23, 30, tzinfo=BERLIN))
    api = mail.api
    await api.json("PUT", "/api/preferences",
                   {"quiet_hours": {"start": "22:00", "end": "07:00"}}, ALICE)
    end = datetime.datetime(2026, 1, 16, 7, 0, tzinfo=BERLIN).timestamp()

    quiet = await notify(api, title="Can wait until morning")
    [d] = await until(api, quiet, all_held())
    assert (d["next_attempt_at"], d["attempts"], d["history"]) == (iso(end), 0, [])

    urgent = await notify(api, title="Server on fire", priority="urgent")
    [first] = await smtp_peer.inbox.arrived(1, timeout=5)
    assert first.message["Subject"] == "Server on fire"
    assert (await settled(api, urgent))[0]["status"] == "sent"

    mail.move_to(end - 60)  # a minute before the end: still quiet
    assert (await until(api, quiet, all_held()))[0]["attempts"] == 0
    mail.move_to(end + 1)
    _, second = await smtp_peer.inbox.arrived(2, timeout=5)
    assert second.message["Subject"] == "Can wait until morning"
    [d] = await settled(api, quiet)
    assert (d["status"], d["attempts"]) == ("sent", 1)
    assert len(smtp_peer.inbox) == 2


@pytest.mark.gen_test(timeout=10)
async def test_outside_quiet_hours_nothing_is_held(smtp_peer, start_server):
    mail = await email_server(smtp_peer, start_server,
                              datetime.datetime(2026, 1, 15, 12, 0, tzinfo=BERLIN))
    await mail.api.json("PUT", "/api/preferences",
                        {"quiet_hours": {"start": "22:00", "end": "07:00"}}, ALICE)
    nid = await notify(mail.api, title="Midday")
    await smtp_peer.inbox.arrived(1, timeout=5)
    assert (await settled(mail.api, nid))[0]["status"] == "sent"


@pytest.mark.gen_test(timeout=15)
async def test_daily_digest_sends_one_email_listing_all(smtp_peer, start_server):
    mail = await email_server(smtp_peer, start_server,
                              datetime.datetime(2026, 1, 15, 10, 0, tzinfo=UTC))
    api = mail.api
    await api.json("PUT", "/api/preferences", {"digest": "daily"}, ALICE)
    midnight = datetime.datetime(2026, 1, 16, tzinfo=UTC).timestamp()

    ids = [await notify(api, title=f"Event {i}", message=f"number {i}") for i in range(10)]
    for nid in ids:
        [d] = await until(api, nid, all_held())
        assert d["next_attempt_at"] == iso(midnight)
    mail.move_to(midnight - 1)
    for nid in ids[::3]:
        await until(api, nid, all_held())
    assert len(smtp_peer.inbox) == 0

    mail.move_to(midnight + 1)
    [digest] = await smtp_peer.inbox.arrived(1, timeout=5)
    for nid in ids:
        [d] = await settled(api, nid)
        assert (d["status"], d["attempts"]) == ("sent", 1)
    assert len(smtp_peer.inbox) == 1  # one email, not ten
    msg = digest.message
    assert msg["Subject"] == "10 new notifications" and digest.rcpt_tos == ["alice@example.com"]
    text = msg.get_body(("plain",)).get_content()
    assert [line for line in text.splitlines() if line] == \
        [f"- Event {i}: number {i}" for i in range(10)]
    html = msg.get_body(("html",)).get_content()
    assert all(f"<b>Event {i}</b>" in html for i in range(10))


@pytest.mark.gen_test(timeout=10)
async def test_a_digest_due_in_quiet_hours_waits_for_their_end(smtp_peer, start_server):
    mail = await email_server(smtp_peer, start_server,
                              datetime.datetime(2026, 1, 15, 10, 0, tzinfo=BERLIN))
    await mail.api.json("PUT", "/api/preferences", {
        "digest": "daily", "quiet_hours": {"start": "22:00", "end": "07:00"}}, ALICE)
    morning = datetime.datetime(2026, 1, 16, 7, 0, tzinfo=BERLIN).timestamp()
    nid = await notify(mail.api, title="Daytime news")
    [d] = await until(mail.api, nid, all_held())
    assert d["next_attempt_at"] == iso(morning)  # not midnight, in the middle of the night
    mail.move_to(morning + 1)
    [got] = await smtp_peer.inbox.arrived(1, timeout=5)
    assert got.message["Subject"] == "1 new notification"
    assert (await settled(mail.api, nid))[0]["status"] == "sent"


@pytest.mark.gen_test(timeout=10)
async def test_urgent_skips_the_digest(smtp_peer, start_server):
    mail = await email_server(smtp_peer, start_server,
                              datetime.datetime(2026, 1, 15, 10, 0, tzinfo=UTC))
    await mail.api.json("PUT", "/api/preferences", {"digest": "hourly"}, ALICE)
    held = await notify(mail.api, title="later")
    [d] = await until(mail.api, held, all_held())
    assert d["next_attempt_at"] == iso(datetime.datetime(2026, 1, 15, 11, tzinfo=UTC).timestamp())
    urgent = await notify(mail.api, title="now", priority="urgent")
    [got] = await smtp_peer.inbox.arrived(1, timeout=5)
    assert got.message["Subject"] == "now"
    assert (await settled(mail.api, urgent))[0]["status"] == "sent"


@pytest.mark.gen_test(timeout=10)
async def test_only_when_offline(smtp_peer, start_server):
    """Email is "offline" by default: not while alice has a live connection."""
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    api = Api(server.port)
    await profile(api, email="alice@example.com")

    ws = await WSClient.open(server.port, ALICE)
    while_online = await notify(api, title="You saw this live")
    assert (await ws.notifications(1))[0]["id"] == while_online
    [d] = await settled(api, while_online)
    assert (d["channel"], d["status"], d["last_error"], d["attempts"]) == \
        ("email", "skipped", "user was online", 0)
    ws.close()

    async def offline() -> bool:
        counts = await api.json("GET", "/api/notifications/connections", tok=ALICE)
        return counts["total"] == 0
    await eventually(offline)
    while_offline = await notify(api, title="You were away")
    [got] = await smtp_peer.inbox.arrived(1, timeout=5)
    assert got.message["Subject"] == "You were away"
    assert (await settled(api, while_offline))[0]["status"] == "sent"
    assert len(smtp_peer.inbox) == 1
