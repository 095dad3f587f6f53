"""Faults: an SMTP server that is down and comes back, a restart with retries pending, a push
subscription the push service calls gone, and channel settings that cannot work."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tornado.web

from tidings.config import Secret

from .clients import SECRET, Api, token
from .conftest import ROOT
from .deliveries import (
    ADMIN,
    ALICE,
    SENDER,
    by_channel,
    deliveries,
    notify,
    profile,
    settled,
    until,
)
from .peers.loop import Inbox, LoopThread

pytest_plugins = ["tests.peers.fixtures"]


@pytest.fixture
def settings(settings):
    """The webhook and push receivers here listen on loopback: allowed for these servers."""
    return settings.replace(outbound_allow=("127.0.0.1",))


def retried(times: int):  # type: ignore[no-untyped-def]
    """A check: the (only) delivery has been tried and queued again at least `times` times."""
    return lambda ds: len(ds) == 1 and \
        sum(h["status"] == "retry" for h in ds[0]["history"]) >= times


@pytest.mark.gen_test(timeout=10)
async def test_smtp_down_then_up_is_delivered_after_retries(smtp_peer, start_server):
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    orchestrator = server.services.orchestrator
    orchestrator.backoff_base, orchestrator.max_attempts = 0.02, 50  # retries in ms, not s
    api = Api(server.port)
    await profile(api, email="alice@example.com")
    smtp_peer.down()

    nid = await notify(api, title="While the mail server was down")
    [waiting] = await until(api, nid, retried(2))
    assert waiting["status"] in ("queued", "sending")
    assert "SMTP server unreachable" in waiting["history"][0]["error"]
    smtp_peer.up()

    [got] = await smtp_peer.inbox.arrived(1, timeout=5)
    assert got.message["Subject"] == "While the mail server was down"
    [d] = await settled(api, nid)
    history = d["history"]
    assert (d["status"], d["last_error"]) == ("sent", None)
    assert d["attempts"] == len(history) >= 3
    assert [h["attempt"] for h in history] == list(range(1, len(history) + 1))
    assert [h["status"] for h in history] == ["retry"] * (len(history) - 1) + ["sent"]
    assert all("SMTP server unreachable" in h["error"] for h in history[:-1])
    assert len(smtp_peer.inbox) == 1


@pytest.mark.gen_test(timeout=10)
async def test_smtp_down_for_good_fails_after_max_attempts(smtp_peer, start_server):
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    orchestrator = server.services.orchestrator
    orchestrator.backoff_base, orchestrator.max_attempts = 0.01, 3
    api = Api(server.port)
    await profile(api, email="alice@example.com")
    smtp_peer.down()

    [d] = await settled(api, await notify(api, title="never"))
    assert (d["status"], d["attempts"]) == ("failed", 3)
    assert [h["status"] for h in d["history"]] == ["retry", "retry", "failed"]
    assert d["last_error"] == "SMTP server unreachable"  # no host, port nor errno for tenants


@pytest.mark.gen_test(timeout=15)
async def test_retries_pending_at_a_restart_go_on_after_it(smtp_peer, start_server):
    email = {"email_url": Secret(smtp_peer.url), "email_from": SENDER}
    first = await start_server(**email)
    first.services.orchestrator.backoff_base = 60.0  # the retry waits beyond the restart
    api = Api(first.port)
    await profile(api, email="alice@example.com")
    smtp_peer.down()
    nid = await notify(api, title="Across a restart")
    [pending] = await until(api, nid, retried(1))
    assert pending["status"] == "queued" and pending["next_attempt_at"]
    await first.stop()

    smtp_peer.up()
    second = await start_server(**email)  # the same database
    api = Api(second.port)
    [still] = await deliveries(api, nid)
    assert still["status"] == "queued" and len(smtp_peer.inbox) == 0  # not before its time
    orchestrator = second.services.orchestrator
    orchestrator.clock = lambda: time.time() + 120  # its retry time has come
    orchestrator.wake()

    [got] = await smtp_peer.inbox.arrived(1, timeout=5)
    assert got.message["Subject"] == "Across a restart"
    [d] = await settled(api, nid)
    assert d["status"] == "sent" and d["attempts"] == 2
    assert [h["status"] for h in d["history"]] == ["retry", "sent"]
    assert still["history"] == d["history"][:1]
    assert len(smtp_peer.inbox) == 1


@pytest.mark.gen_test(timeout=10)
async def test_a_hanging_webhook_does_not_hold_up_other_deliveries(smtp_peer, start_server):
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    api = Api(server.port)
    await profile(api, email="alice@example.com")
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        await api.json("PUT", "/api/webhook", {"url": url}, ADMIN, expect=201)
        hook = await notify(api, title="to a slow receiver", channels=["webhook"])
        await until(api, hook, lambda ds: bool(ds) and ds[0]["status"] == "sending")

        mail = await notify(api, title="meanwhile", channels=["email"])
        [got] = await smtp_peer.inbox.arrived(1, timeout=3)  # not after the webhook's 15 s
        assert got.message["Subject"] == "meanwhile"
        assert (await settled(api, mail))[0]["status"] == "sent"
        [pending] = await deliveries(api, hook)
        assert pending["status"] == "sending"


@pytest.mark.gen_test(timeout=15)
async def test_one_tenants_hanging_webhook_does_not_hold_up_another_tenants_mail(
        smtp_peer, start_server):
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    api = Api(server.port)
    await profile(api, email="alice@example.com")
    evil = token(tenant="evil", user="root", role="admin")
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        await api.json("PUT", "/api/webhook", {"url": url}, evil, expect=201)
        flood = await api.send(evil, user_ids=[f"u{i}" for i in range(20)], title="flood",
                               channels=["webhook"])  # 20 sends, more than every slot
        first = flood["notifications"][0]["id"]
        await until(api, first, lambda ds: bool(ds) and ds[0]["status"] == "sending", tok=evil)
        mail = await notify(api, title="meanwhile", channels=["email"])
        [got] = await smtp_peer.inbox.arrived(1, timeout=3)  # not after the webhooks' 15 s
        assert got.message["Subject"] == "meanwhile"
        assert (await settled(api, mail))[0]["status"] == "sent"


class _SlowHook(tornado.web.RequestHandler):
    """Takes the request (a provider that accepted it), then is slow to say so."""

    def initialize(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def post(self) -> None:
        self.inbox.add(self.request.body)
        await asyncio.sleep(0.3)  # the peer's own pace, not a test's synchronisation
        self.set_status(204)


@pytest.mark.gen_test(timeout=15)
async def test_a_send_under_way_at_a_stop_is_finished_not_repeated(start_server):
    inbox, peer = Inbox(), LoopThread("slow-hook")
    try:
        port = peer.serve(tornado.web.Application([(r"/hook", _SlowHook, {"inbox": inbox})]))
        first = await start_server()
        api = Api(first.port)
        await api.json("PUT", "/api/webhook", {"url": f"http://127.0.0.1:{port}/hook"}, ADMIN,
                       expect=201)
        nid = await notify(api, title="accepted just before the stop")
        await inbox.arrived(1, timeout=5)
        await first.stop()  # while the receiver has it but has not answered yet

        second = await start_server()
        [d] = await deliveries(Api(second.port), nid)
        assert (d["status"], d["attempts"]) == ("sent", 1)  # not resumed, so not sent twice
        assert len(inbox) == 1
    finally:
        peer.close()


@pytest.mark.gen_test(timeout=10)
async def test_push_subscription_gone_is_removed(push_service, start_server):
    server = await start_server(vapid_subject="mailto:ops@example.com")
    api = Api(server.port)
    key = (await api.json("GET", "/api/push/vapid-public-key"))["key"]
    browser = push_service.subscribe(key)
    endpoint = browser.subscription.endpoint
    await api.json("POST", "/api/push/subscriptions", browser.subscription.to_json(), ALICE,
                   expect=201)
    first = await notify(api, title="first")
    await push_service.inbox.arrived(1, timeout=5)
    assert by_channel(await settled(api, first))["push"]["status"] == "sent"

    push_service.unsubscribe(endpoint)  # the service answers 410 Gone from now on
    second = await notify(api, title="second")
    [gone] = await settled(api, second)
    assert (gone["channel"], gone["status"], gone["attempts"]) == ("push", "failed", 1)
    assert "gone" in gone["last_error"] and "410" in gone["last_error"]

    third = await notify(api, title="third")
    planned = await settled(api, third)
    assert [(d["channel"], d["status"], d["last_error"]) for d in planned] == \
        [("push", "skipped", "no push subscription")]
    response = await api.call("DELETE", f"/api/push/subscriptions?endpoint={endpoint}",
                              tok=ALICE)
    assert response.code == 404  # already removed
    assert len(push_service.inbox) == 1


# --- settings that cannot work stop the start ------------------------------------------

def start_process(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(ROOT / "server.py"), "--port", "0",
            "--db", str(tmp_path / "tidings.db"), "--jwt-secret", SECRET, *flags]
    env = {"PATH": "/usr/bin:/bin"}  # no TIDINGS_* or AWS_* from the caller
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=20)


def test_unresolvable_smtp_host_stops_the_start(tmp_path):
    done = start_process(tmp_path, "--email-url", "smtp://nosuch.invalid",
                         "--email-from", "a@b.c")
    assert done.returncode != 0
    assert "--email-url" in done.stderr and "nosuch.invalid" in done.stderr
    assert not (tmp_path / "tidings.db").exists()  # refused before anything was opened


def test_malformed_vapid_key_stops_the_start(tmp_path):
    key = tmp_path / "vapid.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    done = start_process(tmp_path, "--vapid-key", str(key),
                         "--vapid-subject", "mailto:ops@example.com")
    assert done.returncode != 0
    assert "--vapid-key" in done.stderr and str(key) in done.stderr
