"""The admin dashboard (`/admin`, `/admin/ws`) and the demo page (`/demo`): server-rendered."""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any
from urllib.parse import quote

import tornado.web
import tornado.websocket

from tidings import validation
from tidings.errors import TidingsError

from .base import ServicesMixin

log = logging.getLogger("tidings.admin")

COOKIE = "tidings_admin"
COOKIE_DAYS = 1


class OperatorMixin(ServicesMixin):
    """The operator is known by a signed cookie, on the pages and on the dashboard's socket."""

    def get_current_user(self) -> str | None:
        if not self.services.settings.admin_password:
            return None
        value = self.get_signed_cookie(COOKIE, max_age_days=COOKIE_DAYS)  # type: ignore[attr-defined]
        return value.decode() if value else None


class PageHandler(OperatorMixin, tornado.web.RequestHandler):
    """Renders Jinja2 templates."""

    def get_login_url(self) -> str:
        return "/admin/login"

    def render_page(self, template: str, **context: Any) -> None:
        env = self.settings["jinja"]
        html = env.get_template(template).render(
            static_url=self.static_url, xsrf_form_html=self.xsrf_form_html,
            current_user=self.current_user, **context)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(html)


class LoginHandler(PageHandler):
    def get(self) -> None:
        self.render_page("login.html", error=None, next=self._next(),
                         login_disabled=not self.services.settings.admin_password)

    async def post(self) -> None:
        password = self.services.settings.admin_password
        logins = self.services.dashboard.logins
        ip = self.request.remote_ip or ""
        delay = logins.delay(ip)
        if delay:
            await asyncio.sleep(delay)  # the throttle itself: repeated failures are slowed
        given = self.get_body_argument("password", "")
        if password and hmac.compare_digest(given.encode(), str(password).encode()):
            logins.succeeded(ip)
            self.set_signed_cookie(COOKIE, "admin", expires_days=COOKIE_DAYS, httponly=True,
                                   samesite="Strict",
                                   secure=self.request.protocol == "https")
            log.info("dashboard login from %s", ip)
            self.redirect(self._next())
            return
        failures = logins.failed(ip)
        log.warning("failed dashboard login from %s (%d in a row)", ip, failures)
        self.set_status(401 if password else 403)
        self.render_page("login.html", error="Wrong password." if password else None,
                         next=self._next(), login_disabled=not password)

    def _next(self) -> str:
        target = self.get_argument("next", "/admin")
        # Only local paths: never an open redirect.
        return target if target.startswith("/") and not target.startswith("//") else "/admin"


class LogoutHandler(PageHandler):
    def post(self) -> None:
        self.clear_cookie(COOKIE)
        self.redirect("/admin/login")


class OverviewHandler(PageHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        self.render_page("admin_overview.html", overview=await self.services.dashboard.overview(),
                         base_url=f"{self.request.protocol}://{self.request.host}")


class TenantHandler(PageHandler):
    """A tenant's page, and its form: a test notification to one user or the whole tenant."""

    @tornado.web.authenticated
    async def get(self, tenant_id: str) -> None:
        await self.show(tenant_id, sent=self.get_query_argument("sent", None))

    @tornado.web.authenticated
    async def post(self, tenant_id: str) -> None:
        form = {k: self.get_body_argument(k, "") for k in
                ("target", "user_id", "title", "message", "type", "priority")}
        body: dict[str, Any] = {k: form[k] for k in ("title", "message", "type", "priority")
                                if form[k]}
        if form["target"] == "broadcast":
            body["broadcast"] = True
        else:
            body["user_id"] = form["user_id"]
        try:
            items, _ = validation.notifications(body, tenant_id)
        except TidingsError as e:
            self.set_status(400)
            await self.show(tenant_id, error=e.message, form=form)
            return
        published = await self.services.publisher.create(items)
        reached = published.delivery["websocket"] + published.delivery["sse"]
        sent = (f"Sent #{published.notifications[0]['id']} to {reached} "
                f"connection{'' if reached == 1 else 's'}.")
        self.redirect(f"/admin/tenants/{quote(tenant_id)}?sent={quote(sent)}")

    async def show(self, tenant_id: str, **context: Any) -> None:
        dashboard = self.services.dashboard
        self.render_page("admin_tenant.html", tenant_id=tenant_id,
                         tenant=await dashboard.tenant_row(tenant_id),
                         users=dashboard.users(tenant_id),
                         notifications=await dashboard.recent(tenant_id), **context)


class AdminSocket(OperatorMixin, tornado.websocket.WebSocketHandler):
    """Pushes the overview to the dashboard whenever it changes; a subscriber, not a poller."""

    async def open(self, *args: Any, **kwargs: Any) -> None:
        if not self.current_user:
            # Closed after the upgrade, with a code the page can read: it goes to the login.
            self.close(4401, "log in to the dashboard first")
            return
        self.push(await self.services.dashboard.join(self.push))

    def push(self, snapshot: str) -> None:
        try:
            self.write_message(snapshot)
        except tornado.websocket.WebSocketClosedError:
            self.services.dashboard.unsubscribe(self.push)

    def on_message(self, message: str | bytes) -> None:
        """The dashboard only listens."""

    def on_close(self) -> None:
        self.services.dashboard.unsubscribe(self.push)


class DemoHandler(PageHandler):
    def get(self) -> None:
        self.render_page("demo.html", token=self.get_query_argument("token", None),
                         tenant_id=self.get_query_argument("tenant_id", None),
                         user_id=None)
