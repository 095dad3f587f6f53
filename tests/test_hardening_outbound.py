"""Outbound requests reach public addresses only: every spelling of loopback or a private
address is refused at registration, a stored one is refused at send time with nothing sent and
no network detail in last_error, and --outbound-allow lets the operator's receiver through."""

import json

import pytest
import tornado.web

from tidings.channels import (
    DeliveryError,
    PushSubscription,
    Recipient,
    build_channels,
    close_channels,
    render,
)
from tidings.config import Settings
from tidings.outbound import OutboundPolicy

from .clients import Api, token
from .deliveries import ADMIN, notify, settled, until
from .peers.loop import LoopThread, run

pytest_plugins = ["tests.peers.fixtures"]

SPELLINGS = ("127.0.0.1", "2130706433", "0x7f.1", "0x7f000001", "127.1", "0177.0.0.1",
             "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::1]", "0.0.0.0", "[::]", "localhost",
             "169.254.169.254", "10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1",
             "224.0.0.1", "240.0.0.1", "[fe80::1]", "[fc00::1]", "[2002:7f00:1::]",
             "127\u30020\u30020\u30021", "\u2460\u2461\u2466.0.0.1", "%31%32%37.0.0.1",
             "[::ffff:169.254.169.254]", "017700000001")


def _field(response) -> str:
    return json.loads(response.body)["error"].get("field", "")


@pytest.mark.gen_test(timeout=30)
async def test_every_spelling_is_refused_at_registration(webhook_receiver, start_server):
    server = await start_server(vapid_subject="mailto:ops@example.com")
    api = Api(server.port)
    port = webhook_receiver.url.split(":")[2].split("/")[0]
    for host in SPELLINGS:
        url = f"http://{host}:{port}/hook"
        response = await api.call("PUT", "/api/webhook", {"url": url}, ADMIN)
        assert response.code == 400 and _field(response) == "url", (url, response.body)
        response = await api.call("POST", "/api/push/subscriptions",
                                  {"endpoint": url, "keys": {"p256dh": "B" + "A" * 86,
                                                             "auth": "A" * 22}},
                                  token(user="alice"))
        assert response.code == 400 and _field(response) == "endpoint", (url, response.body)
    for url in ("ftp://example.com/hook", "https://example.com/" + "x" * 2048,
                "file:///etc/passwd"):
        response = await api.call("PUT", "/api/webhook", {"url": url}, ADMIN)
        assert response.code == 400 and _field(response) == "url", url
    assert len(webhook_receiver.inbox) == 0


@pytest.mark.gen_test(timeout=30)
async def test_a_stored_private_destination_is_refused_when_sending(webhook_receiver,
                                                                     start_server):
    """Destinations stored while allowed (or resolving elsewhere then) are checked again on
    the address connected to: a server without the allow sends nothing to them."""
    port = webhook_receiver.url.split(":")[2].split("/")[0]
    spellings = ("127.0.0.1", "2130706433", "0x7f.1", "127.1", "localhost")
    allowed = await start_server(outbound_allow=("127.0.0.0/8", "localhost"))
    api = Api(allowed.port)
    secrets = []
    for i, host in enumerate(spellings):
        admin = token(tenant=f"t{i}", user="root", role="admin")
        made = await api.json("PUT", "/api/webhook", {"url": f"http://{host}:{port}/hook"},
                              admin, expect=201)
        secrets.append(made["secret"])
    webhook_receiver.secret = secrets[0]
    # With the allow, the receiver gets it.
    admin0 = token(tenant="t0", user="root", role="admin")
    sent = await notify(api, admin0, user_id="alice", channels=["webhook"])
    await webhook_receiver.inbox.arrived(1, timeout=5)
    assert ((await settled(api, sent, tok=admin0))[0])["status"] == "sent"
    await allowed.stop()

    strict = await start_server()
    api = Api(strict.port)
    for i, _host in enumerate(spellings):
        admin = token(tenant=f"t{i}", user="root", role="admin")
        nid = await notify(api, admin, user_id="alice", channels=["webhook"])
        d = (await settled(api, nid, tok=admin))[0]
        assert (d["status"], d["last_error"]) == ("failed", "destination not allowed"), d
    assert len(webhook_receiver.inbox) == 1  # only the one sent while allowed


