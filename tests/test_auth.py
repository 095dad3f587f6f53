"""Every way a token can be wrong, on REST, on the WebSocket handshake and on the SSE stream."""

import base64
import hashlib
import hmac
import json
import logging
import time
import types

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from tidings import errors

from .clients import SECRET, Api, SSEClient, WSClient, token

TRANSPORTS = ["rest", "websocket", "sse"]


async def attempt(transport, port, tok, header=None, query=None, bearer=True):
    """(status, JSON body) of one authenticated request; 200 means let in."""
    params = {}
    if tok and (transport != "rest" or not bearer):
        params["token"] = tok
    if query:
        params["tenant_id"] = query
    headers = {"X-Tenant-ID": header} if header else {}
    qs = "&".join(f"{k}={v}" for k, v in params.items())
    if transport == "rest":
        response = await Api(port).call("GET", "/api/notifications?" + qs,
                                         tok=tok if bearer else None, headers=headers)
        return response.code, json.loads(response.body)
    if transport == "websocket":
        url = f"ws://127.0.0.1:{port}/ws/notifications?{qs}"
        try:
            conn = await websocket_connect(HTTPRequest(url, headers=headers))
        except HTTPClientError as e:
            return e.code, json.loads(e.response.body)
        hello = json.loads(await conn.read_message())
        conn.close()
        return 200, hello
    sse = await SSEClient.open(port, headers=headers, **params)
    if sse.status != 200:
        return sse.status, sse.error()
    hello = await sse.event()
    sse.close()
    return 200, hello["data"]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def handmade(header: dict, claims: dict, key: bytes | None, digest=hashlib.sha256) -> str:
    """A JWT put together by hand (HMAC-signed or unsigned), for forgeries PyJWT refuses."""
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    sig = _b64(hmac.new(key, signing.encode(), digest).digest()) if key else ""
    return f"{signing}.{sig}"


def claims(**changes):
    base = {"sub": "alice", "tenant_id": "acme", "role": "user", "exp": int(time.time()) + 600}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


