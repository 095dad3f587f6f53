"""Preferences honoured on every path: `in_app: false` keeps a type out of the user's live
WebSocket and SSE streams and their replays while the inbox keeps it, takes effect without a
restart and on another process; a webhook set to "offline" is skipped while the user is
online."""

from __future__ import annotations

import pytest

from .clients import Api, SSEClient, WSClient, eventually, inbox_ids
from .deliveries import ADMIN, ALICE, BOB, notify, settled

pytest_plugins = ["tests.peers.fixtures"]


@pytest.fixture
def settings(settings):
    """The webhook receiver here listens on loopback: allowed for these servers."""
    return settings.replace(outbound_allow=("127.0.0.1",))


async def prefs(api: Api, tok: str, channels: dict, tenant_default: bool = False) -> None:
    path = "/api/preferences" + ("?tenant_default=true" if tenant_default else "")
    await api.json("PUT", path, {"channels": channels}, tok)


async def next_title(client: WSClient | SSEClient) -> str:
    if isinstance(client, WSClient):
        return str((await client.next_of("notification"))["notification"]["title"])
    return str((await client.notifications(1))[0]["title"])


@pytest.mark.gen_test(timeout=30)
async def test_in_app_false_is_not_pushed_live_nor_replayed_but_kept(server, api):
    alice_ws = await WSClient.open(server.port, ALICE)
    alice_sse = await SSEClient.open(server.port, ALICE)
    await alice_sse.next_of("connected")
    bob = await WSClient.open(server.port, BOB)
    await prefs(api, ALICE, {"warning": {"in_app": False}})  # no restart, no reconnect

    muted = await notify(api, type="warning", title="muted")
    await notify(api, type="warning", title="to everyone", broadcast=True, user_id=None)
    shown = await notify(api, type="info", title="shown")
    for client in (alice_ws, alice_sse):
        assert await next_title(client) == "shown"  # the warnings never came
    assert await next_title(bob) == "to everyone"  # bob did not turn warnings off
    # the inbox and its counts keep them
    ids = await inbox_ids(server.port, ALICE)
    assert muted in ids and shown in ids and len(ids) == 3
    assert (await api.json("GET", "/api/notifications/stats", tok=ALICE))["total"] == 3
    # a replay leaves them out too, on both transports
    replay_ws = await WSClient.open(server.port, ALICE, since="0")
    assert await next_title(replay_ws) == "shown"
    replay_sse = await SSEClient.open(server.port, ALICE, since="0")
    assert await next_title(replay_sse) == "shown"

    # the tenant's default turns errors off for everyone; alice's own choice wins over it
    await prefs(api, ADMIN, {"error": {"in_app": False}}, tenant_default=True)
    await prefs(api, ALICE, {"error": {"in_app": True}, "warning": {"in_app": "offline"}})
    await notify(api, type="error", title="error for all", broadcast=True, user_id=None)
    await notify(api, type="warning", title="warning again")
    await notify(api, type="info", title="marker", broadcast=True, user_id=None)
    assert await next_title(alice_ws) == "error for all"
    assert await next_title(alice_ws) == "warning again"  # "offline" pushes as true does
    assert await next_title(bob) == "marker"  # bob follows the tenant: no error
    for client in (alice_ws, alice_sse, bob, replay_ws, replay_sse):
        client.close()


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("deployment", ["shared"])
async def test_a_change_reaches_another_process(start_server, deployment):
    one, two = await start_server(), await start_server()
    alice = await WSClient.open(two.port, ALICE)  # connected to the second process
    await prefs(Api(one.port), ALICE, {"warning": {"in_app": False}})  # changed on the first

    async def muted_on_two() -> bool:
        """One round through the second process: is the warning left out before a marker?"""
        await notify(Api(two.port), type="warning", title="warning")
        await notify(Api(two.port), type="info", title="marker")
        seen = []
        while not seen or seen[-1] != "marker":
            seen.append(await next_title(alice))
        return seen == ["marker"]
    await eventually(muted_on_two, step=0.05)
    assert await muted_on_two()  # and it stays so
    await prefs(Api(one.port), ALICE, {"warning": {"in_app": True}})

    async def shown_on_two() -> bool:
        await notify(Api(two.port), type="warning", title="warning")
        return await next_title(alice) == "warning"
    await eventually(shown_on_two, step=0.05)
    alice.close()


@pytest.mark.gen_test(timeout=30)
async def test_webhook_offline_is_skipped_while_the_user_is_online(server, api,
                                                                   webhook_receiver):
    made = await api.json("PUT", "/api/webhook", {"url": webhook_receiver.url}, ADMIN,
                          expect=201)
    webhook_receiver.secret = made["secret"]
    await prefs(api, ALICE, {"default": {"webhook": "offline"}})
    ws = await WSClient.open(server.port, ALICE)
    online = await notify(api, title="while online", channels=["webhook"])
    [d] = await settled(api, online)
    assert (d["channel"], d["status"], d["last_error"]) == \
        ("webhook", "skipped", "user was online")
    ws.close()

    async def offline() -> bool:
        counts = await api.json("GET", "/api/notifications/connections", tok=ALICE)
        return counts["total"] == 0
    await eventually(offline)
    away = await notify(api, title="while away", channels=["webhook"])
    [d] = await settled(api, away)
    assert (d["channel"], d["status"]) == ("webhook", "sent")
    [hook] = await webhook_receiver.inbox.arrived(1, timeout=5)
    assert hook.notification["id"] == away  # only the one sent while away
    # a user-less broadcast has no one to be online: "offline" sends as true does
    everyone = await notify(api, title="to all", broadcast=True, user_id=None,
                            channels=["webhook"])
    assert (await settled(api, everyone))[0]["status"] == "sent"
    # and the tenant's own "offline" default for bob's notification, bob online
    bob_ws = await WSClient.open(server.port, BOB)
    await prefs(api, ADMIN, {"default": {"webhook": "offline"}}, tenant_default=True)
    for_bob = await notify(api, title="bob online", user_id="bob", channels=["webhook"])
    [d] = await settled(api, for_bob)
    assert (d["status"], d["last_error"]) == ("skipped", "user was online")
    bob_ws.close()


@pytest.mark.gen_test(timeout=15)
async def test_in_app_offline_is_still_accepted(server, api):
    """The contract lists "offline" for in_app; it pushes as true does (documented)."""
    body = await api.json("PUT", "/api/preferences",
                          {"channels": {"info": {"in_app": "offline"}}}, ALICE)
    assert body["channels"]["info"]["in_app"] == "offline"
    r = await api.call("PUT", "/api/preferences",
                       {"channels": {"info": {"in_app": "unacknowledged"}}}, ALICE)
    assert r.code == 400
    ws = await WSClient.open(server.port, ALICE)
    await notify(api, title="pushed")
    assert await next_title(ws) == "pushed"
    ws.close()
