"""static/tidings.js in headless Chromium against the loopback stub server (browser_stub.py)."""

from __future__ import annotations

import pytest

RECEIVED = "n => window.received.length >= n"


def connected_over(page, transport: str) -> None:
    page.wait_for_function(
        "t => window.client.connected && window.client.current === t", arg=transport)


def test_receives_over_websocket(page, stub) -> None:
    page.goto(f"{stub.url}/client")
    connected_over(page, "websocket")
    first = stub.publish("Build finished", message="main is green")
    page.wait_for_function(RECEIVED, arg=1)

    log = page.evaluate("window.log")
    assert log[0]["event"] == "connected"
    assert log[0]["detail"]["transport"] == "websocket"
    assert log[0]["detail"]["user_id"] == "alice"
    assert log[1] == {"event": "notification", "detail": first}
    assert stub.cursors == [("websocket", None)]
    assert stub.stream_uris == ["/ws/notifications?ticket=ticket-1&tenant_id=acme"]  # no token


def test_falls_back_to_sse_when_websocket_is_refused(page, stub) -> None:
    stub.refuse_websocket = True
    page.goto(f"{stub.url}/client")
    connected_over(page, "sse")
    stub.publish("Over SSE")
    page.wait_for_function(RECEIVED, arg=1)

    assert stub.refused_websockets == 1
    assert stub.cursors == [("sse", None)]
    assert page.evaluate("window.received") == [1]


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_restart_resumes_from_last_id_exactly_once(page, stub, transport) -> None:
    page.goto(f"{stub.url}/client?transport={transport}")
    connected_over(page, transport)
    stub.publish("before the restart")
    page.wait_for_function(RECEIVED, arg=1)

    stub.stop()
    page.wait_for_function("window.log.some(e => e.event === 'disconnected')")
    stub.publish("while it was down")
    stub.ignore_cursor = True  # replay everything again: the client must drop what it has seen
    stub.start()  # same port

    page.wait_for_function(RECEIVED, arg=2)
    stub.publish("after the restart")
    page.wait_for_function(RECEIVED, arg=3)

    assert page.evaluate("window.received") == [1, 2, 3]
    cursor = "since" if transport == "websocket" else "last_event_id"
    assert stub.cursors[0] == (transport, None), cursor
    assert stub.cursors[-1] == (transport, "1"), f"resumed with {cursor}=1"
    events = [e["event"] for e in page.evaluate("window.log")]
    assert events.count("connected") == len(stub.cursors) == 2
    assert all("token" not in uri for uri in stub.stream_uris)  # a fresh ticket each time


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_mark_read_reaches_the_server_and_stats_come_back(page, stub, transport) -> None:
    page.goto(f"{stub.url}/client?transport={transport}")
    connected_over(page, transport)
    n = stub.publish("read me")
    page.wait_for_function(RECEIVED, arg=1)

    page.evaluate("id => window.client.markRead(id)", n["id"])
    page.wait_for_function("window.log.some(e => e.event === 'stats' && e.detail.unread === 0)")
    assert stub.read_ids == [n["id"]]


def test_refused_token_stops_reconnecting(page, stub) -> None:
    stub.websocket_close_code = 4401
    page.goto(f"{stub.url}/client?transport=websocket")
    page.wait_for_function("window.log.some(e => e.event === 'error' && e.detail.fatal)")
    # An absence can only be observed over time: a retry would come within maxDelay (1 s).
    page.wait_for_timeout(1500)
    assert page.evaluate("window.client._sock") is None
    assert page.evaluate("window.client._retryTimer") is None


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_get_token_is_asked_before_each_connection(page, stub, transport) -> None:
    page.goto(f"{stub.url}/client?auth=callback&transport={transport}")
    connected_over(page, transport)
    stub.stop()
    page.wait_for_function("window.log.some(e => e.event === 'disconnected')")
    stub.start()
    page.wait_for_function("window.log.filter(e => e.event === 'connected').length === 2")
    assert page.evaluate("window.tokensAsked") >= 2
    assert stub.tickets == set()  # each ticket made was spent by a connection
    assert not any("token" in uri for uri in stub.stream_uris)


def test_a_token_refused_for_a_ticket_stops_reconnecting(page, stub) -> None:
    page.goto(f"{stub.url}/client?token=wrong")
    page.wait_for_function("window.log.some(e => e.event === 'error' && e.detail.fatal)")
    assert page.evaluate("window.log.find(e => e.event === 'error').detail.status") == 401
    page.wait_for_timeout(1500)  # an absence: a retry would come within maxDelay (1 s)
    assert stub.stream_uris == []
    assert page.evaluate("window.client._retryTimer") is None


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_what_it_emits_it_acknowledges_in_one_batch(page, stub, transport) -> None:
    page.goto(f"{stub.url}/client?transport={transport}")
    connected_over(page, transport)
    ids = [stub.publish(f"n{i}")["id"] for i in range(3)]
    page.wait_for_function(RECEIVED, arg=3)
    assert stub.wait_for_acks(1)
    connection = "c1" if transport == "websocket" else "s1"
    assert stub.acks == [(transport, ids, connection)]  # all three, in one batch


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_a_steady_stream_is_acknowledged_at_most_once_a_second(page, stub, transport) -> None:
    page.goto(f"{stub.url}/client?transport={transport}")
    connected_over(page, transport)
    first = stub.publish("first")["id"]
    assert stub.wait_for_acks(1)
    # More than one request or frame holds (500 ids), arriving within the second after the
    # first batch: they wait for that second to end, then all go at once.
    rest = [stub.publish(f"n{i}")["id"] for i in range(600)]
    page.wait_for_function(RECEIVED, arg=601)
    assert stub.wait_for_acks(3)
    assert [len(ids) for _, ids, _ in stub.acks] == [1, 500, 100]
    assert [i for _, ids, _ in stub.acks for i in ids] == [first, *rest]
    assert stub.ack_times[1] - stub.ack_times[0] >= 0.9  # not before the second is over
    assert stub.ack_times[2] - stub.ack_times[1] < 0.5  # the second part of the same batch


def test_ack_false_acknowledges_nothing(page, stub) -> None:
    page.goto(f"{stub.url}/client?transport=websocket")
    connected_over(page, "websocket")
    page.evaluate("window.client.ack = false")
    stub.publish("not acknowledged")
    page.wait_for_function(RECEIVED, arg=1)
    page.wait_for_timeout(300)  # an absence: an ack would go within 100 ms
    assert stub.acks == []


def test_close_stops_for_good(page, stub) -> None:
    page.goto(f"{stub.url}/client")
    connected_over(page, "websocket")
    page.evaluate("window.client.close()")
    page.wait_for_function("window.log.some(e => e.event === 'disconnected' && !e.detail.willRetry)")
    stub.publish("nobody listens")
    assert page.evaluate("window.client.connected") is False
