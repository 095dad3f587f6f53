"""SES bounces and complaints, posted as Amazon SNS posts them, put addresses on the tenant's
suppression list; later emails to them are skipped. A real server sends through SES (moto);
an SNS stand-in signs the messages and serves its certificate and SubscribeURL.

The stand-in serves over http on loopback: the server under test allows that host through
--sns-host (and loopback through --outbound-allow), the only way a certificate URL that is
not https://sns.REGION.amazonaws.com is fetched at all (a test below checks that refusal)."""

from __future__ import annotations

import email
import email.policy
import json

import pytest

from tidings.config import Secret

from .clients import Api, token
from .deliveries import ADMIN, SENDER, notify, profile, settled
from .peers.aws import REGION
from .peers.sns import bounce, complaint

pytest_plugins = ["tests.peers.fixtures"]

ADDRESS = "noreply@example.com"
OTHER_SERVICE = token(tenant="other", user="backend", role="service")
OTHER_ADMIN = token(tenant="other", user="root", role="admin")


async def ses_server(start_server, aws_peer, sns_peer) -> Api:
    aws_peer.verify_sender(ADDRESS)
    server = await start_server(
        email_url=Secret(f"ses://{REGION}"), email_from=SENDER,
        aws_endpoint_url=aws_peer.endpoint_url, sns_host=sns_peer.host,
        outbound_allow=("127.0.0.1",))
    return Api(server.port)


async def post_sns(api: Api, envelope: dict, expect: int = 200) -> dict:
    # SNS posts JSON as text/plain, with its own headers.
    return await api.json("POST", "/api/ses/events", raw=json.dumps(envelope).encode(),
                          expect=expect, headers={"Content-Type": "text/plain; charset=UTF-8",
                                                  "x-amz-sns-message-type": envelope["Type"]})


async def suppressed(api: Api, tok: str = ADMIN) -> dict[str, str]:
    body = await api.json("GET", "/api/suppressions", tok=tok)
    return {s["address"]: s["reason"] for s in body["suppressions"]}


