"""A notification created over REST reaches each channel's real peer: SMTP (aiosmtpd), SES and
SNS (moto server), a web-push service that checks VAPID and decrypts, a webhook receiver that
verifies the signature. Each test reads what the peer received."""

from __future__ import annotations

import email
import email.policy

import pytest

from tidings.config import Secret

from .clients import Api
from .deliveries import ADMIN, ALICE, SENDER, by_channel, notify, profile, settled

pytest_plugins = ["tests.peers.fixtures"]


@pytest.fixture
def settings(settings):
    """The webhook and push receivers here listen on loopback: allowed for these servers."""
    return settings.replace(outbound_allow=("127.0.0.1",))

SUBJECT = "mailto:ops@example.com"


async def email_server(smtp_peer, start_server) -> Api:
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    return Api(server.port)


@pytest.mark.gen_test(timeout=10)
async def test_email_over_smtp(smtp_peer, start_server):
    api = await email_server(smtp_peer, start_server)
    await profile(api, email="alice@example.com")
    nid = await notify(api, title="Build finished", message="main is green")

    [got] = await smtp_peer.inbox.arrived(1, timeout=5)
    assert got.rcpt_tos == ["alice@example.com"] and got.mail_from == "noreply@example.com"
    msg = got.message
    assert (msg["To"], msg["From"], msg["Subject"]) == \
        ("alice@example.com", SENDER, "Build finished")
    assert "main is green" in msg.get_body(("plain",)).get_content()
    assert "<h2>Build finished</h2>" in msg.get_body(("html",)).get_content()

    [d] = await settled(api, nid)
    assert (d["channel"], d["user_id"], d["status"], d["attempts"], d["last_error"]) == \
        ("email", "alice", "sent", 1, None)
    assert d["sent_at"] and [h["status"] for h in d["history"]] == ["sent"]


@pytest.mark.gen_test(timeout=10)
async def test_email_with_a_tenant_template(smtp_peer, start_server):
    api = await email_server(smtp_peer, start_server)
    await profile(api, email="alice@example.com", locale="de")
    await api.json("PUT", "/api/templates/warning/email", {
        "subject": "[{{ tenant_id }}] {{ title | upper }}",
        "text": "Hallo {{ user.id }} ({{ user.locale }}): {{ message }}, build {{ data.build }}",
        "html": "<p>{{ title }}</p>"}, ADMIN)
    warning = await notify(api, type="warning", title="Disk <full>", message="98 %",
                           data={"build": 7})
    info = await notify(api, type="info", title="No template for info")

    # Sent concurrently (planned together when they come close together): in either order.
    second, first = sorted(await smtp_peer.inbox.arrived(2, timeout=5),
                           key=lambda m: m.message["Subject"] == "[acme] DISK <FULL>")
    msg = first.message
    assert msg["Subject"] == "[acme] DISK <FULL>"
    assert msg.get_body(("plain",)).get_content().strip() == "Hallo alice (de): 98 %, build 7"
    assert msg.get_body(("html",)).get_content().strip() == "<p>Disk &lt;full&gt;</p>"
    assert second.message["Subject"] == "No template for info"  # the built-in default
    for nid in (warning, info):
        assert (await settled(api, nid))[0]["status"] == "sent"


@pytest.mark.gen_test(timeout=10)
async def test_template_that_fails_at_render_fails_the_delivery_only(smtp_peer, start_server):
    api = await email_server(smtp_peer, start_server)
    await profile(api, email="alice@example.com")
    # Valid when stored (the sample notification has data.build = 7), fails for build 0.
    await api.json("PUT", "/api/templates/info/email",
                   {"subject": "{{ title }}", "text": "{{ 100 // data.build }} per build"}, ADMIN)
    broken = await notify(api, title="zero", data={"build": 0})
    [d] = await settled(api, broken)
    assert (d["status"], d["attempts"]) == ("failed", 1)  # a template error is permanent
    assert d["last_error"].startswith("template text: ZeroDivisionError")
    assert d["history"][0]["error"] == d["last_error"]

    fine = await notify(api, title="four", data={"build": 4})
    [got] = await smtp_peer.inbox.arrived(1, timeout=5)
    assert got.message.get_body(("plain",)).get_content().strip() == "25 per build"
    assert (await settled(api, fine))[0]["status"] == "sent"
    assert len(smtp_peer.inbox) == 1