@pytest.mark.gen_test(timeout=30)
async def test_connection_errors_carry_no_network_detail(start_server):
    from tornado.testing import bind_unused_port
    sock, port = bind_unused_port()
    sock.close()  # nothing listens there
    server = await start_server(outbound_allow=("127.0.0.1",))
    api = Api(server.port)
    await api.json("PUT", "/api/webhook", {"url": f"http://127.0.0.1:{port}/hook"}, ADMIN,
                   expect=201)
    nid = await notify(api, ADMIN, channels=["webhook"])
    [d] = await until(api, nid, lambda ds: bool(ds) and ds[0]["last_error"] is not None)
    assert d["last_error"] == "connection failed"


def test_policy_reads_every_spelling_and_the_allow_list():
    strict = OutboundPolicy()
    for host in SPELLINGS:
        with pytest.raises(ValueError):
            strict.check_url(f"http://{host}/", "url")
    assert strict.check_url("https://push.example.com/x", "endpoint")
    assert strict.check_url("http://93.184.216.34/", "url")
    allow = OutboundPolicy(["10.0.0.0/8", "internal.example:8443", "hooks.local"])
    assert allow.check_url("http://10.1.2.3/", "url")
    with pytest.raises(ValueError):
        allow.check_url("http://192.168.0.1/", "url")
    dev = OutboundPolicy(allow_loopback=True)
    assert dev.check_url("http://127.0.0.1:9/", "url")
    assert dev.check_url("http://[::ffff:127.0.0.1]:9/", "url")
    with pytest.raises(ValueError):
        dev.check_url("http://10.0.0.1/", "url")


@pytest.mark.gen_test(timeout=30)
async def test_a_push_endpoint_on_loopback_gets_nothing_without_the_allow(push_service,
                                                                        start_server):
    push = {"vapid_subject": "mailto:ops@example.com"}
    allowed = await start_server(outbound_allow=("127.0.0.1",), **push)
    api = Api(allowed.port)
    key = (await api.json("GET", "/api/push/vapid-public-key"))["key"]
    browser = push_service.subscribe(key)
    alice = token(user="alice")
    await api.json("POST", "/api/push/subscriptions", browser.subscription.to_json(), alice,
                   expect=201)
    first = await notify(api, ADMIN, channels=["push"])
    await push_service.inbox.arrived(1, timeout=5)
    assert ((await settled(api, first, tok=ADMIN))[0])["status"] == "sent"
    await allowed.stop()

    strict = await start_server(**push)
    api = Api(strict.port)
    second = await notify(api, ADMIN, channels=["push"])
    d = (await settled(api, second, tok=ADMIN))[0]
    assert (d["status"], d["last_error"]) == ("failed", "destination not allowed")
    assert len(push_service.inbox) == 1


class _Redirect(tornado.web.RequestHandler):
    """A push service that sends the push on elsewhere: tidings must not follow."""

    def initialize(self, target: str) -> None:
        self.target = target

    def post(self) -> None:
        self.redirect(self.target, status=307)


def test_push_follows_no_redirect(push_service, tmp_path):
    channels = build_channels(Settings(vapid_subject="mailto:ops@example.com",
                                       outbound_allow=("127.0.0.1",),
                                       vapid_key=str(tmp_path / "vapid.pem")))
    push = channels["push"]
    browser = push_service.subscribe(push.public_key)  # type: ignore[attr-defined]
    peer = LoopThread("redirector")
    try:
        port = peer.serve(tornado.web.Application(
            [(r"/push", _Redirect, {"target": browser.subscription.endpoint})]))
        sub = PushSubscription(f"http://127.0.0.1:{port}/push", browser.subscription.p256dh,
                               browser.subscription.auth)

        async def go():
            try:
                return await push.send(Recipient("alice", push=sub),
                                       render({"id": 1, "title": "t", "message": ""}, "push"))
            finally:
                await close_channels(channels)

        with pytest.raises(DeliveryError) as caught:
            run(go())
        assert caught.value.permanent and "307" in str(caught.value)
        assert len(push_service.inbox) == 0
    finally:
        peer.close()
