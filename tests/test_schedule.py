"""Scheduled notifications end to end, on both deployments: `send_at` on a create (202 and a
schedule id), GET /api/scheduled, DELETE /api/scheduled/{id}, and the send at its time with a
new id, through the usual push. The scheduler's clock is moved instead of waiting."""

from __future__ import annotations

import datetime
import json
import time

import pytest

from .clients import Api, SSEClient, WSClient, eventually, inbox_ids, token
from .test_admin import _login

ADMIN = token(user="root", role="admin")
SERVICE = token(user="backend", role="service")
OTHER_SERVICE = token(tenant="globex", user="backend", role="service")
ALICE, BOB = token(user="alice"), token(user="bob")


def at(seconds: float) -> str:
    """An ISO 8601 time `seconds` from now."""
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    return when.isoformat().replace("+00:00", "Z")


def move_clock(server, seconds: float) -> None:
    scheduler = server.services.scheduler
    scheduler.clock = lambda: time.time() + seconds
    scheduler.wake()


@pytest.mark.gen_test(timeout=30)
async def test_schedule_list_cancel_then_sent_at_its_time_with_a_later_id(server, api):
    ws = await WSClient.open(server.port, ALICE)
    sse = await SSEClient.open(server.port, ALICE)
    await sse.next_of("connected")
    when = at(600)
    body = await api.json("POST", "/api/notifications",
                          {"user_id": "alice", "title": "Stand-up", "send_at": when,
                           "group": "daily", "data": {"room": 3}}, SERVICE, expect=202)
    entry = body["scheduled"]
    assert entry["id"].startswith("sch_") and entry["user_id"] == "alice"
    assert (entry["title"], entry["group"], entry["data"]) == ("Stand-up", "daily", {"room": 3})
    sent_at = datetime.datetime.fromisoformat(entry["send_at"]).timestamp()
    assert abs(sent_at - datetime.datetime.fromisoformat(when).timestamp()) < 0.002
    # a second one, cancelled: gone from the list, and a second cancel is a 404
    other = (await api.json("POST", "/api/notifications",
                            {"broadcast": True, "title": "Never", "send_at": at(300)},
                            ADMIN, expect=202))["scheduled"]
    assert other["broadcast"] is True
    listed = (await api.json("GET", "/api/scheduled", tok=ADMIN))["scheduled"]
    assert [e["id"] for e in listed] == [other["id"], entry["id"]]  # soonest first
    await api.json("DELETE", f"/api/scheduled/{other['id']}", tok=SERVICE, expect=204)
    await api.json("DELETE", f"/api/scheduled/{other['id']}", tok=SERVICE, expect=404)
    assert [e["id"] for e in (await api.json("GET", "/api/scheduled", tok=SERVICE))
            ["scheduled"]] == [entry["id"]]
    # nothing is stored or pushed before its time
    assert await inbox_ids(server.port, ALICE) == []
    before = (await api.send(SERVICE, user_id="alice", title="now"))["notification"]["id"]
    assert (await ws.next_of("notification"))["notification"]["id"] == before
    assert (await sse.notifications(1))[0]["id"] == before

    move_clock(server, 601)
    [pushed] = [f["notification"] for f in [await ws.next_of("notification")]]
    assert pushed["id"] > before and pushed["title"] == "Stand-up"
    assert pushed["group"] == "daily" and pushed["data"] == {"room": 3}
    assert (await sse.notifications(1)) == [pushed]
    assert await inbox_ids(server.port, ALICE) == [before, pushed["id"]]
    assert (await api.json("GET", "/api/scheduled", tok=ADMIN))["scheduled"] == []
    await api.json("DELETE", f"/api/scheduled/{entry['id']}", tok=ADMIN, expect=404)
    # the cancelled one never comes: the next notification follows directly
    after = (await api.send(SERVICE, user_id="alice", title="after"))["notification"]["id"]
    assert (await ws.next_of("notification"))["notification"]["id"] == after
    ws.close()
    sse.close()


@pytest.mark.gen_test(timeout=30)
async def test_user_ids_schedule_sends_one_per_user_and_answers_as_requested(server, api):
    entry = (await api.json("POST", "/api/notifications",
                            {"user_ids": ["alice", "bob"], "title": "Both",
                             "send_at": at(60)}, SERVICE, expect=202))["scheduled"]
    assert entry["user_ids"] == ["alice", "bob"]
    move_clock(server, 61)

    async def both() -> bool:
        return len(await inbox_ids(server.port, ALICE)) == 1 and \
            len(await inbox_ids(server.port, BOB)) == 1
    await eventually(both)


