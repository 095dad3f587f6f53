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
    how, connection = ("websocket", "c1") if transport == "websocket" else ("rest", "s1")
    assert stub.acks == [(how, ids, connection)]  # all three, in one batch


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_a_steady_stream_is_acknowledged_at_most_once_a_second(page, stub, transport) -> None:
    page.goto(f"{stub.url}/client?transport={transport}")
    connected_over(page, transport)
    first = stub.publish("first")["id"]
    assert stub.wait_for_acks(1)
    # Within the second after the first batch: they wait for it to end, then go at most ten
    # frames or requests of 500 a batch (the server takes 20 frames a second), the rest a
    # second later.
    rest = stub.publish_many(5200)
    page.wait_for_function(RECEIVED, arg=5201)
    assert stub.wait_for_acks(12)
    assert [len(ids) for _, ids, _ in stub.acks] == [1, *[500] * 10, 200]
    # Each once (a batch's requests may arrive in any order).
    assert sorted(i for _, ids, _ in stub.acks for i in ids) == [first, *rest]
    times = stub.ack_times
    assert times[1] - times[0] >= 0.9  # not before the second is over
    assert times[10] - times[1] < 0.5  # one batch
    assert times[11] - times[10] >= 0.9  # the next, a second later


def test_what_is_pending_when_the_socket_drops_goes_over_rest_at_once(page, stub) -> None:
    """The next connection was not sent those ids, so the server would ignore them from it."""
    page.goto(f"{stub.url}/client?transport=websocket")
    connected_over(page, "websocket")
    stub.publish("first")
    assert stub.wait_for_acks(1)
    second = stub.publish("second")["id"]
    page.wait_for_function(RECEIVED, arg=2)
    stub.drop_streams()
    assert stub.wait_for_acks(2)
    assert stub.acks[1] == ("rest", [second], None)
    assert stub.ack_times[1] - stub.ack_times[0] < 0.9  # at the drop, not the second's end


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_close_sends_what_is_pending_first(page, stub, transport) -> None:
    page.goto(f"{stub.url}/client?transport={transport}")
    connected_over(page, transport)
    stub.publish("first")
    assert stub.wait_for_acks(1)
    second = stub.publish("second")["id"]
    page.wait_for_function(RECEIVED, arg=2)
    page.evaluate("window.client.close()")
    assert stub.wait_for_acks(2)
    how, connection = ("websocket", "c1") if transport == "websocket" else ("rest", "s1")
    assert stub.acks[1] == (how, [second], connection)
    assert stub.ack_times[1] - stub.ack_times[0] < 0.9
    assert page.evaluate("window.client._ackTimer") is None  # nothing runs after close()


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
