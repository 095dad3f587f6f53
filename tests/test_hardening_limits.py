"""Request bodies and create rates: --max-body-kib answers 413 before reading the body,
--tenant-rate answers 429 with Retry-After, and one tenant at its limit never slows another."""

import asyncio
import json

import pytest
from tornado.tcpclient import TCPClient

from .clients import WAIT, token


async def _raw_request(port: int, head: str) -> tuple[int, bytes]:
    """Sends only the request head (no body at all) and reads the answer."""
    stream = await TCPClient().connect("127.0.0.1", port, timeout=WAIT)
    try:
        stream.write(head.encode())
        answer = await asyncio.wait_for(stream.read_until(b"\r\n\r\n"), WAIT)
        status = int(answer.split()[1])
        length = int(next(line.split(b":")[1] for line in answer.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        body = await asyncio.wait_for(stream.read_bytes(length), WAIT)
        return status, body
    finally:
        stream.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_large_body_is_refused_before_it_is_read(start_server):
    server = await start_server(max_body_kib=16)
    for auth in ("", f"Authorization: Bearer {token(role='service')}\r\n",
                 "Authorization: Bearer not-a-token\r\n"):
        status, body = await _raw_request(
            server.port, f"POST /api/notifications?token=x HTTP/1.1\r\nHost: x\r\n{auth}"
                         f"Content-Type: application/json\r\nContent-Length: {10 * 2**20}\r\n\r\n")
        assert status == 413
        assert json.loads(body)["error"]["code"] == "too_large"


@pytest.mark.gen_test(timeout=30)
async def test_default_limit_lets_ordinary_bodies_through(server, api):
    response = await api.call("POST", "/api/notifications", tok=token(role="service"),
                              raw=json.dumps({"user_id": "a", "title": "t",
                                              "data": {"s": "x" * 60_000}}).encode())
    assert response.code == 201


@pytest.mark.gen_test(timeout=30)
async def test_tenant_rate_limits_one_tenant_only(start_server):
    from .clients import Api
    server = await start_server(tenant_rate=2)
    api = Api(server.port)
    busy, calm = token(tenant="busy", role="service"), token(tenant="calm", role="service")

    def create(tok, i):
        return api.call("POST", "/api/notifications", {"user_id": "u", "title": f"{i}"}, tok)

    answers = await asyncio.gather(*(create(busy, i) for i in range(20)))
    codes = [a.code for a in answers]
    assert codes.count(201) <= 5 and codes.count(429) >= 15, codes
    refused = next(a for a in answers if a.code == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert json.loads(refused.body)["error"]["code"] == "rate_limited"
    # The calm tenant still has its whole burst while the busy one is refused.
    calm_answers = await asyncio.gather(*(create(calm, i) for i in range(4)))
    assert [a.code for a in calm_answers] == [201] * 4
