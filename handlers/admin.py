"""The admin dashboard (`/admin`, `/admin/ws`) and the demo page (`/demo`): server-rendered."""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import tornado.web
import tornado.websocket

from tidings import validation
from tidings.errors import TidingsError
from tidings.limits import RateLimiter

from .base import ServicesMixin, set_page_headers, without_secrets

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


def operator_only(method: Callable[..., Any]) -> Callable[..., Any]:
    """Like ``tornado.web.authenticated``, but the login's ``next`` never carries a secret
    query parameter (a ``?token=`` would be logged and kept in the browser's history)."""

    @functools.wraps(method)
    def wrapper(self: PageHandler, *args: Any, **kwargs: Any) -> Any:
        if not self.current_user:
            if self.request.method in ("GET", "HEAD"):
                target = without_secrets(self.request.uri or "/admin")
                self.redirect("/admin/login?" + urlencode({"next": target}))
                return None
            raise tornado.web.HTTPError(403)
        return method(self, *args, **kwargs)
    return wrapper


def local_path(target: str | None, default: str = "/admin") -> str:
    """``target`` when a browser would read it as a path on this server, else ``default``:
    no scheme, no host, no ``//`` or ``/\\`` (browsers read a backslash as a slash), and no
    control characters (browsers drop tabs and newlines, so ``/\t/host`` is ``//host``)."""
    if not target or not target.startswith("/"):
        return default
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target) or "\\" in target:
        return default
    if target.startswith("//") or urlsplit(target).scheme or urlsplit(target).netloc:
        return default
    return without_secrets(target)


class PageHandler(OperatorMixin, tornado.web.RequestHandler):
    """Renders Jinja2 templates."""

    def set_default_headers(self) -> None:
        set_page_headers(self)

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
        once = self.get_query_argument("once", None)
        if once is not None:  # a one-time link (--dev prints one)
            if self.services.dashboard.login_links.redeem(once):
                self._signed_in()
                return
            self.set_status(400)
            self.render_page("login.html", error="This login link was used already or has "
                             "expired.", next=self._next(),
                             login_disabled=not self.services.settings.admin_password)
            return
        self.render_page("login.html", error=None, next=self._next(),
                         login_disabled=not self.services.settings.admin_password)

    def _signed_in(self) -> None:
        self.set_signed_cookie(COOKIE, "admin", expires_days=COOKIE_DAYS, httponly=True,
                               samesite="Strict", secure=self.is_https())
        log.info("dashboard login from %s", self.client_ip())
        self.redirect(self._next())

    async def post(self) -> None:
        password = self.services.settings.admin_password
        guard = self.services.dashboard.logins
        ip = self.client_ip()
        # Decided before any await: parallel attempts are counted as they start.
        refused = guard.begin(ip)
        if refused:
            log.warning("dashboard login from %s refused: too many failures", ip)
            retry = RateLimiter.retry_after(refused)
            self.set_status(429)
            self.set_header("Retry-After", str(retry))
            self.render_page("login.html", error=f"Too many attempts: try again in {retry} s.",
                             next=self._next(), login_disabled=not password)
            return
        given = self.get_body_argument("password", "")
        ok = bool(password) and hmac.compare_digest(given.encode(), str(password).encode())
        failures = guard.end(ip, ok)
        if ok:
            self._signed_in()
            return
        log.warning("failed dashboard login from %s (%d in a row)", ip, failures)
        self.set_status(401 if password else 403)
        self.render_page("login.html", error="Wrong password." if password else None,
                         next=self._next(), login_disabled=not password)

    def _next(self) -> str:
        return local_path(self.get_argument("next", "/admin"))


class LogoutHandler(PageHandler):
    def post(self) -> None:
        self.clear_cookie(COOKIE)
        self.redirect("/admin/login")


class OverviewHandler(PageHandler):
    @operator_only
    async def get(self) -> None:
        self.render_page("admin_overview.html", overview=await self.services.dashboard.overview(),
                         base_url=f"{'https' if self.is_https() else 'http'}://"
                                  f"{self.request.host}")


class TenantHandler(PageHandler):
    """A tenant's page, and its form: a test notification to one user or the whole tenant."""

    @operator_only
    async def get(self, tenant_id: str) -> None:
        await self.show(tenant_id, sent=self.get_query_argument("sent", None))

    @operator_only
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
                         notifications=await dashboard.recent(tenant_id),
                         scheduled=await self.services.scheduler.pending(tenant_id), **context)


class AdminSocket(OperatorMixin, tornado.websocket.WebSocketHandler):
    """Pushes the overview to the dashboard whenever it changes; a subscriber, not a poller."""

    async def open(self, *args: Any, **kwargs: Any) -> None:
        if not self.current_user:
            # Closed after the upgrade, with a code the page can read: it goes to the login.
            self.close(4401, "log in to the dashboard first")
            return
        dashboard = self.services.dashboard
        self.push(await dashboard.join(self.push))
        tenant_id = self.get_query_argument("tenant", None)
        if tenant_id:  # a tenant's page: its receipts too
            dashboard.watch(self.push, tenant_id)

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