@pytest.mark.gen_test(timeout=15)
async def test_ses_email_and_sns_sms(aws_peer, start_server):
    aws_peer.verify_sender("noreply@example.com")
    server = await start_server(email_url=Secret("ses://eu-west-1"), email_from=SENDER,
                                sms_url="sns://eu-west-1", aws_endpoint_url=aws_peer.endpoint_url)
    api = Api(server.port)
    await profile(api, email="alice@example.com", phone="+14155550123")
    await api.json("PUT", "/api/preferences", {"channels": {"default": {"sms": True}}}, ALICE)
    nid = await notify(api, title="Build finished", message="main is green")

    found = by_channel(await settled(api, nid, count=2, timeout=10))
    assert {c: d["status"] for c, d in found.items()} == {"email": "sent", "sms": "sent"}
    [sent] = aws_peer.sent_emails()
    assert "alice@example.com" in sent["destinations"]
    msg = email.message_from_string(sent["raw_data"], policy=email.policy.default)
    assert (msg["Subject"], msg["To"]) == ("Build finished", "alice@example.com")
    assert "main is green" in msg.get_body(("plain",)).get_content()
    [sms] = aws_peer.sent_sms()
    assert (sms["phone_number"], sms["message"]) == ("+14155550123",
                                                     "Build finished: main is green")


@pytest.mark.gen_test(timeout=10)
async def test_web_push(push_service, start_server):
    server = await start_server(vapid_subject=SUBJECT)
    api = Api(server.port)
    key = (await api.json("GET", "/api/push/vapid-public-key"))["key"]
    browser = push_service.subscribe(key)  # as pushManager.subscribe({applicationServerKey})
    await api.json("POST", "/api/push/subscriptions", browser.subscription.to_json(), ALICE,
                   expect=201)
    nid = await notify(api, title="Build finished", message="main is green", priority="high",
                       data={"build": 7})

    [push] = await push_service.inbox.arrived(1, timeout=5)
    assert push.endpoint == browser.subscription.endpoint
    assert (push.claims["sub"], push.claims["aud"]) == (SUBJECT, push_service.origin)
    assert {k: push.payload[k] for k in ("title", "body", "id", "priority", "data")} == \
        {"title": "Build finished", "body": "main is green", "id": nid, "priority": "high",
         "data": {"build": 7}}
    assert push.urgency == "high"
    [d] = await settled(api, nid)
    assert (d["channel"], d["status"]) == ("push", "sent")
    assert len(push_service.refusals) == 0


@pytest.mark.gen_test(timeout=10)
async def test_webhook_signed_for_the_receiver(webhook_receiver, server, api):
    made = await api.json("PUT", "/api/webhook", {"url": webhook_receiver.url}, ADMIN,
                          expect=201)
    webhook_receiver.secret = made["secret"]  # the receiver keeps the secret shown once
    created = (await api.send(ADMIN, user_id="alice", title="Deployed",
                              data={"sha": "abc"}))["notification"]

    [hook] = await webhook_receiver.inbox.arrived(1, timeout=5)
    assert hook.notification == created
    assert hook.headers["Tidings-Signature"].startswith(f"t={hook.timestamp},v1=")
    assert len(webhook_receiver.refusals) == 0
    [d] = await settled(api, created["id"])
    assert (d["channel"], d["user_id"], d["status"]) == ("webhook", "alice", "sent")


@pytest.mark.gen_test(timeout=10)
async def test_webhook_with_a_wrong_secret_is_refused(webhook_receiver, server,
                                                                  api):
    """The receiver's check is real: a secret other than the tenant's is refused (401)."""
    await api.json("PUT", "/api/webhook", {"url": webhook_receiver.url}, ADMIN, expect=201)
    nid = await notify(api, title="Deployed")
    [why] = await webhook_receiver.refusals.arrived(1, timeout=5)
    assert "signature" in why
    [d] = await settled(api, nid)
    assert d["status"] == "failed" and "401" in d["last_error"]  # 4xx: permanent
    assert len(webhook_receiver.inbox) == 0


@pytest.mark.gen_test(timeout=10)
async def test_channels_in_the_post_narrow_the_preferences(smtp_peer, webhook_receiver,
                                                           start_server):
    api = await email_server(smtp_peer, start_server)
    made = await api.json("PUT", "/api/webhook", {"url": webhook_receiver.url}, ADMIN,
                          expect=201)
    webhook_receiver.secret = made["secret"]
    await profile(api, email="alice@example.com")

    only_hook = await notify(api, title="hook only", channels=["webhook"])
    assert [d["channel"] for d in await settled(api, only_hook)] == ["webhook"]
    both = await notify(api, title="both")
    assert sorted(d["channel"] for d in await settled(api, both, count=2)) == \
        ["email", "webhook"]
    [got] = await smtp_peer.inbox.arrived(1, timeout=5)
    assert got.message["Subject"] == "both"
