"""What an attack on a fresh server found, each now refused: numbers JSON cannot carry,
amplified batches, rate limits dodged by batching, another tenant's push endpoint, forged log
lines, loosely parsed numbers, a second tenant_id, oversized or odd token claims."""

from __future__ import annotations

import io
import json
import logging
import time

import jwt
import pytest

from tidings.logs import TextFormatter
from tidings.redis_url import prefix

from .clients import SECRET, Api, SSEClient, token

pytest_plugins = ["tests.peers.fixtures"]

SERVICE = token(user="backend", role="service")
ALICE = token(user="alice")


async def refused(api: Api, body: bytes, tok: str = SERVICE) -> tuple[int, dict]:  # type: ignore[type-arg]
    response = await api.call("POST", "/api/notifications", raw=body, tok=tok,
                              headers={"Content-Type": "application/json"})
    return response.code, json.loads(response.body)


@pytest.mark.gen_test
@pytest.mark.parametrize("number", ["1e999", "-1e999", "1E400"])
async def test_a_number_too_large_for_a_float_is_refused_not_sent_as_infinity(api, number):
    code, body = await refused(api, f'{{"broadcast": true, "title": "x", "data": {{"n": '
                                    f'{number}}}}}'.encode())
    assert code == 400 and body["error"]["field"] == "body", body
    inbox = await api.json("GET", "/api/notifications", tok=ALICE)
    assert inbox["notifications"] == []


@pytest.mark.gen_test
async def test_data_copied_to_many_recipients_is_bounded(api):
    big = {"title": "x", "user_ids": [f"u{i}" for i in range(1000)], "data": {"k": "v" * 2000}}
    code, body = await refused(api, json.dumps(big).encode())
    assert code == 400 and body["error"]["field"] == "data"
    small = {**big, "data": {"k": "v" * 500}}  # 1000 x ~510 bytes: under 1 MiB
    assert (await api.call("POST", "/api/notifications", small, SERVICE)).code == 201


@pytest.mark.gen_test
async def test_every_notification_of_a_batch_counts_against_the_tenant_rate(start_server):
    server = await start_server(tenant_rate=2.0)  # bursts of 4
    api = Api(server.port)
    batch = await api.call("POST", "/api/notifications",
                           {"title": "x", "user_ids": [f"u{i}" for i in range(40)]}, SERVICE)
    assert batch.code == 201  # the bucket had tokens: the batch overdraws it ...
    after = await api.call("POST", "/api/notifications", {"title": "y", "user_id": "u"},
                           SERVICE)
    assert after.code == 429  # ... and the tenant waits until the debt is paid
    assert int(after.headers["Retry-After"]) >= 15
    other = token(tenant="globex", user="backend", role="service")
    assert (await api.call("POST", "/api/notifications", {"title": "z", "user_id": "g"},
                           other, headers={"X-Tenant-ID": "globex"})).code == 201


@pytest.mark.gen_test
async def test_a_push_endpoint_registered_in_one_tenant_cannot_be_taken_in_another(
        start_server, push_service):
    api = Api((await start_server(outbound_allow=("127.0.0.1",))).port)  # the push peer's
    body = push_service.subscribe("BAAA").subscription.to_json()
    assert (await api.call("POST", "/api/push/subscriptions", body, ALICE)).code == 201
    eve = token(tenant="evil", user="eve")
    taken = await api.call("POST", "/api/push/subscriptions", body, eve)
    assert taken.code == 409 and json.loads(taken.body)["error"]["field"] == "endpoint"


@pytest.mark.gen_test
@pytest.mark.parametrize("user", ["zed\n2026-11-30 19:30:00 CRITICAL forged", "a\rb", "a\x85b",
                                  "a\u2028b", "x" * 201])
async def test_ids_with_line_breaks_or_too_long_are_refused(api, user):
    code, body = await refused(api, json.dumps({"user_id": user, "title": "x"}).encode())
    assert code == 400 and body["error"]["field"] == "user_id"


def test_line_breaks_in_a_log_message_never_start_a_line():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    log = logging.getLogger("tests.abuse")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("login from %s", "6.6.6.6\n2026-11-30 19:30:00 CRITICAL forged\r\u2028x")
    finally:
        log.removeHandler(handler)
    assert out.getvalue().count("\n") == 1 and "\\n2026" in out.getvalue()


@pytest.mark.gen_test
@pytest.mark.parametrize("query", ["since=١", "since=1_0", "since=%2B1", "last_event_id=%2B1"])
async def test_cursors_are_ascii_digits(server, query):
    refused_stream = await SSEClient.open(server.port, ALICE, **dict([query.split("=")]))
    assert refused_stream.status == 400


@pytest.mark.gen_test
@pytest.mark.parametrize("limit", ["５", "%2B5", "5_0", "-0"])
async def test_limits_are_ascii_digits(api, limit):
    response = await api.call("GET", f"/api/notifications?limit={limit}", tok=ALICE)
    assert response.code == 400 and json.loads(response.body)["error"]["field"] == "limit"


@pytest.mark.gen_test
async def test_every_tenant_id_named_must_be_the_tokens(api):
    evil = token(tenant="evil", user="eve")
    response = await api.call("GET", "/api/notifications?tenant_id=acme&tenant_id=evil",
                              tok=evil)
    assert response.code == 403


@pytest.mark.gen_test
@pytest.mark.parametrize("claims", [
    {"tenant_id": "t" * 20_000},
    {"tenant_id": "acme\nx"},
    {"sub": "alice\u2028x"},
    {"exp": "9999999999"},
])
async def test_odd_token_claims_are_refused(api, claims):
    payload = {"sub": "alice", "tenant_id": "acme", "exp": int(time.time()) + 600, **claims}
    tok = jwt.encode(payload, SECRET, algorithm="HS256")
    response = await api.call("GET", "/api/notifications", tok=tok)
    assert response.code == 401, response.body


def test_the_redis_prefix_follows_the_database_however_the_url_names_it():
    assert prefix("redis://127.0.0.1:6379/1") == prefix("redis://127.0.0.1:6379?db=1") \
        == "tidings:1:"
    assert prefix("redis://127.0.0.1:6379") == "tidings:0:"
