"""`group` and `actions` end to end, on both deployments: validated (400 naming the field),
stored and returned over REST, live push frames and replays, `?group=` filtering, and carried
into web push payloads (the push peer decrypts) and email links (the SMTP peer)."""

from __future__ import annotations

import json

import pytest

from tidings.config import Secret

from .clients import Api, SSEClient, WSClient
from .deliveries import ALICE, SENDER, SERVICE, notify, profile, settled

pytest_plugins = ["tests.peers.fixtures"]

ACTIONS = [{"label": "Open build", "url": "https://ci.example.com/b/7"},
           {"label": "Logs", "url": "http://ci.example.com/b/7/log?tail=100&x=1"}]


@pytest.mark.gen_test(timeout=30)
async def test_group_and_actions_travel_with_the_notification(server, api):
    ws = await WSClient.open(server.port, ALICE)
    n = (await api.send(SERVICE, user_id="alice", title="Build 7 running", group="build-7",
                        actions=ACTIONS))["notification"]
    assert (n["group"], n["actions"]) == ("build-7", ACTIONS)
    assert (await ws.next_of("notification"))["notification"] == n
    other = (await api.send(SERVICE, broadcast=True, title="Build 8", group="build-8"))
    plain = (await api.send(SERVICE, user_id="alice", title="plain"))["notification"]
    assert "group" not in plain and "actions" not in plain  # as small as before
    # replay carries them too, on both transports
    sse = await SSEClient.open(server.port, ALICE, since="0")
    replayed = await sse.notifications(3)
    assert replayed[0] == n and replayed[1]["group"] == "build-8"
    ws2 = await WSClient.open(server.port, ALICE, since="0")
    assert (await ws2.next_of("notification"))["notification"] == n
    # ?group= filters the inbox
    page = await api.json("GET", "/api/notifications?group=build-7", tok=ALICE)
    assert page["notifications"] == [n]
    page = await api.json("GET", "/api/notifications?group=build-8", tok=ALICE)
    assert [x["id"] for x in page["notifications"]] == [other["notification"]["id"]]
    page = await api.json("GET", "/api/notifications?group=none-such", tok=ALICE)
    assert page["notifications"] == []
    r = await api.call("GET", "/api/notifications?group=" + "g" * 201, tok=ALICE)
    assert r.code == 400 and json.loads(r.body)["error"]["field"] == "group"
    for client in (ws, ws2, sse):
        client.close()


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("extra, field", [
    ({"group": "g" * 201}, "group"),
    ({"group": 7}, "group"),
    ({"actions": {"label": "x"}}, "actions"),
    ({"actions": [{"label": "a", "url": "https://a.example"}] * 4}, "actions"),
    ({"actions": ["https://a.example"]}, "actions[0]"),
    ({"actions": [{"label": "ok", "url": "https://a.example"},
                  {"label": "x", "url": "javascript:alert(1)"}]}, "actions[1].url"),
    ({"actions": [{"label": "x", "url": "ftp://a.example/f"}]}, "actions[0].url"),
    ({"actions": [{"label": "x", "url": "https://"}]}, "actions[0].url"),
    ({"actions": [{"label": "x", "url": "/relative"}]}, "actions[0].url"),
    ({"actions": [{"label": "x", "url": "https://a.example/a b"}]}, "actions[0].url"),
    ({"actions": [{"label": "x", "url": "https://a.example:99999/"}]}, "actions[0].url"),
    ({"actions": [{"label": "x", "url": "https://a.example/" + "a" * 2048}]},
     "actions[0].url"),
    ({"actions": [{"label": "x"}]}, "actions[0].url"),
    ({"actions": [{"label": "L" * 41, "url": "https://a.example"}]}, "actions[0].label"),
    ({"actions": [{"label": " ", "url": "https://a.example"}]}, "actions[0].label"),
    ({"actions": [{"label": 5, "url": "https://a.example"}]}, "actions[0].label"),
    ({"actions": [{"label": "a\nb", "url": "https://a.example"}]}, "actions[0].label"),
    ({"actions": [{"url": "https://a.example"}]}, "actions[0].label"),
    ({"actions": [{"label": "x", "url": "https://a.example", "method": "POST"}]},
     "actions[0].method"),
])
async def test_bad_group_or_actions_is_a_400_naming_the_field(server, api, extra, field):
    for target in ({"user_id": "alice"}, {"broadcast": True, "send_at": "2099-01-01T00:00:00Z"}):
        r = await api.call("POST", "/api/notifications", {**target, "title": "x", **extra},
                           SERVICE)
        assert r.code == 400, r.body
        assert json.loads(r.body)["error"]["field"] == field
    assert (await api.json("GET", "/api/notifications", tok=ALICE))["notifications"] == []


@pytest.fixture
def settings(settings):
    """The push service here listens on loopback: allowed for these servers."""
    return settings.replace(outbound_allow=("127.0.0.1",))


@pytest.mark.gen_test(timeout=15)
async def test_actions_in_the_web_push_payload(push_service, start_server):
    server = await start_server(vapid_subject="mailto:ops@example.com")
    api = Api(server.port)
    key = (await api.json("GET", "/api/push/vapid-public-key"))["key"]
    browser = push_service.subscribe(key)
    await api.json("POST", "/api/push/subscriptions", browser.subscription.to_json(), ALICE,
                   expect=201)
    nid = await notify(api, title="Build 7", group="build-7", actions=ACTIONS)
    [push] = await push_service.inbox.arrived(1, timeout=5)
    assert (push.payload["id"], push.payload["group"], push.payload["actions"]) == \
        (nid, "build-7", ACTIONS)
    assert (await settled(api, nid))[0]["status"] == "sent"


@pytest.mark.gen_test(timeout=15)
async def test_actions_as_links_in_email(smtp_peer, start_server):
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    api = Api(server.port)
    await profile(api, email="alice@example.com")
    nid = await notify(api, title="Build 7", message="passed", actions=ACTIONS)
    [got] = await smtp_peer.inbox.arrived(1, timeout=5)
    text = got.message.get_body(("plain",)).get_content()
    html = got.message.get_body(("html",)).get_content()
    assert "Open build: https://ci.example.com/b/7" in text
    assert "Logs: http://ci.example.com/b/7/log?tail=100&x=1" in text
    assert '<a href="https://ci.example.com/b/7">Open build</a>' in html
    assert '<a href="http://ci.example.com/b/7/log?tail=100&amp;x=1">Logs</a>' in html
    assert (await settled(api, nid))[0]["status"] == "sent"
