"""REST for the channels: recipients, preferences, push, webhooks, templates, deliveries."""

from __future__ import annotations

from tidings import errors, preferences, validation
from tidings.channels import MessageTemplate, PushSubscription, TemplateError, new_secret
from tidings.channels.templates import check as check_template
from tidings.channels.webhook import check_url
from tidings.models import Principal

from .base import BaseHandler


def _invalid(e: ValueError) -> errors.TidingsError:
    """A channel's ValueError ("field: problem") as a 400 naming the field."""
    field, _, problem = str(e).partition(": ")
    return errors.invalid(field, problem)


def _may_manage(who: Principal, user_id: str) -> None:
    if user_id != who.user_id and not who.acts_for_tenant:
        raise errors.forbidden("a user may only read and change its own profile")


def _admin(who: Principal) -> None:
    if not who.is_admin:
        raise errors.forbidden("only a tenant admin may do this")


class UserHandler(BaseHandler):
    async def get(self, user_id: str) -> None:
        who = self.authenticate()
        _may_manage(who, user_id)
        found = await self.services.directory.recipient(who.tenant_id, user_id)
        if found is None:
            raise errors.not_found(f"user {user_id}")
        self.write_json({"user_id": user_id, **found})

    async def put(self, user_id: str) -> None:
        who = self.authenticate()
        _may_manage(who, user_id)
        fields = validation.recipient(self.json_body())
        await self.services.directory.put_recipient(who.tenant_id, user_id, fields)
        self.write_json({"user_id": user_id, **fields})


class PreferencesHandler(BaseHandler):
    def _owner(self, who: Principal) -> str:
        """'' (the tenant's defaults) with ?tenant_default=true, which is for admins."""
        if validation.flag(self.get_query_argument("tenant_default", None), "tenant_default"):
            _admin(who)
            return ""
        return who.user_id

    async def get(self) -> None:
        who = self.authenticate()
        owner = self._owner(who)
        store = self.services.directory
        layers = [await store.preferences(who.tenant_id, "")]
        if owner:
            layers.append(await store.preferences(who.tenant_id, owner))
        self.write_json(preferences.merge(*layers))

    async def put(self) -> None:
        who = self.authenticate()
        owner = self._owner(who)
        change = preferences.validate(self.json_body())
        store = self.services.directory
        stored = await store.preferences(who.tenant_id, owner)
        await store.put_preferences(who.tenant_id, owner, preferences.apply(stored, change))
        await self.services.hub.preferences_changed(who.tenant_id)
        await self.get()


class VapidKeyHandler(BaseHandler):
    def get(self) -> None:
        push = self.services.channels.get("push")
        if push is None:
            raise errors.channel_off("web push is off: start tidings with --vapid-subject")
        self.write_json({"key": push.public_key})  # type: ignore[attr-defined]


class PushSubscriptionsHandler(BaseHandler):
    async def post(self) -> None:
        who = self.authenticate()
        try:
            sub = PushSubscription.from_json(self.json_body())
            self.settings["outbound"].check_url(sub.endpoint, "endpoint")
        except ValueError as e:
            raise _invalid(e) from None
        if not await self.services.directory.add_subscription(
                who.tenant_id, who.user_id, sub.endpoint, sub.p256dh, sub.auth):
            raise errors.conflict("endpoint", "this push endpoint belongs to another user")
        self.write_json({"endpoint": sub.endpoint}, 201)

    async def delete(self) -> None:
        who = self.authenticate()
        endpoint = self.get_query_argument("endpoint", None)
        if endpoint is None and self.request.body:
            endpoint = self.json_body().get("endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise errors.invalid("endpoint", "is required (query or JSON body)")
        if not await self.services.directory.remove_subscription(who.tenant_id, endpoint,
                                                                  who.user_id):
            raise errors.not_found("push subscription")
        self.no_content()


class WebhookHandler(BaseHandler):
    async def get(self) -> None:
        who = self.authenticate()
        _admin(who)
        hook = await self.services.directory.webhook(who.tenant_id)
        if hook is None:
            raise errors.not_found("webhook")
        self.write_json({"url": hook["url"]})

    async def put(self) -> None:
        who = self.authenticate()
        _admin(who)
        url = self.json_body().get("url")
        try:
            url = check_url(url if isinstance(url, str) else "", self.settings["outbound"])
        except ValueError as e:
            raise _invalid(e) from None
        store = self.services.directory
        existing = await store.webhook(who.tenant_id)
        secret = existing["secret"] if existing else new_secret()
        await store.put_webhook(who.tenant_id, url, secret)
        # The secret is shown once, when it is made; changing the URL keeps it.
        self.write_json({"url": url, **({} if existing else {"secret": secret})},
                        200 if existing else 201)

    async def delete(self) -> None:
        who = self.authenticate()
        _admin(who)
        if not await self.services.directory.delete_webhook(who.tenant_id):
            raise errors.not_found("webhook")
        self.no_content()


class TemplateHandler(BaseHandler):
    async def get(self, type_: str, channel: str) -> None:
        who = self.authenticate()
        _admin(who)
        found = await self.services.directory.template(who.tenant_id, type_, channel)
        if found is None:
            raise errors.not_found(f"template {type_}/{channel}")
        self.write_json(found)

    async def put(self, type_: str, channel: str) -> None:
        who = self.authenticate()
        _admin(who)
        body = self.json_body()
        parts = {k: body.get(k) or "" for k in ("subject", "text", "html")}
        try:
            await check_template(channel, MessageTemplate(**parts))  # off the event loop
        except TemplateError as e:
            raise errors.invalid(e.field, str(e)) from None
        await self.services.directory.put_template(who.tenant_id, type_, channel, parts)
        self.write_json(parts)

    async def delete(self, type_: str, channel: str) -> None:
        who = self.authenticate()
        _admin(who)
        if not await self.services.directory.delete_template(who.tenant_id, type_, channel):
            raise errors.not_found(f"template {type_}/{channel}")
        self.no_content()


class DeliveriesHandler(BaseHandler):
    async def get(self, notification_id: str) -> None:
        who = self.authenticate()
        nid = validation.whole_id(notification_id, "id")
        found = await self.services.store.notification(nid)
        if found is None or found["tenant_id"] != who.tenant_id:
            raise errors.not_found(f"notification {notification_id}")
        mine = None if who.acts_for_tenant else who.user_id
        if mine is not None and found["user_id"] not in (None, mine):
            raise errors.not_found(f"notification {notification_id}")
        found_deliveries = (await self.services.queue.for_notifications(
            [nid], who.tenant_id, mine))[nid]
        if mine is not None:  # the tenant's webhook is the admins' business, not the user's
            found_deliveries = [d for d in found_deliveries if d["channel"] != "webhook"]
        self.write_json({"deliveries": found_deliveries})
