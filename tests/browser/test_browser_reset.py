"""The `reset` event in headless Chromium against the stub server: tidings.js emits it on both
transports, resumes sensibly after cursor_unknown, and the demo page reloads its inbox on it."""

from __future__ import annotations

import pytest

TRANSPORTS = ["websocket", "sse"]
RECEIVED = "n => window.received.length >= n"
RESET_SEEN = "window.log.some(e => e.event === 'reset')"


def connected_over(page, transport: str, times: int = 1) -> None:
    page.wait_for_function(
        "([t, n]) => window.client.current === t && "
        "window.log.filter(e => e.event === 'connected').length === n", arg=[transport, times])


def stop(page, stub, times: int) -> None:
    """Stops the stub and waits until the client noticed (its `times`th disconnect), so the
    caller can change the stub's history before `stub.start()`."""
    stub.stop()
    page.wait_for_function(
        "n => window.log.filter(e => e.event === 'disconnected').length === n", arg=times)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cursor_expired_is_emitted_before_what_is_still_kept(page, stub, transport) -> None:
    page.goto(f"{stub.url}/client?transport={transport}")
    connected_over(page, transport)
    stub.publish("seen")
    page.wait_for_function(RECEIVED, arg=1)

    stop(page, stub, 1)
    for title in ("removed by retention", "kept", "kept too"):
        stub.publish(title)
    del stub.notifications[1]  # id 2 is gone: the cursor (1) is before what is kept
    stub.reset_next = {"reason": "cursor_expired", "oldest_id": 3}
    stub.start()
    page.wait_for_function(RECEIVED, arg=3)

    events = [(e["event"], e["detail"]) for e in page.evaluate("window.log")
              if e["event"] in ("reset", "notification")]
    assert [(kind, detail if kind == "reset" else detail["id"]) for kind, detail in events] == [
        ("notification", 1), ("reset", {"reason": "cursor_expired", "oldest_id": 3}),
        ("notification", 3), ("notification", 4)]
    assert stub.cursors[-1] == (transport, "1")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cursor_unknown_resumes_from_the_connections_last_id(page, stub, transport) -> None:
    page.goto(f"{stub.url}/client?transport={transport}")
    connected_over(page, transport)
    stub.publish("one")
    stub.publish("two")
    page.wait_for_function(RECEIVED, arg=2)

    stop(page, stub, 1)
    stub.notifications, stub.next_id = [], 1  # the server's history was wiped
    stub.publish("first of the new history")
    stub.reset_next = {"reason": "cursor_unknown", "oldest_id": 1}
    stub.start()
    page.wait_for_function(RESET_SEEN)
    reset = page.evaluate("window.log.find(e => e.event === 'reset').detail")
    assert reset == {"reason": "cursor_unknown", "oldest_id": 1}
    assert stub.cursors[-1] == (transport, "2")
    assert page.evaluate("window.client.lastId") == 1  # the connection's last_id

    # Id 2 again, for a new notification: shown, not taken for the old id 2.
    again = stub.publish("second of the new history")
    page.wait_for_function(RECEIVED, arg=3)
    assert page.evaluate("window.received") == [1, 2, again["id"]] == [1, 2, 2]

    # The next reconnect resumes from there, with no reset again.
    stop(page, stub, 2)
    stub.start()
    connected_over(page, transport, 3)
    assert stub.cursors[-1] == (transport, "2")
    assert [e["event"] for e in page.evaluate("window.log")].count("reset") == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_demo_reloads_its_inbox_on_reset(page, stub, transport) -> None:
    for title in ("oldest", "older", "old"):
        stub.publish(title)
    page.goto(f"{stub.url}/demo?token=test-token&tenant_id=acme&transport={transport}")
    page.wait_for_selector(f'#conn-status[data-state="live"][data-transport="{transport}"]')
    assert page.locator("#inbox li").count() == 3
    assert stub.inbox_requests == 0  # the first screen came from the snapshot

    stub.stop()
    page.wait_for_selector('#conn-status[data-state="offline"]')
    del stub.notifications[:2]  # retention removed the two oldest
    stub.publish("while away")
    stub.reset_next = {"reason": "cursor_expired", "oldest_id": 3}
    stub.start()
    page.wait_for_function("window.tidingsDemo.reloaded === 1")

    assert stub.inbox_requests == 1
    ids = page.eval_on_selector_all("#inbox li", "lis => lis.map(li => Number(li.dataset.id))")
    assert ids == [4, 3]
    assert page.inner_text("#unread-count") == "2"
    assert page.inner_text("#inbox-count") == "2 shown"
