"""Email done right: one-click unsubscribe links, the suppression list, SES bounce and
complaint notifications (SNS)."""

from __future__ import annotations

from typing import Any

from tidings import errors, suppressions, validation
from tidings.errors import TidingsError
from tidings.models import Principal
from tidings.unsubscribe import Unsubscription, unsubscribe

from .base import BaseHandler, set_page_headers


def _admin(who: Principal) -> None:
    if not who.is_admin:
        raise errors.forbidden("only a tenant admin may do this")


class UnsubscribeHandler(BaseHandler):
    """``/unsubscribe/{token}``, the link in every email's List-Unsubscribe header. No token,
    cookie or XSRF field: the signed link is the authority (RFC 8058). GET shows a page that
    asks (mail scanners follow links); POST with ``List-Unsubscribe=One-Click`` unsubscribes.
    A browser gets HTML, anything else JSON."""

    def _wants_html(self) -> bool:
        return "text/html" in self.request.headers.get("Accept", "")

    def _page(self, status: int = 200, **context: Any) -> None:
        set_page_headers(self)
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        context = {"type": None, "tenant_id": None, "done": False, "error": None, **context}
        html = self.settings["jinja"].get_template("unsubscribe.html").render(
            static_url=self.static_url, current_user=None, **context)
        self.finish(html)

    def get(self, token: str) -> None:
        target = self.services.links.read(token)
        if self._wants_html():
            self._page(type=target.type, tenant_id=target.tenant_id)
        else:
            self.write_json({"type": target.type, "unsubscribed": False})

    async def post(self, token: str) -> None:
        target: Unsubscription = self.services.links.read(token)
        if self.get_body_argument("List-Unsubscribe", None) != "One-Click":
            raise errors.invalid("List-Unsubscribe", "the body must be "
                                 "List-Unsubscribe=One-Click (RFC 8058)")
        await unsubscribe(self.services.directory, target)
        if self._wants_html():
            self._page(type=target.type, tenant_id=target.tenant_id, done=True)
        else:
            self.write_json({"type": target.type, "unsubscribed": True})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if self._wants_html() and isinstance(error, TidingsError):
            self._page(error.status, error=error.message)
            return
        super().write_error(status_code, **kwargs)


class SuppressionsHandler(BaseHandler):
    """The tenant's suppression list (admin): list a page, or add an address by hand."""

    async def get(self) -> None:
        who = self.authenticate()
        _admin(who)
        limit, after = suppressions.page(self.get_query_argument("limit", None),
                                         self.get_query_argument("after", None))
        found = await self.services.directory.suppressions(who.tenant_id, after, limit)
        self.write_json({"suppressions": found,
                         "next_after": found[-1]["address"] if len(found) == limit else None})

    async def post(self) -> None:
        who = self.authenticate()
        _admin(who)
        body = self.json_body()
        address = suppressions.checked(body.get("address"))
        detail = body.get("detail")
        if detail is not None and (not isinstance(detail, str) or len(detail) > 500):
            raise errors.invalid("detail", "must be a string of at most 500 characters")
        added = await self.services.directory.suppress(who.tenant_id, address, "manual",
                                                        detail)
        self.write_json({"address": address, "added": added}, 201 if added else 200)


class SuppressionHandler(BaseHandler):
    async def delete(self, address: str) -> None:
        who = self.authenticate()
        _admin(who)
        if not await self.services.directory.unsuppress(who.tenant_id,
                                                         suppressions.normalize(address)):
            raise errors.not_found(f"suppression of {address}")
        self.no_content()


class SesEventsHandler(BaseHandler):
    """``POST /api/ses/events``: Amazon SNS posts SES bounce and complaint notifications here
    (an HTTPS subscription). No token: the SNS signature is checked instead."""

    async def post(self) -> None:
        envelope = validation.loads(self.request.body or b"", "body")
        outcome = await self.services.ses_events.receive(envelope)
        self.write_json(outcome)
