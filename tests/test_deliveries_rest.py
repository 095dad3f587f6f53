"""The channels' REST calls through the real server: recipients, preferences, push keys and
subscriptions, webhooks, templates and the deliveries of a notification, with who may."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tidings.config import Secret

from .clients import Api, token
from .deliveries import ADMIN, ALICE, BOB, SENDER, SERVICE, notify, profile, settled

pytest_plugins = ["tests.peers.fixtures"]


@pytest.fixture
def settings(settings):
    """The webhook and push receivers here listen on loopback: allowed for these servers."""
    return settings.replace(outbound_allow=("127.0.0.1",))

ALICE_PROFILE = {"email": "alice@example.com", "phone": "+14155550123",
                 "timezone": "Europe/Berlin", "locale": "de-DE"}


async def refused(api: Api, method: str, path: str, body: Any, tok: str,
                  expect: int = 400) -> dict[str, Any]:
    response = await api.call(method, path, body, tok)
    assert response.code == expect, (response.code, response.body)
    return dict(json.loads(response.body)["error"])


# --- /api/users/{id} -------------------------------------------------------------------

@pytest.mark.gen_test
async def test_users_admin_and_service_for_anyone_a_user_for_itself(server, api):
    assert await api.json("PUT", "/api/users/alice", ALICE_PROFILE, SERVICE) == \
        {"user_id": "alice", **ALICE_PROFILE}
    assert await api.json("GET", "/api/users/alice", tok=ALICE) == \
        {"user_id": "alice", **ALICE_PROFILE}
    assert await api.json("GET", "/api/users/alice", tok=ADMIN) == \
        {"user_id": "alice", **ALICE_PROFILE}
    mine = {**ALICE_PROFILE, "phone": None, "locale": "en"}
    assert await api.json("PUT", "/api/users/alice", mine, ALICE) == {"user_id": "alice", **mine}
    assert (await api.json("GET", "/api/users/alice", tok=SERVICE))["locale"] == "en"

    assert (await refused(api, "GET", "/api/users/alice", None, BOB, 403))["code"] == \
        "forbidden"
    await refused(api, "PUT", "/api/users/bob", ALICE_PROFILE, ALICE, 403)
    await refused(api, "GET", "/api/users/bob", None, ADMIN, 404)
    # Another tenant's admin does not see acme's alice.
    await refused(api, "GET", "/api/users/alice", None, token("globex", "root", "admin"), 404)


@pytest.mark.parametrize("field, value", [
    ("email", "not-an-address"), ("phone", "0151 1234567"), ("timezone", "Mars/Olympus"),
    ("locale", "!!"), ("nickname", "al"),
])
@pytest.mark.gen_test
async def test_users_invalid_field_is_named(server, api, field, value):
    error = await refused(api, "PUT", "/api/users/alice", {**ALICE_PROFILE, field: value},
                          SERVICE)
    assert (error["code"], error["field"]) == ("invalid_request", field)
    assert error["message"].startswith(f"{field}: ")
    await refused(api, "GET", "/api/users/alice", None, SERVICE, 404)  # nothing stored


# --- /api/preferences ------------------------------------------------------------------

@pytest.mark.gen_test
async def test_preferences_user_overrides_tenant_defaults(server, api):
    built_in = await api.json("GET", "/api/preferences", tok=ALICE)
    assert built_in == {"channels": {"default": {"in_app": True, "email": "offline",
                                                 "sms": False, "push": "offline",
                                                 "webhook": True}},
                        "quiet_hours": None, "digest": "off", "escalate_after": 60}

    tenant = {"channels": {"default": {"sms": True}}, "digest": "hourly",
              "quiet_hours": {"start": "22:00", "end": "07:00"}}
    await api.json("PUT", "/api/preferences?tenant_default=true", tenant, ADMIN)
    inherited = await api.json("GET", "/api/preferences", tok=ALICE)
    assert inherited["channels"]["default"]["sms"] is True
    assert (inherited["digest"], inherited["quiet_hours"]) == \
        ("hourly", {"start": "22:00", "end": "07:00"})

    own = await api.json("PUT", "/api/preferences", {
        "digest": "off", "quiet_hours": None,
        "channels": {"warning": {"email": False}, "default": {"sms": "offline"}}}, ALICE)
    assert own == await api.json("GET", "/api/preferences", tok=ALICE)
    assert (own["digest"], own["quiet_hours"]) == ("off", None)
    assert own["channels"]["default"] == {**built_in["channels"]["default"], "sms": "offline"}
    assert own["channels"]["warning"] == {"email": False}
    # Bob has no preferences of his own: he still gets the tenant's.
    assert (await api.json("GET", "/api/preferences", tok=BOB))["digest"] == "hourly"
    assert (await api.json("GET", "/api/preferences?tenant_default=true", tok=ADMIN)
            )["channels"]["default"]["sms"] is True


@pytest.mark.gen_test
async def test_tenant_defaults_are_for_admins(server, api):
    for method, body in (("GET", None), ("PUT", {"digest": "daily"})):
        error = await refused(api, method, "/api/preferences?tenant_default=true", body,
                              ALICE, 403)
        assert error["code"] == "forbidden"
    assert (await api.json("GET", "/api/preferences", tok=BOB))["digest"] == "off"


@pytest.mark.parametrize("body, field", [
    ({"digest": "weekly"}, "digest"),
    ({"channels": {"default": {"email": "sometimes"}}}, "channels.default.email"),
    ({"channels": {"default": {"fax": True}}}, "channels.default.fax"),
    ({"channels": {"Not A Type": {"email": True}}}, "channels.Not A Type"),
    ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "quiet_hours.start"),
    ({"quiet_hours": {"start": "22:00"}}, "quiet_hours.end"),
    ({"quiet_hours": "at night"}, "quiet_hours"),
    ({"colour": "blue"}, "colour"),
])
@pytest.mark.gen_test
async def test_preferences_bad_value_is_named(server, api, body, field):
    assert (await refused(api, "PUT", "/api/preferences", body, ALICE))["field"] == field
    assert (await api.json("GET", "/api/preferences", tok=ALICE))["digest"] == "off"


# --- web push: key and subscriptions ---------------------------------------------------

@pytest.mark.gen_test
async def test_vapid_key_is_404_while_push_is_off(server, api):
    error = await refused(api, "GET", "/api/push/vapid-public-key", None, None, 404)
    assert error["code"] == "channel_off"


@pytest.mark.gen_test(timeout=15)
async def test_vapid_key_is_kept_across_restarts(start_server, settings):
    first = await start_server(vapid_subject="mailto:ops@example.com")
    key = (await Api(first.port).json("GET", "/api/push/vapid-public-key"))["key"]
    raw = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
    assert len(raw) == 65 and raw[0] == 4  # an uncompressed P-256 point
    await first.stop()
    second = await start_server(vapid_subject="mailto:ops@example.com")
    assert (await Api(second.port).json("GET", "/api/push/vapid-public-key"))["key"] == key


@pytest.mark.gen_test
async def test_push_subscriptions_add_and_remove(server, api, push_service):
    browser = push_service.subscribe("BAAA")
    body = browser.subscription.to_json()
    assert await api.json("POST", "/api/push/subscriptions", body, ALICE, expect=201) == \
        {"endpoint": body["endpoint"]}
    endpoint = f"/api/push/subscriptions?endpoint={body['endpoint']}"
    taken = await refused(api, "POST", "/api/push/subscriptions", body, BOB, 409)
    assert taken["field"] == "endpoint"  # bob cannot take alice's endpoint over
    await refused(api, "DELETE", endpoint, None, BOB, 404)  # not bob's
    assert (await api.call("DELETE", "/api/push/subscriptions", {"endpoint": body["endpoint"]},
                           ALICE)).code == 204
    await refused(api, "DELETE", endpoint, None, ALICE, 404)
    assert (await refused(api, "DELETE", "/api/push/subscriptions", None, ALICE))["field"] == \
        "endpoint"


@pytest.mark.parametrize("key, value, field", [
    ("p256dh", "c2hvcnQ", "keys.p256dh"),
    ("p256dh", "A" * 87, "keys.p256dh"),  # 65 bytes, but not an uncompressed point
    ("auth", "c2hvcnQ", "keys.auth"),
    ("auth", None, "keys.auth"),
    ("keys", None, "keys"),
    ("endpoint", "ftp://push.example/x", "endpoint"),
])
@pytest.mark.gen_test
async def test_push_subscription_bad_keys_are_named(server, api, push_service, key, value,
                                                    field):
    body = push_service.subscribe("BAAA").subscription.to_json()
    if key in body:
        body[key] = value
    else:
        body["keys"][key] = value
    assert (await refused(api, "POST", "/api/push/subscriptions", body, ALICE))["field"] == \
        field


# --- /api/webhook ----------------------------------------------------------------------

@pytest.mark.gen_test
async def test_webhook_secret_is_shown_once(server, api):
    await refused(api, "GET", "/api/webhook", None, ADMIN, 404)
    made = await api.json("PUT", "/api/webhook", {"url": "https://hooks.example/a"}, ADMIN,
                          expect=201)
    assert made["url"] == "https://hooks.example/a" and made["secret"].startswith("whsec_")
    moved = await api.json("PUT", "/api/webhook", {"url": "https://hooks.example/b"}, ADMIN)
    assert moved == {"url": "https://hooks.example/b"}  # the secret is kept, not shown again
    assert await api.json("GET", "/api/webhook", tok=ADMIN) == {"url": "https://hooks.example/b"}
    assert (await api.call("DELETE", "/api/webhook", tok=ADMIN)).code == 204
    await refused(api, "GET", "/api/webhook", None, ADMIN, 404)
    await refused(api, "DELETE", "/api/webhook", None, ADMIN, 404)
    again = await api.json("PUT", "/api/webhook", {"url": "https://hooks.example/a"}, ADMIN,
                           expect=201)
    assert again["secret"] != made["secret"]


@pytest.mark.gen_test
async def test_webhook_is_for_admins_and_needs_an_http_url(server, api):
    for method, body in (("GET", None), ("PUT", {"url": "https://x.example"}),
                         ("DELETE", None)):
        for who in (ALICE, SERVICE):
            await refused(api, method, "/api/webhook", body, who, 403)
    for url in ("ftp://hooks.example/a", "not a url", None):
        assert (await refused(api, "PUT", "/api/webhook", {"url": url}, ADMIN))["field"] == "url"


# --- /api/templates/{type}/{channel} ---------------------------------------------------

TEMPLATE = {"subject": "[{{ tenant_id }}] {{ title }}", "text": "{{ message }}",
            "html": "<p>{{ title }}</p>"}


@pytest.mark.gen_test
async def test_templates_put_get_delete(server, api):
    path = "/api/templates/info/email"
    await refused(api, "GET", path, None, ADMIN, 404)
    assert await api.json("PUT", path, TEMPLATE, ADMIN) == TEMPLATE
    assert await api.json("GET", path, tok=ADMIN) == TEMPLATE
    partial = await api.json("PUT", path, {"subject": "{{ title }}"}, ADMIN)
    assert partial == {"subject": "{{ title }}", "text": "", "html": ""}  # empty: the default
    for who in (ALICE, SERVICE):
        await refused(api, "GET", path, None, who, 403)
        await refused(api, "PUT", path, TEMPLATE, who, 403)
    assert (await api.call("DELETE", path, tok=ADMIN)).code == 204
    await refused(api, "DELETE", path, None, ADMIN, 404)


@pytest.mark.parametrize("channel, body, field", [
    ("email", {**TEMPLATE, "text": "{{ message "}, "text"),
    ("email", {**TEMPLATE, "html": "{% for x in %}"}, "html"),
    ("email", {**TEMPLATE, "subject": "{{ title | nosuchfilter }}"}, "subject"),
    ("email", {**TEMPLATE, "text": "{{ ''.__class__.__mro__ }}"}, "text"),  # sandboxed
    ("fax", TEMPLATE, "channel"),
])
@pytest.mark.gen_test
async def test_template_errors_name_the_part(server, api, channel, body, field):
    error = await refused(api, "PUT", f"/api/templates/info/{channel}", body, ADMIN)
    assert error["field"] == field
    await refused(api, "GET", f"/api/templates/info/{channel}", None, ADMIN, 404)


# --- GET /api/notifications/{id}/deliveries --------------------------------------------

FIELDS = {"id", "channel", "user_id", "status", "attempts", "last_error", "next_attempt_at",
          "sent_at", "created_at", "history"}


@pytest.mark.gen_test(timeout=10)
async def test_deliveries_who_sees_what(smtp_peer, start_server):
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    api = Api(server.port)
    await profile(api, "alice", email="alice@example.com")
    await profile(api, "bob", email="bob@example.com")

    broadcast = await notify(api, user_id=None, broadcast=True, channels=["email"])
    everyone = await settled(api, broadcast, count=2)
    assert all(set(d) == FIELDS for d in everyone)
    assert sorted((d["channel"], d["user_id"], d["status"]) for d in everyone) == \
        [("email", "alice", "sent"), ("email", "bob", "sent")]
    seen = await api.json("GET", f"/api/notifications/{broadcast}/deliveries", tok=ALICE)
    assert [(d["channel"], d["user_id"]) for d in seen["deliveries"]] == [("email", "alice")]
    assert (await api.json("GET", f"/api/notifications/{broadcast}/deliveries",
                           tok=SERVICE))["deliveries"] == everyone

    for_bob = await notify(api, user_id="bob", channels=["email"])
    await settled(api, for_bob)
    await refused(api, "GET", f"/api/notifications/{for_bob}/deliveries", None, ALICE, 404)
    assert len((await api.json("GET", f"/api/notifications/{for_bob}/deliveries",
                               tok=BOB))["deliveries"]) == 1
    other_tenant = token("globex", "root", "admin")
    await refused(api, "GET", f"/api/notifications/{for_bob}/deliveries", None,
                  other_tenant, 404)
    await refused(api, "GET", "/api/notifications/999999/deliveries", None, ADMIN, 404)


@pytest.mark.gen_test(timeout=10)
async def test_a_user_does_not_see_the_tenants_webhook_deliveries(server, api, webhook_receiver):
    made = await api.json("PUT", "/api/webhook", {"url": webhook_receiver.url}, ADMIN,
                          expect=201)
    webhook_receiver.secret = made["secret"]
    mine = await notify(api, user_id="alice", channels=["webhook"])
    [hook] = await settled(api, mine)
    assert hook["channel"] == "webhook"
    seen = await api.json("GET", f"/api/notifications/{mine}/deliveries", tok=ALICE)
    assert seen["deliveries"] == []  # the webhook, its URL's errors: the admins' business
