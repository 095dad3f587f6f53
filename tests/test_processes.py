"""Several tidings processes sharing a real PostgreSQL and a real Redis, each a real
`python server.py` with real clients on each: what the contract's "More than one process"
section promises."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from .clients import Api, ServerProcess, SSEClient, WSClient, eventually, inbox_ids, token
from .deliveries import settled

pytest_plugins = ["tests.peers.fixtures"]

SERVICE = token(user="backend", role="service")
ADMIN = token(user="root", role="admin")
ALICE, BOB, CAROL = token(user="alice"), token(user="bob"), token(user="carol")


@pytest.fixture
def shared(postgres: Any, redis: Any) -> dict[str, str]:
    redis.flush()
    return {"db": postgres.fresh_database(), "redis": redis.url}


async def start(shared: dict[str, str], *args: str) -> ServerProcess:
    server = ServerProcess(shared["db"], "test-secret-that-is-long-enough-for-hs256!",
                           "--redis-url", shared["redis"], *args)
    return await server.start()


async def started(shared: dict[str, str], n: int, *args: str) -> list[ServerProcess]:
    return [await start(shared, *args) for _ in range(n)]


async def stop(*servers: ServerProcess) -> None:
    for server in servers:
        await server.kill()


@pytest.mark.gen_test(timeout=60)
async def test_unicast_user_ids_and_broadcast_reach_every_process_once_in_order(shared):
    a, b, c = await started(shared, 3)
    try:
        alice_ws = await WSClient.open(a.port, ALICE)
        alice_sse = await SSEClient.open(b.port, ALICE)
        await alice_sse.next_of("connected")
        bob_ws = await WSClient.open(c.port, BOB)
        carol_sse = await SSEClient.open(a.port, CAROL)
        await carol_sse.next_of("connected")
        await eventually(lambda: _total(Api(c.port), 4))
        sent: dict[str, list[int]] = {"alice": [], "bob": [], "carol": []}
        servers = [a, b, c]
        for i in range(30):
            api = Api(servers[i % 3].port)
            kind = i % 3
            if kind == 0:
                r = await api.send(SERVICE, user_id="alice", title=f"#{i}")
                sent["alice"].append(r["notification"]["id"])
                assert r["delivery"] == {"websocket": 1, "sse": 1}  # counted on every process
            elif kind == 1:
                r = await api.send(SERVICE, user_ids=["bob", "carol"], title=f"#{i}")
                for n in r["notifications"]:
                    sent[n["user_id"]].append(n["id"])
            else:
                r = await api.send(SERVICE, broadcast=True, title=f"#{i}")
                for user in sent:
                    sent[user].append(r["notification"]["id"])
                assert r["delivery"] == {"websocket": 2, "sse": 2}
        got_ws = [n["id"] for n in await alice_ws.notifications(len(sent["alice"]))]
        got_sse = [n["id"] for n in await alice_sse.notifications(len(sent["alice"]))]
        got_bob = [n["id"] for n in await bob_ws.notifications(len(sent["bob"]))]
        got_carol = [n["id"] for n in await carol_sse.notifications(len(sent["carol"]))]
        assert got_ws == got_sse == sent["alice"]
        assert got_bob == sent["bob"] and got_carol == sent["carol"]
        # nothing more arrives: a marker sent after everything comes next, not a duplicate
        marker = (await Api(b.port).send(SERVICE, user_id="alice", title="marker"))
        assert (await alice_ws.next_of("notification"))["notification"]["id"] == \
            marker["notification"]["id"]
        for client in (alice_ws, alice_sse, bob_ws, carol_sse):
            client.close()
    finally:
        await stop(a, b, c)


async def _total(api: Api, expected: int) -> bool:
    stats = await api.json("GET", "/api/notifications/connections", tok=ADMIN)
    return bool(stats["total"] == expected)


@pytest.mark.gen_test(timeout=120)
async def test_600_concurrent_creates_on_two_processes_arrive_in_order_and_match_the_inbox(
        shared):
    a, b = await started(shared, 2)
    users = ["alice", "bob", "carol"]
    toks = {"alice": ALICE, "bob": BOB, "carol": CAROL}
    try:
        clients = {}
        for user in users:
            clients[(user, "a")] = await WSClient.open(a.port, toks[user])
            sse = await SSEClient.open(b.port, toks[user])
            await sse.next_of("connected")
            clients[(user, "b")] = sse
        await eventually(lambda: _total(Api(a.port), 6))
        apis = [Api(a.port), Api(b.port)]
        rng = random.Random(8)

        async def create(i: int) -> None:
            body: dict[str, Any] = {"title": f"#{i}"}
            choice = rng.random()
            if choice < 0.6:
                body["user_id"] = rng.choice(users)
            elif choice < 0.8:
                body["user_ids"] = rng.sample(users, 2)
            else:
                body["broadcast"] = True
            await apis[i % 2].send(SERVICE, **body)

        await asyncio.gather(*(create(i) for i in range(600)))
        for user in users:
            expected = await inbox_ids(a.port, toks[user])
            for side in ("a", "b"):
                got = [n["id"] for n in await clients[(user, side)].notifications(
                    len(expected), timeout=20)]
                assert got == sorted(set(got)), f"{user} on {side}: not strictly increasing"
                assert got == expected, f"{user} on {side}: differs from the inbox"
        for client in clients.values():
            client.close()
    finally:
        await stop(a, b)


@pytest.mark.gen_test(timeout=60)
async def test_a_cursor_from_one_process_resumes_on_another(shared):
    a, b = await started(shared, 2)
    try:
        ws = await WSClient.open(a.port, ALICE)
        first = [(await Api(a.port).send(SERVICE, user_id="alice", title=f"a{i}"))
                 ["notification"]["id"] for i in range(3)]
        assert [n["id"] for n in await ws.notifications(3)] == first
        ws.close()
        missed = [(await Api(a.port if i % 2 else b.port).send(
            SERVICE, user_id="alice", title=f"b{i}"))["notification"]["id"] for i in range(4)]
        resumed = await WSClient.open(b.port, ALICE, since=first[-1])
        sse = await SSEClient.open(b.port, ALICE, headers={"Last-Event-ID": str(first[-1])})
        assert [n["id"] for n in await resumed.notifications(4)] == missed
        assert [n["id"] for n in await sse.notifications(4)] == missed
        resumed.close()
        sse.close()
    finally:
        await stop(a, b)


@pytest.mark.gen_test(timeout=60)
async def test_presence_and_the_connection_limit_span_processes(shared):
    a, b = await started(shared, 2, "--max-connections-per-user", "2")
    try:
        one = await WSClient.open(a.port, ALICE)
        two = await SSEClient.open(b.port, ALICE)
        await two.next_of("connected")
        # Each process publishes its own count: wait until both see the other's.
        await eventually(lambda: _user_total(Api(b.port), 2))
        await eventually(lambda: _user_total(Api(a.port), 2))
        refused = await SSEClient.open(b.port, ALICE)
        assert refused.status == 429
        refused_ws = await Api(a.port).call("GET", "/ws/notifications", tok=ALICE)
        assert refused_ws.code == 429
        stats = await Api(a.port).json("GET", "/api/notifications/connections", tok=ADMIN)
        assert (stats["websocket"], stats["sse"], stats["users_online"]) == (1, 1, 1)
        one.close()
        await eventually(lambda: _user_total(Api(b.port), 1), timeout=2)  # within a second
        again = await WSClient.open(b.port, ALICE)
        again.close()
        two.close()
    finally:
        await stop(a, b)


async def _healthy(api: Api) -> bool:
    return (await api.call("GET", "/healthz")).code == 200


async def _user_total(api: Api, expected: int) -> bool:
    stats = await api.json("GET", "/api/notifications/connections", tok=ALICE)
    return bool(stats["total"] == expected)


@pytest.mark.gen_test(timeout=90)
async def test_a_killed_process_drops_out_and_its_clients_resume_elsewhere_with_no_gap(shared):
    a, b = await started(shared, 2)
    try:
        ws = await WSClient.open(a.port, ALICE)
        bob = await WSClient.open(b.port, BOB)
        await eventually(lambda: _total(Api(b.port), 2))
        seen = [n["id"] for n in [(await Api(b.port).send(SERVICE, user_id="alice",
                                                          title="before"))["notification"]]]
        assert [n["id"] for n in await ws.notifications(1)] == seen
        a.proc.kill()  # SIGKILL: no goodbye to Redis
        await a.wait()
        await ws.closed()  # its socket died with it (no close code: no closing handshake)
        missed = [(await Api(b.port).send(SERVICE, user_id="alice", title=f"m{i}"))
                  ["notification"]["id"] for i in range(3)]
        resumed = await WSClient.open(b.port, ALICE, since=seen[-1])
        assert [n["id"] for n in await resumed.notifications(3)] == missed
        resumed.close()
        # the dead process's connection leaves the counts within its time to live (20 s)
        await eventually(lambda: _total(Api(b.port), 1), timeout=30, step=0.5)
        bob.close()
    finally:
        await stop(a, b)


@pytest.mark.gen_test(timeout=90)
async def test_redis_away_for_five_seconds_under_load_loses_nothing(shared, redis):
    a, b = await started(shared, 2)
    try:
        on_a = await WSClient.open(a.port, ALICE)
        on_b = await SSEClient.open(b.port, ALICE)
        await on_b.next_of("connected")
        await eventually(lambda: _total(Api(a.port), 2))
        ids: list[int] = []
        stop_sending = asyncio.Event()

        async def load(api: Api) -> None:
            while not stop_sending.is_set():
                r = await api.send(SERVICE, user_id="alice", title="load")  # always 201
                ids.append(r["notification"]["id"])
                await asyncio.sleep(0.02)  # the load's pace, not a wait for an event

        senders = [asyncio.ensure_future(load(Api(a.port))),
                   asyncio.ensure_future(load(Api(b.port)))]
        await eventually(lambda: len(ids) >= 20)
        redis.stop()
        try:
            await asyncio.sleep(5)  # the outage itself: five seconds of creates without Redis
            assert len(ids) >= 40
        finally:
            redis.start()
        await eventually(lambda: len(ids) >= 120, timeout=20)
        stop_sending.set()
        await asyncio.gather(*senders)
        expected = sorted(ids)
        got_a = [n["id"] for n in await on_a.notifications(len(expected), timeout=10)]
        got_b = [n["id"] for n in await on_b.notifications(len(expected), timeout=10)]
        assert got_a == expected and got_b == expected
        await eventually(lambda: _healthy(Api(a.port)), timeout=5)
        on_a.close()
        on_b.close()
    finally:
        await stop(a, b)


@pytest.mark.gen_test(timeout=90)
async def test_postgres_away_answers_503_stores_nothing_then_recovers(shared, postgres):
    (a,) = await started(shared, 1)
    try:
        api = Api(a.port)
        kept = (await api.send(SERVICE, user_id="alice", title="kept"))["notification"]["id"]
        postgres.stop()
        try:
            started_at = asyncio.get_running_loop().time()
            response = await api.call("POST", "/api/notifications",
                                      {"user_id": "alice", "title": "lost"}, tok=SERVICE,
                                      headers={"Content-Type": "application/json"})
            assert response.code == 503, response.body
            assert json.loads(response.body)["error"]["code"] == "store_unavailable"
            assert asyncio.get_running_loop().time() - started_at < 10
            health = await api.call("GET", "/healthz")
            assert health.code == 503
        finally:
            postgres.start()

        async def recovered() -> bool:
            r = await api.call("POST", "/api/notifications", {"user_id": "alice",
                               "title": "after"}, tok=SERVICE)
            return r.code == 201
        await eventually(recovered, timeout=30, step=0.5)
        titles = [n["title"] for n in (await api.json(
            "GET", "/api/notifications?limit=200", tok=ALICE))["notifications"]]
        assert "lost" not in titles and "kept" in titles
        assert kept in await inbox_ids(a.port, ALICE)
    finally:
        await stop(a)


@pytest.mark.gen_test(timeout=120)
async def test_200_webhook_deliveries_with_two_processes_sending_arrive_once_each(
        shared, webhook_receiver):
    a, b = await started(shared, 2, "--outbound-allow", "127.0.0.1")
    try:
        made = await Api(a.port).json("PUT", "/api/webhook", {"url": webhook_receiver.url},
                                      ADMIN, expect=201)
        webhook_receiver.secret = made["secret"]
        apis = [Api(a.port), Api(b.port)]
        created = await asyncio.gather(*(
            apis[i % 2].send(SERVICE, user_id=f"u{i % 10}", title=f"#{i}") for i in range(200)))
        ids = sorted(r["notification"]["id"] for r in created)
        hooks = await webhook_receiver.inbox.arrived(200, timeout=60)
        assert sorted(h.notification["id"] for h in hooks) == ids  # each once, none twice
        # Every delivery is settled after one attempt: no second process claimed one, and
        # none can be sent again.
        found = await asyncio.gather(*(settled(Api(a.port), nid, timeout=30) for nid in ids))
        assert all([(d["status"], d["attempts"]) for d in ds] == [("sent", 1)] for ds in found)
        assert len(webhook_receiver.inbox.items) == 200
    finally:
        await stop(a, b)


@pytest.mark.gen_test(timeout=60)
async def test_a_ticket_made_on_one_process_is_spent_once_on_any(shared):
    a, b, c = await started(shared, 3)
    try:
        made = await Api(a.port).json("POST", "/api/tickets", tok=ALICE, expect=201)
        ws = await WSClient.open(b.port, None, ticket=made["ticket"])
        assert ws.hello["user_id"] == "alice"
        for server in (a, b, c):
            again = await SSEClient.open(server.port, ticket=made["ticket"])
            assert (again.status, again.error()["error"]["code"]) == (401, "invalid_ticket")
        ws.close()
    finally:
        await stop(a, b, c)


@pytest.mark.gen_test(timeout=60)
async def test_receipts_see_pushes_and_acknowledgements_of_every_process(shared):
    a, b, c = await started(shared, 3)
    try:
        ws = await WSClient.open(a.port, ALICE)
        sse = await SSEClient.open(b.port, ALICE)
        sse_id = (await sse.next_of("connected"))["data"]["connection_id"]
        await eventually(lambda: _total(Api(c.port), 2))
        nid = (await Api(c.port).send(SERVICE, user_id="alice", title="seen"))["notification"]["id"]
        await ws.notifications(1)
        await sse.next_of("notification")
        ws.send({"type": "ack", "ids": [nid]})
        await Api(c.port).json("POST", "/api/notifications/ack",
                               {"ids": [nid], "connection_id": sse_id}, tok=ALICE, expect=204)

        async def all_acknowledged() -> bool:
            found = await Api(c.port).json("GET", f"/api/notifications/{nid}/receipts", tok=ADMIN)
            conns = [conn for e in found["receipts"] for conn in e["connections"]]
            return len(conns) == 2 and all(x["pushed_at"] and x["acknowledged_at"] for x in conns)
        await eventually(all_acknowledged)
        ws.close()
        sse.close()
    finally:
        await stop(a, b, c)


@pytest.mark.gen_test(timeout=60)
async def test_recalls_on_one_process_reach_connections_on_another_in_stream_order(shared):
    a, b = await started(shared, 2)
    try:
        ws = await WSClient.open(b.port, ALICE)
        sse = await SSEClient.open(a.port, ALICE)
        await sse.next_of("connected")
        await eventually(lambda: _total(Api(a.port), 2))
        made = [(await Api(a.port).send(SERVICE, user_id="alice", title=f"#{i}"))
                ["notification"]["id"] for i in range(10)]
        recalled = made[::2]

        async def recall(nid: int) -> None:
            r = await Api(a.port).call("DELETE", f"/api/notifications/{nid}", tok=ADMIN)
            assert r.code == 204

        async def create(i: int) -> int:
            r = await Api(b.port).send(SERVICE, user_id="alice", title=f"late {i}")
            return int(r["notification"]["id"])

        results = await asyncio.gather(*(recall(n) for n in recalled),
                                       *(create(i) for i in range(5)))
        late = sorted(r for r in results if r is not None)

        async def entries(client: WSClient | SSEClient, n: int) -> list[tuple[str, int, int]]:
            got = []
            while len(got) < n:
                if isinstance(client, WSClient):
                    frame = await client.next()
                    kind = frame["type"]
                    body = frame.get("notification", frame)
                else:
                    event = await client.event()
                    kind, body = event["event"], event["data"]
                    if kind in ("notification", "notification_deleted"):
                        assert int(event["id"]) == body.get("event_id", body["id"])
                if kind == "notification":
                    got.append((kind, body["id"], body["id"]))
                elif kind == "notification_deleted":
                    got.append((kind, body["id"], body["event_id"]))
            return got

        live_ws, live_sse = await entries(ws, 20), await entries(sse, 20)
        assert live_ws == live_sse
        positions = [p for _, _, p in live_ws]
        assert positions == sorted(set(positions)), "not in stream order"
        assert [n for k, n, _ in live_ws if k == "notification"] == made + late
        assert sorted(n for k, n, _ in live_ws if k == "notification_deleted") == recalled
        # A resume on the other process gives the same entries after the cursor, once.
        resumed = await WSClient.open(a.port, ALICE, since=made[-1])
        assert await entries(resumed, 10) == live_ws[10:]
        for client in (ws, sse, resumed):
            client.close()
    finally:
        await stop(a, b)