BAD_TOKENS = {
    "missing": None,
    "garbage": "not.a.token",
    "expired": token(exp=int(time.time()) - 60),
    "bad signature": token(secret="another-secret-that-is-long-enough-too!!"),
    "alg none": handmade({"alg": "none", "typ": "JWT"}, claims(), None),
    "alg None spelled oddly": handmade({"alg": "None", "typ": "JWT"}, claims(), None),
    "HS512": handmade({"alg": "HS512", "typ": "JWT"}, claims(), SECRET.encode(), hashlib.sha512),
    "no exp": jwt.encode(claims(exp=None), SECRET, algorithm="HS256"),
    "no sub": jwt.encode(claims(sub=None), SECRET, algorithm="HS256"),
    "empty sub": jwt.encode(claims(sub=""), SECRET, algorithm="HS256"),
    "no tenant": jwt.encode(claims(tenant_id=None), SECRET, algorithm="HS256"),
    "unknown role": jwt.encode(claims(role="root"), SECRET, algorithm="HS256"),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", list(BAD_TOKENS))
@pytest.mark.gen_test
async def test_a_bad_token_is_401(server, transport, case):
    status, body = await attempt(transport, server.port, BAD_TOKENS[case])
    assert status == 401, (case, body)
    assert body["error"]["code"] == "invalid_token" and body["error"]["message"]
    assert server.services.registry.stats()["total"] == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.gen_test
async def test_a_good_token_lets_in_also_within_the_leeway(server, transport):
    assert (await attempt(transport, server.port, token()))[0] == 200
    assert (await attempt(transport, server.port, token(exp=int(time.time()) - 3)))[0] == 200
    assert (await attempt(transport, server.port, token(), header="acme", query="acme"))[0] \
        == 200


@pytest.mark.gen_test
async def test_rest_takes_the_token_from_the_query_too(server):
    assert (await attempt("rest", server.port, token(), bearer=False))[0] == 200
    assert (await attempt("rest", server.port, "nope", bearer=False))[0] == 401


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("where", ["header", "query"])
@pytest.mark.gen_test
async def test_another_tenant_named_is_403(server, transport, where):
    named = {where: "globex"}
    status, body = await attempt(transport, server.port, token(tenant="acme"), **named)
    assert status == 403 and body["error"]["code"] == "tenant_mismatch"


# --- public keys: RS256 and ES256 --------------------------------------------------------

def _public_pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize("with_secret", [True, False])
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.gen_test
async def test_rs256_with_a_public_key(start_server, tmp_path, rsa_key, transport, with_secret):
    pem = _public_pem(rsa_key)
    (tmp_path / "rsa.pem").write_bytes(pem)
    changes = {} if with_secret else {"jwt_secret": None}
    server = await start_server(jwt_public_key=str(tmp_path / "rsa.pem"), **changes)
    good = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert (await attempt(transport, server.port, good))[0] == 200
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = {
        # The classic confusion: HS256 with the public key as the HMAC secret.
        "hs256 with the public key": handmade({"alg": "HS256", "typ": "JWT"}, claims(), pem),
        "another rsa key": jwt.encode(claims(), other, algorithm="RS256"),
        "alg none": handmade({"alg": "none"}, claims(), None),
        "RS512": jwt.encode(claims(), rsa_key, algorithm="RS512"),
        "PS256": jwt.encode(claims(), rsa_key, algorithm="PS256"),
    }
    for case, tok in forged.items():
        status, body = await attempt(transport, server.port, tok)
        assert status == 401 and body["error"]["code"] == "invalid_token", case
    hs = token()
    assert (await attempt(transport, server.port, hs))[0] == (200 if with_secret else 401)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.gen_test
async def test_es256_with_a_public_key(start_server, tmp_path, ec_key, rsa_key, transport):
    (tmp_path / "ec.pem").write_bytes(_public_pem(ec_key))
    server = await start_server(jwt_public_key=str(tmp_path / "ec.pem"), jwt_secret=None)
    assert (await attempt(transport, server.port,
                          jwt.encode(claims(), ec_key, algorithm="ES256")))[0] == 200
    for tok in (jwt.encode(claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"),
                jwt.encode(claims(), rsa_key, algorithm="RS256"),
                handmade({"alg": "HS256"}, claims(), _public_pem(ec_key)),
                token()):
        assert (await attempt(transport, server.port, tok))[0] == 401


# --- aud and iss ------------------------------------------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.gen_test
async def test_aud_and_iss_when_configured(start_server, transport):
    server = await start_server(jwt_audience="tidings-api", jwt_issuer="https://id.example")
    good = token(aud="tidings-api", iss="https://id.example")
    assert (await attempt(transport, server.port, good))[0] == 200
    for tok in (token(), token(aud="tidings-api"), token(iss="https://id.example"),
                token(aud="other", iss="https://id.example"),
                token(aud="tidings-api", iss="https://evil.example")):
        status, body = await attempt(transport, server.port, tok)
        assert status == 401 and body["error"]["code"] == "invalid_token"


@pytest.mark.gen_test
async def test_aud_and_iss_are_not_required_when_not_configured(server):
    assert (await attempt("rest", server.port, token(aud="x", iss="y")))[0] == 200


# --- a token never reaches a log line --------------------------------------------------------

class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()} {record.args!r}")


@pytest.mark.gen_test
async def test_a_token_never_reaches_a_log_line(server, api):
    capture = _Capture()
    loggers = [logging.getLogger(n) for n in ("tornado.access", "tidings", "tornado.general",
                                              "tornado.application")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.addHandler(capture)
    good, bad = token(user="carol"), token(user="carol", exp=int(time.time()) - 60)
    service = token(user="svc", role="service")
    try:
        ws = await WSClient.open(server.port, good, tenant_id="acme")
        sse = await SSEClient.open(server.port, good, tenant_id="acme")
        await sse.event()
        await api.send(service, user_id="carol", title="t")
        await ws.notifications(1)
        await attempt("rest", server.port, good, bearer=False)
        for transport in TRANSPORTS:
            await attempt(transport, server.port, bad)
        ws.close()
        await ws.closed()
        sse.close()
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(capture)
            lg.setLevel(level)
    text = "\n".join(capture.lines)
    assert "[redacted]" in text and "opened" in text  # the capture did see those requests
    for secret in (good, bad, service):
        assert secret not in text
        assert secret.split(".")[2] not in text  # not even the signature



def test_a_token_is_checked_once_until_it_expires(monkeypatch):
    from tidings import auth
    from tidings.config import Settings

    verifier = auth.TokenVerifier(Settings(jwt_secret=SECRET))
    now = time.time()
    tok = token(exp=int(now) + 60)
    decodes = []
    real_decode = jwt.decode
    monkeypatch.setattr(auth.jwt, "decode", lambda *a, **k: decodes.append(1) or
                        real_decode(*a, **k))
    first = verifier.verify(tok)
    assert verifier.verify(tok) == first and len(decodes) == 1  # parsed and checked once
    # Past exp and the leeway, it is not taken on trust: checked again (and PyJWT, on this
    # machine's real clock, still takes it).
    later = now + 60 + auth.LEEWAY_SECONDS + 1
    monkeypatch.setattr(auth, "time", types.SimpleNamespace(time=lambda: later))
    assert verifier.verify(tok) == first and len(decodes) == 2
    # A token that fails is never remembered: each try is checked, and refused.
    bad = tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")
    for tries in (3, 4):
        with pytest.raises(errors.TidingsError, match="signature"):
            verifier.verify(bad)
        assert len(decodes) == tries
    expired = token(exp=int(time.time()) - auth.LEEWAY_SECONDS - 5)
    with pytest.raises(errors.TidingsError, match="expired"):
        verifier.verify(expired)
