"""One-click unsubscribe (RFC 8058): every email tidings sends carries a signed link that turns
that type's email off for that user, on a real server with a real SMTP peer."""

from __future__ import annotations

import base64
import json
import logging
import re

import pytest
from tornado.httpclient import HTTPResponse

from tidings.config import Secret

from .clients import Api
from .deliveries import ALICE, SENDER, notify, profile, settled

pytest_plugins = ["tests.peers.fixtures"]

ONE_CLICK = {"Content-Type": "application/x-www-form-urlencoded"}


async def fetch(api: Api, url: str, method: str = "GET", body: str | None = None,
                html: bool = False) -> HTTPResponse:
    headers = {**(ONE_CLICK if body is not None else {}),
               **({"Accept": "text/html"} if html else {})}
    return await api.http.fetch(url, method=method, body=body, headers=headers,
                                raise_error=False, follow_redirects=False)


def link_of(message) -> str:
    found = re.fullmatch(r"<(https?://\S+)>", message["List-Unsubscribe"])
    assert found, message["List-Unsubscribe"]
    return found[1]


def forged(url: str, **change: str) -> str:
    """The same link with the tenant, user or type in it changed, the signature kept."""
    base, _, token = url.rpartition("/")
    payload, _, mac = token.partition(".")
    tenant, user, type_ = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    values = {"tenant": tenant, "user": user, "type": type_, **change}
    raw = json.dumps([values["tenant"], values["user"], values["type"]], separators=(",", ":"))
    return f"{base}/{base64.urlsafe_b64encode(raw.encode()).rstrip(b'=').decode()}.{mac}"


async def email_preference(api: Api, type_: str) -> object:
    prefs = await api.json("GET", "/api/preferences", tok=ALICE)
    return prefs["channels"].get(type_, {}).get("email")


@pytest.mark.gen_test(timeout=20)
async def test_a_one_click_post_turns_that_type_of_email_off(smtp_peer, start_server, caplog):
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    api = Api(server.port)
    await profile(api, email="alice@example.com")
    await notify(api, type="warning", title="Disk full")
    [got] = await smtp_peer.inbox.arrived(1)

    assert got.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = link_of(got.message)
    assert url.startswith(f"http://127.0.0.1:{server.port}/unsubscribe/")

    # A scanner that follows the link changes nothing: GET only asks.
    page = await fetch(api, url, html=True)
    assert page.code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b'id="unsubscribe-confirm"' in page.body and b"warning" in page.body
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert json.loads((await fetch(api, url)).body) == {"type": "warning", "unsubscribed": False}
    assert await email_preference(api, "warning") is None

    caplog.set_level(logging.INFO, logger="tornado.access")
    done = await fetch(api, url, "POST", "List-Unsubscribe=One-Click")
    assert done.code == 200, done.body
    assert json.loads(done.body) == {"type": "warning", "unsubscribed": True}
    assert await email_preference(api, "warning") is False
    token = url.rpartition("/")[2]
    lines = [r.getMessage() for r in caplog.records]
    assert any("POST /unsubscribe/[redacted]" in line for line in lines), lines
    assert not any(token in line for line in lines)

    # Another warning's email is skipped (the user turned it off); an info email still goes.
    warning = await notify(api, type="warning", title="Disk full again")
    info = await notify(api, type="info", title="Build finished")
    [d] = await settled(api, info)
    assert d["status"] == "sent"
    [skipped] = await settled(api, warning)
    assert (skipped["channel"], skipped["status"], skipped["last_error"]) == \
        ("email", "skipped", "turned off in the user's preferences")
    second = (await smtp_peer.inbox.arrived(2))[1]
    assert second.message["Subject"] == "Build finished"
    assert link_of(second.message) != url  # a link of its own type
    assert len(smtp_peer.inbox) == 2

    # Unsubscribing again changes nothing and still answers 200 (mail providers retry).
    assert (await fetch(api, url, "POST", "List-Unsubscribe=One-Click")).code == 200


@pytest.mark.gen_test(timeout=20)
async def test_a_tampered_or_made_up_link_is_refused(smtp_peer, start_server):
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER,
                                public_url="https://notify.example.com/")
    api = Api(server.port)
    await profile(api, email="alice@example.com")
    await notify(api, type="warning", title="Disk full")
    [got] = await smtp_peer.inbox.arrived(1)
    url = link_of(got.message)
    assert url.startswith("https://notify.example.com/unsubscribe/")  # --public-url
    local = url.replace("https://notify.example.com", api.base)

    for bad in (forged(local, user="bob"), forged(local, type="info"),
                forged(local, tenant="other"), f"{api.base}/unsubscribe/not-a-link",
                local[:-3] + "AAA"):
        refused = await fetch(api, bad, "POST", "List-Unsubscribe=One-Click")
        assert refused.code == 403, (bad, refused.body)
        assert json.loads(refused.body)["error"]["code"] == "invalid_signature"
        page = await fetch(api, bad, html=True)
        assert page.code == 403 and b'id="unsubscribe-error"' in page.body
    # Without the one-click body it is refused too, naming what is missing.
    missing = await fetch(api, local, "POST", "")
    assert missing.code == 400 and json.loads(missing.body)["error"]["field"] == \
        "List-Unsubscribe"
    assert await email_preference(api, "warning") is None
    assert await email_preference(api, "info") is None