@pytest.mark.gen_test(timeout=30)
async def test_who_may_schedule_list_and_cancel(server, api):
    entry = (await api.json("POST", "/api/notifications",
                            {"user_id": "alice", "title": "x", "send_at": at(60)},
                            SERVICE, expect=202))["scheduled"]
    await api.json("POST", "/api/notifications",
                   {"user_id": "alice", "title": "x", "send_at": at(60)}, ALICE, expect=403)
    await api.json("GET", "/api/scheduled", tok=ALICE, expect=403)
    await api.json("DELETE", f"/api/scheduled/{entry['id']}", tok=ALICE, expect=403)
    await api.json("GET", "/api/scheduled", expect=401)
    # another tenant neither sees nor cancels it
    assert (await api.json("GET", "/api/scheduled", tok=OTHER_SERVICE))["scheduled"] == []
    await api.json("DELETE", f"/api/scheduled/{entry['id']}", tok=OTHER_SERVICE, expect=404)
    await api.json("DELETE", "/api/scheduled/sch_unknown", tok=SERVICE, expect=404)
    assert len((await api.json("GET", "/api/scheduled", tok=SERVICE))["scheduled"]) == 1


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("send_at, problem", [
    (-5, "in the past"),
    (31 * 86400, "at most 30 days ahead"),
    ("tomorrow", "ISO 8601"),
    (12, "ISO 8601"),
])
async def test_bad_send_at_is_a_400_naming_it(server, api, send_at, problem):
    value = at(send_at) if isinstance(send_at, int) and send_at != 12 else send_at
    r = await api.call("POST", "/api/notifications",
                       {"user_id": "alice", "title": "x", "send_at": value}, SERVICE)
    assert r.code == 400
    error = json.loads(r.body)["error"]
    assert error["field"] == "send_at" and problem in error["message"]
    assert (await api.json("GET", "/api/scheduled", tok=SERVICE))["scheduled"] == []


@pytest.mark.gen_test(timeout=30)
async def test_idempotency_key_on_a_scheduling_post(server, api):
    headers = {"Idempotency-Key": "stand-up-monday"}
    body = {"user_id": "alice", "title": "Stand-up", "send_at": at(60)}
    first = await api.call("POST", "/api/notifications", body, SERVICE, headers=headers)
    again = await api.call("POST", "/api/notifications", {**body, "send_at": at(90)},
                           SERVICE, headers=headers)
    assert first.code == again.code == 202
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert json.loads(again.body) == json.loads(first.body)
    listed = (await api.json("GET", "/api/scheduled", tok=SERVICE))["scheduled"]
    assert [e["id"] for e in listed] == [json.loads(first.body)["scheduled"]["id"]]
    # once sent, the same key still answers the first result and schedules nothing
    move_clock(server, 61)

    async def sent() -> bool:
        return len(await inbox_ids(server.port, ALICE)) == 1
    await eventually(sent)
    third = await api.call("POST", "/api/notifications", body, SERVICE, headers=headers)
    assert third.code == 202 and json.loads(third.body) == json.loads(first.body)
    assert (await api.json("GET", "/api/scheduled", tok=SERVICE))["scheduled"] == []


@pytest.mark.gen_test(timeout=30)
async def test_the_tenant_page_lists_what_is_scheduled(start_server):
    server = await start_server(admin_password="pw")
    api = Api(server.port)
    cookie = await _login(api, "pw")
    page = await api.call("GET", "/admin/tenants/acme", headers={"Cookie": cookie})
    assert page.code == 200 and b"Nothing scheduled" in page.body
    entry = (await api.json("POST", "/api/notifications",
                            {"user_ids": ["alice", "bob"], "title": "Quarterly <review>",
                             "group": "q3", "send_at": at(3600)}, SERVICE,
                            expect=202))["scheduled"]
    page = await api.call("GET", "/admin/tenants/acme", headers={"Cookie": cookie})
    html = page.body.decode()
    assert f'<tr data-id="{entry["id"]}">' in html
    assert "Quarterly &lt;review&gt;" in html and "alice, bob" in html and "q3" in html
    assert entry["send_at"] in html
    await api.json("DELETE", f"/api/scheduled/{entry['id']}", tok=SERVICE, expect=204)
    page = await api.call("GET", "/admin/tenants/acme", headers={"Cookie": cookie})
    assert entry["id"] not in page.body.decode()


@pytest.mark.gen_test(timeout=30)
async def test_a_scheduled_notifications_expiry_counts_from_its_send_time(server, api):
    entry = (await api.json("POST", "/api/notifications",
                            {"user_id": "alice", "title": "Code 123456", "send_at": at(3600),
                             "ttl": 300}, SERVICE, expect=202))["scheduled"]
    expires = datetime.datetime.fromisoformat(entry["expires_at"]).timestamp()
    sends = datetime.datetime.fromisoformat(entry["send_at"]).timestamp()
    assert abs(expires - (sends + 300)) < 0.01  # five minutes after it is sent, not after now
    response = await api.call("POST", "/api/notifications",
                              {"user_id": "alice", "title": "Too early", "send_at": at(3600),
                               "expires_at": at(1800)}, SERVICE)
    assert response.code == 400
    assert json.loads(response.body)["error"]["field"] == "expires_at"
