"""Replace and recall in headless Chromium: tidings.js against the stub server emits `updated`
and `deleted` once each, live and on resume, with its cursor moved past event ids; the demo
page, against the real server, swaps a replaced notification in place and drops a recalled
one without a reload."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tidings.config import Settings

from ..clients import token
from .live_server import LiveServer
from .test_browser_reset import connected_over, stop

TRANSPORTS = ["websocket", "sse"]


def events(page, *names: str) -> list[tuple[str, object]]:  # type: ignore[no-untyped-def]
    return [(e["event"], e["detail"]) for e in page.evaluate("window.log") if e["event"] in names]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_updated_and_deleted_live_and_once_on_resume(page, stub, transport) -> None:
    page.goto(f"{stub.url}/client?transport={transport}")
    connected_over(page, transport)
    one = stub.publish("build 7 running", key="build-7")
    two = stub.publish("unrelated")
    page.wait_for_function("n => window.received.length >= n", arg=2)
    three = stub.publish("build 7 passed", key="build-7", replaces=one["id"])
    removal = stub.remove(two["id"])
    page.wait_for_function("n => window.deleted.length >= n", arg=1)

    assert events(page, "notification", "updated", "deleted")[2:] == [
        ("notification", three), ("updated", {"notification": three, "replaces": one["id"]}),
        ("deleted", {"id": two["id"], "reason": "recalled"})]
    assert page.evaluate("window.client.lastId") == removal["event_id"]

    # Recalled while the client is away: on resume it comes once, after the cursor it had.
    stop(page, stub, 1)
    later = stub.remove(three["id"], reason="expired")
    stub.ignore_cursor = True  # a sloppy server replays everything: the client dedupes
    stub.start()
    page.wait_for_function("n => window.deleted.length >= n", arg=2)
    assert stub.cursors[-1] == (transport, str(removal["event_id"]))
    marker = stub.publish("marker")
    page.wait_for_function("id => window.received.includes(id)", arg=marker["id"])
    assert page.evaluate("window.deleted") == [{"id": two["id"], "reason": "recalled"},
                                               {"id": three["id"], "reason": "expired"}]
    assert page.evaluate("window.received") == [one["id"], two["id"], three["id"], marker["id"]]
    assert [e for e, _ in events(page, "updated")] == ["updated"]
    assert page.evaluate("window.client.lastId") == marker["id"] > later["event_id"]


@pytest.fixture
def live(settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(settings)
    server.start()
    yield server
    server.shutdown()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_demo_swaps_a_replaced_one_in_place_and_drops_a_recalled_one(page, live, transport,
                                                                     screenshot) -> None:
    service = token(user="backend", role="service")
    older = live.send(service, user_id="alice", title="Older")
    page.goto(f"{live.url}/demo?token={quote(token())}&tenant_id=acme&transport={transport}")
    page.wait_for_selector(f'#conn-status[data-state="live"][data-transport="{transport}"]')
    page.evaluate("window.notReloaded = true")
    running = live.send(service, user_id="alice", title="Build 7 running", key="build-7")
    newest = live.send(service, user_id="alice", title="Newest")
    page.wait_for_selector(f'#inbox li[data-id="{newest["id"]}"]')
    assert page.inner_text("#unread-count") == "3"

    passed = live.send(service, user_id="alice", title="Build 7 passed", key="build-7")
    page.wait_for_selector(f'#inbox li[data-id="{passed["id"]}"]')
    ids = page.eval_on_selector_all("#inbox li", "items => items.map(li => Number(li.dataset.id))")
    assert ids == [newest["id"], passed["id"], older["id"]], "in the replaced one's place"
    assert "Build 7 passed" in page.inner_text(f'#inbox li[data-id="{passed["id"]}"]')
    assert page.inner_text("#unread-count") == "3"
    assert running["id"] not in ids

    live.recall(service, newest["id"])
    page.wait_for_selector(f'#inbox li[data-id="{newest["id"]}"]', state="detached")
    page.wait_for_selector('#unread-count[data-count="2"]')
    ids = page.eval_on_selector_all("#inbox li", "items => items.map(li => Number(li.dataset.id))")
    assert ids == [passed["id"], older["id"]]
    assert page.evaluate("window.notReloaded") is True
    # The server agrees.
    stats = page.evaluate("window.tidingsDemo.client.request('GET', '/api/notifications/stats')")
    assert (stats["total"], stats["unread"]) == (2, 2)
    screenshot(page, f"demo-lifecycle-{transport}", full_page=False)
