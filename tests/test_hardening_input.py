"""Input that cannot be stored or counted: lone surrogates, NUL, deep nesting, huge ids. One
tenant's bad request is its own 400 and never fails another tenant's creates."""

import asyncio
import json

import pytest

from .clients import SSEClient, WSClient, token

BIG = str(2**63)


def _raw(value) -> bytes:
    """JSON with lone surrogates kept as escapes (json.dumps writes them that way)."""
    return json.dumps(value).encode()


def _field(response) -> str:
    return json.loads(response.body)["error"].get("field", "")


@pytest.mark.gen_test(timeout=30)
async def test_bad_text_from_one_tenant_never_fails_another(server, api):
    good = token(tenant="acme", user="svc", role="service")
    bad = token(tenant="globex", user="svc", role="service")

    def create(tok, body):
        return api.call("POST", "/api/notifications", tok=tok, raw=_raw(body))

    calls = []
    for i in range(20):
        calls.append(create(good, {"user_id": "alice", "title": f"ok {i}"}))
        calls.append(create(bad, {"user_id": "bob", "title": "bad \ud800"}))
        calls.append(create(bad, {"broadcast": True, "title": "t", "data": {"k": ["\udfff"]}}))
        calls.append(create(bad, {"user_id": "bob", "title": "nul \x00"}))
    answers = await asyncio.gather(*calls)
    for i, response in enumerate(answers):
        if i % 4 == 0:
            assert response.code == 201, response.body
        else:
            assert response.code == 400, response.body
    assert _field(answers[1]) == "title"
    assert _field(answers[2]) == "data.k[0]"
    inbox = await api.json("GET", "/api/notifications?limit=50",
                           tok=token(tenant="acme", user="alice"))
    assert len(inbox["notifications"]) == 20
    # The bad tenant's inbox still answers, and holds nothing of the refused creates.
    other = await api.json("GET", "/api/notifications", tok=token(tenant="globex", user="bob"))
    assert other["notifications"] == []


@pytest.mark.gen_test(timeout=30)
async def test_keys_depth_and_size_of_data(server, api):
    svc = token(role="service")

    async def create(body, expect=400):
        response = await api.call("POST", "/api/notifications", tok=svc, raw=_raw(body))
        assert response.code == expect, response.body
        return _field(response) if expect == 400 else None

    assert (await create({"user_id": "a", "title": "t", "data": {"\ud800": 1}})) == "data"
    nested: dict = {}
    inner = nested
    for _ in range(32):  # data is level 1: 33 levels in all
        inner["x"] = {}
        inner = inner["x"]
    assert (await create({"user_id": "a", "title": "t", "data": nested})).startswith("data")
    ok: dict = {}
    inner = ok
    for _ in range(31):
        inner["x"] = {}
        inner = inner["x"]
    await create({"user_id": "a", "title": "t", "data": ok}, expect=201)
    assert await create({"user_id": "a", "title": "t", "data": {"s": "é" * 40_000}}) == "data"
    await create({"user_id": "a", "title": "t", "data": {"s": "x" * 60_000}}, expect=201)
    # Deeper than any parser should follow: a 400, never a 500.
    response = await api.call("POST", "/api/notifications", tok=svc,
                              raw=b"[" * 100_000 + b"]" * 100_000)
    assert response.code == 400
    response = await api.call("POST", "/api/notifications", tok=svc,
                              raw=b'{"user_id":"a","title":"t","data":{"n":NaN}}')
    assert response.code == 400


@pytest.mark.gen_test(timeout=30)
async def test_ids_and_cursors_beyond_64_bits(server, api):
    alice = token()
    for path, name in ((f"/api/notifications?before={BIG}", "before"),
                       (f"/api/notifications?limit={BIG}", "limit"),
                       (f"/api/notifications/stream?since={BIG}", "since"),
                       (f"/api/notifications/stream?last_event_id={BIG}", "last_event_id")):
        response = await api.call("GET", path, tok=alice)
        assert response.code == 400, (path, response.body)
        assert _field(response) == name
    for method, path in (("DELETE", f"/api/notifications/{BIG}"),
                         ("POST", f"/api/notifications/{BIG}/read"),
                         ("GET", f"/api/notifications/{BIG}/deliveries")):
        response = await api.call(method, path, tok=alice)
        assert response.code == 400, (path, response.body)
        assert _field(response) == "id"
    sse = await SSEClient.open(server.port, alice, headers={"Last-Event-ID": BIG})
    assert sse.status == 400 and sse.error()["error"]["field"] == "Last-Event-ID"
    response = await api.call("GET", f"/ws/notifications?token={alice}&since={BIG}")
    assert response.code == 400 and _field(response) == "since"


@pytest.mark.gen_test(timeout=30)
async def test_bad_frames_leave_the_websocket_open(server, api):
    ws = await WSClient.open(server.port, token())
    for frame in ('{"type": "mark_read", "id": ' + BIG + '}', "[" * 10_000 + "]" * 10_000,
                  '{"type": "mark_read", "id": 1, "x": "\\ud800"}', "nope"):
        ws.send(frame)
        answer = await ws.next_of("error")
        assert answer["error"]["code"] in ("invalid_request", "invalid_json"), answer
    ws.send({"type": "ping"})
    assert (await ws.next_of("pong"))["type"] == "pong"
    ws.close()


@pytest.mark.gen_test(timeout=30)
async def test_token_claims_and_tenant_names(server, api):
    response = await api.call("GET", "/api/notifications", tok=token(user="a\ud800"))
    assert response.code == 401
    response = await api.call("GET", "/api/notifications", tok=token(tenant="a\x00b"))
    assert response.code == 401
    alice = token()
    response = await api.call("GET", "/api/notifications?tenant_id=globex", tok=alice,
                              headers={"X-Tenant-ID": "acme"})
    assert response.code == 403
    assert json.loads(response.body)["error"]["code"] == "tenant_mismatch"
    response = await api.call("GET", "/api/notifications?tenant_id=acme", tok=alice,
                              headers={"X-Tenant-ID": "acme"})
    assert response.code == 200
    response = await api.call("GET", "/api/notifications?unread=%00", tok=alice)
    assert response.code == 400 and _field(response) == "unread"
    response = await api.call("GET", "/api/users/a%00b", tok=alice)
    assert response.code == 400


@pytest.mark.gen_test
async def test_numbers_too_long_for_any_id_are_a_400_naming_them(server, api):
    huge = "9" * 5000  # past what int() takes from a string at all
    admin = token(user="root", role="admin")
    for path, field in [(f"/api/notifications?limit={huge}", "limit"),
                        (f"/api/notifications?before={huge}", "before"),
                        (f"/api/notifications/{huge}/receipts", "id"),
                        (f"/api/notifications/{huge}/deliveries", "id"),
                        (f"/api/suppressions?limit={huge}", "limit"),
                        ("/api/suppressions?limit=%C2%B2", "limit"),
                        ("/api/suppressions?limit=%D9%A1", "limit")]:
        response = await api.call("GET", path, tok=admin)
        assert response.code == 400, (path, response.code)
        assert json.loads(response.body)["error"]["field"] == field, path
    sse = await SSEClient.open(server.port, token(), since=huge)
    assert (sse.status, sse.error()["error"]["field"]) == (400, "since")
