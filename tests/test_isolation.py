"""Tenants and users: every client receives exactly its own notifications, nothing else."""

import asyncio
import random

import pytest

from .clients import SSEClient, WSClient, token

TENANTS = ("acme", "globex", "initech")
USERS = ("alice", "bob", "carol", "dave")  # the same user ids in every tenant, on purpose


@pytest.mark.gen_test(timeout=30)
async def test_every_client_receives_exactly_its_own(server, api):
    rng = random.Random(7)
    clients = {}
    for tenant in TENANTS:
        for user in USERS:
            tok = token(tenant=tenant, user=user)
            sse = await SSEClient.open(server.port, tok)
            assert (await sse.event())["event"] == "connected"
            clients[tenant, user] = [await WSClient.open(server.port, tok, tenant_id=tenant),
                                     await WSClient.open(server.port, tok), sse]
    expected = {key: [] for key in clients}

    async def send(tenant, body):
        answer = await api.send(token(tenant=tenant, user="svc", role="service"), **body)
        created = answer.get("notifications") or [answer["notification"]]
        for n in created:
            assert n["tenant_id"] == tenant
            users = USERS if n["user_id"] is None else [n["user_id"]]
            for user in users:
                if (tenant, user) in expected:
                    expected[tenant, user].append(n["id"])
        return answer

    bodies = []
    for i in range(150):
        tenant = rng.choice(TENANTS)
        kind = rng.random()
        if kind < 0.5:
            body = {"user_id": rng.choice(USERS + ("offline",))}
        elif kind < 0.8:
            body = {"user_ids": rng.sample(USERS + ("offline",), rng.randint(1, 3))}
        else:
            body = {"broadcast": True}
        bodies.append((tenant, {**body, "title": f"#{i}"}))
    # Sent concurrently, a few at a time, so that creates share transactions.
    for start in range(0, len(bodies), 10):
        await asyncio.gather(*(send(t, b) for t, b in bodies[start:start + 10]))
    # A last broadcast per tenant marks the end: anything extra would arrive before it.
    ends = {tenant: (await send(tenant, {"broadcast": True, "title": "end"}))["notification"]["id"]
            for tenant in TENANTS}

    async def drain(client, end):
        got = []
        while not got or got[-1] != end:
            got.append((await client.notifications(1))[0]["id"])
        return got

    for (tenant, user), conns in clients.items():
        want = expected[tenant, user]
        assert want[-1] == ends[tenant]
        for conn in conns:
            got = await drain(conn, ends[tenant])
            assert got == sorted(want), (tenant, user, set(got) ^ set(want))
            assert len(set(got)) == len(got)
    # The inbox agrees with what was pushed.
    for (tenant, user), want in expected.items():
        inbox = await api.json("GET", "/api/notifications?limit=200",
                               tok=token(tenant=tenant, user=user))
        assert [n["id"] for n in inbox["notifications"]] == sorted(want, reverse=True)
    for conns in clients.values():
        for conn in conns:
            conn.close()