@pytest.mark.gen_test(timeout=30)
async def test_a_permanent_bounce_suppresses_the_address_for_its_tenant_only(
        start_server, aws_peer, sns_peer):
    api = await ses_server(start_server, aws_peer, sns_peer)
    await profile(api, email="alice@example.com")
    await api.json("PUT", "/api/users/bob", {"email": "alice@example.com"}, OTHER_SERVICE)
    first = await notify(api, title="Build finished")
    assert (await settled(api, first))[0]["status"] == "sent"
    [sent] = aws_peer.sent_emails()
    raw = email.message_from_string(sent["raw_data"], policy=email.policy.default)
    assert raw["List-Unsubscribe"].startswith("<http://127.0.0.1:")  # SES mail carries it too
    assert raw["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # A transient bounce changes nothing; a permanent one suppresses (in lower case).
    answer = await post_sns(api, sns_peer.notification(
        bounce(sent["id"], "alice@example.com", kind="Transient")))
    assert answer == {"status": "ignored"}
    assert await suppressed(api) == {}
    answer = await post_sns(api, sns_peer.notification(bounce(sent["id"], "Alice@Example.com")))
    assert answer == {"status": "suppressed", "suppressed": 1}
    assert await suppressed(api) == {"alice@example.com": "bounce"}

    again = await notify(api, title="Second")
    [d] = await settled(api, again)
    assert (d["status"], d["last_error"], d["attempts"]) == ("skipped", "suppressed", 1)
    assert len(aws_peer.sent_emails()) == 1

    # The same address in another tenant is not suppressed: its email goes out.
    assert await suppressed(api, OTHER_ADMIN) == {}
    theirs = await notify(api, OTHER_SERVICE, user_id="bob", title="Other tenant")
    [d] = await settled(api, theirs, tok=OTHER_ADMIN)
    assert d["status"] == "sent"
    assert len(aws_peer.sent_emails()) == 2

    # A bounce for a message tidings never sent suppresses nothing.
    answer = await post_sns(api, sns_peer.notification(bounce("not-ours", "x@example.com")))
    assert answer == {"status": "ignored"}


@pytest.mark.gen_test(timeout=30)
async def test_complaints_signed_with_sha1_and_one_certificate_fetch(
        start_server, aws_peer, sns_peer):
    api = await ses_server(start_server, aws_peer, sns_peer)
    await profile(api, email="carol@example.com")
    first = await notify(api, title="Build finished")
    await settled(api, first)
    [sent] = aws_peer.sent_emails()
    for version in ("1", "2"):
        envelope = sns_peer.notification(complaint(sent["id"], "carol@example.com"),
                                         version=version, Subject="Complaint")
        answer = await post_sns(api, envelope)
        assert answer["status"] == "suppressed"
    assert await suppressed(api) == {"carol@example.com": "complaint"}
    assert len(sns_peer.cert_fetches) == 1  # kept after the first message


@pytest.mark.gen_test(timeout=30)
async def test_a_bad_signature_is_refused_and_suppresses_nothing(
        start_server, aws_peer, sns_peer):
    api = await ses_server(start_server, aws_peer, sns_peer)
    await profile(api, email="dave@example.com")
    first = await notify(api, title="Build finished")
    await settled(api, first)
    [sent] = aws_peer.sent_emails()

    genuine = sns_peer.notification(bounce(sent["id"], "dave@example.com"))
    changed = {**genuine, "Message": json.dumps(bounce(sent["id"], "erin@example.com"))}
    body = await post_sns(api, changed, expect=403)
    assert body["error"]["code"] == "invalid_signature" and body["error"]["field"] == "Signature"
    unsigned = {**genuine, "Signature": "AAAA"}
    assert (await post_sns(api, unsigned, expect=403))["error"]["code"] == "invalid_signature"
    # A certificate anywhere but on SNS's hosts is not even fetched.
    elsewhere = {**genuine, "SigningCertURL": "https://sns.example.com/cert.pem"}
    body = await post_sns(api, elsewhere, expect=403)
    assert body["error"]["field"] == "SigningCertURL"
    assert (await post_sns(api, {"Type": "Notification"}, expect=400))["error"]["field"]
    assert await suppressed(api) == {}
    assert len(sns_peer.cert_fetches) == 1

    assert (await post_sns(api, genuine))["status"] == "suppressed"  # the genuine one works


@pytest.mark.gen_test(timeout=30)
async def test_a_subscription_confirmation_is_confirmed(start_server, aws_peer, sns_peer):
    api = await ses_server(start_server, aws_peer, sns_peer)
    answer = await post_sns(api, sns_peer.subscription_confirmation("token-123"))
    assert answer == {"status": "confirmed"}
    assert sns_peer.confirmations.wait(1) == ["token-123"]

    forged = {**sns_peer.subscription_confirmation("token-456"),
              "SubscribeURL": f"http://{sns_peer.host}/confirm?Token=other"}
    assert (await post_sns(api, forged, expect=403))["error"]["code"] == "invalid_signature"
    assert len(sns_peer.confirmations) == 1


@pytest.mark.gen_test(timeout=30)
async def test_without_the_setting_only_aws_hosts_are_trusted(start_server, sns_peer):
    server = await start_server(outbound_allow=("127.0.0.1",))
    api = Api(server.port)
    body = await post_sns(api, sns_peer.subscription_confirmation("t"), expect=403)
    assert body["error"]["field"] == "SigningCertURL"
    assert len(sns_peer.cert_fetches) == 0 and len(sns_peer.confirmations) == 0
    # Only a region's SNS host: not any name under amazonaws.com, so no lookup per post.
    for host in ("sns.r7.amazonaws.com", "sns.anything.amazonaws.com", "x.sns.us-east-1.amazonaws.com"):
        message = {**sns_peer.subscription_confirmation("t"),
                   "SigningCertURL": f"https://{host}/SimpleNotificationService-1.pem"}
        body = await post_sns(api, message, expect=403)
        assert body["error"]["field"] == "SigningCertURL", host


@pytest.mark.gen_test(timeout=20)
async def test_admins_list_add_and_remove_suppressions_of_their_tenant(server, api):
    created = await api.json("POST", "/api/suppressions", {"address": "X@Example.com"}, ADMIN,
                             expect=201)
    assert created == {"address": "x@example.com", "added": True}
    again = await api.json("POST", "/api/suppressions", {"address": "x@example.com"}, ADMIN)
    assert again == {"address": "x@example.com", "added": False}
    await api.json("POST", "/api/suppressions", {"address": "a@example.com",
                                                 "detail": "asked by phone"}, ADMIN, expect=201)
    body = await api.json("GET", "/api/suppressions", tok=ADMIN)
    assert [(s["address"], s["reason"], s["detail"]) for s in body["suppressions"]] == [
        ("a@example.com", "manual", "asked by phone"), ("x@example.com", "manual", None)]
    assert body["next_after"] is None
    page = await api.json("GET", "/api/suppressions?limit=1", tok=ADMIN)
    assert [s["address"] for s in page["suppressions"]] == ["a@example.com"]
    assert page["next_after"] == "a@example.com"
    rest = await api.json("GET", "/api/suppressions?limit=1&after=a@example.com", tok=ADMIN)
    assert [s["address"] for s in rest["suppressions"]] == ["x@example.com"]

    bad = await api.json("POST", "/api/suppressions", {"address": "nope"}, ADMIN, expect=400)
    assert bad["error"]["field"] == "address"
    await api.json("GET", "/api/suppressions?limit=0", tok=ADMIN, expect=400)
    for tok in (token(user="alice"), token(user="backend", role="service")):
        await api.json("GET", "/api/suppressions", tok=tok, expect=403)
        await api.json("DELETE", "/api/suppressions/x@example.com", tok=tok, expect=403)

    # Another tenant's admin sees none of them and cannot remove them.
    assert await suppressed(api, OTHER_ADMIN) == {}
    await api.json("DELETE", "/api/suppressions/x@example.com", tok=OTHER_ADMIN, expect=404)
    await api.json("DELETE", "/api/suppressions/X@example.com", tok=ADMIN, expect=204)
    await api.json("DELETE", "/api/suppressions/x@example.com", tok=ADMIN, expect=404)
    assert await suppressed(api) == {"a@example.com": "manual"}
