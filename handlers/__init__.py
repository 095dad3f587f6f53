"""The URL table: every route, the handler that serves it and the services it gets."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jinja2
import tornado.web

from tidings.limits import RateLimiter
from tidings.outbound import OutboundPolicy
from tidings.services import Services

from . import admin, api, channels, email, sse, tenant, ws
from .base import NotFoundHandler, log_request, proxy_networks

ROOT = Path(__file__).resolve().parent.parent


def _assets() -> Path:
    """The folder with templates/ and static/: the source tree (a checkout, an editable
    install), else share/tidings where `pip install .` puts them (under the environment's
    prefix; beside the packages in the .pyz, which unpacks itself before it starts)."""
    for base in (ROOT, ROOT / "share" / "tidings", Path(sys.prefix) / "share" / "tidings"):
        if (base / "templates").is_dir() and (base / "static").is_dir():
            return base
    return ROOT


ASSETS = _assets()
WS_MAX_MESSAGE = 64 * 1024


def routes(services: Services) -> list[tornado.web.URLSpec]:
    s = {"services": services}
    return [  # matched in order: the busiest first
        tornado.web.url(r"/api/notifications", api.NotificationsHandler, s),
        tornado.web.url(r"/ws/notifications", ws.NotificationSocket, s),
        tornado.web.url(r"/api/notifications/stream", sse.NotificationStream, s),
        tornado.web.url(r"/api/notifications/stats", api.StatsHandler, s),
        tornado.web.url(r"/api/notifications/connections", api.ConnectionsHandler, s),
        tornado.web.url(r"/api/notifications/read-all", api.ReadAllHandler, s),
        tornado.web.url(r"/api/notifications/ack", api.AckHandler, s),
        tornado.web.url(r"/api/notifications/(\d+)", api.NotificationHandler, s),
        tornado.web.url(r"/api/notifications/(\d+)/read", api.ReadHandler, s),
        tornado.web.url(r"/api/notifications/(\d+)/deliveries", channels.DeliveriesHandler, s),
        tornado.web.url(r"/api/notifications/(\d+)/receipts", api.ReceiptsHandler, s),
        tornado.web.url(r"/api/users/([^/]+)", channels.UserHandler, s),
        tornado.web.url(r"/api/preferences", channels.PreferencesHandler, s),
        tornado.web.url(r"/api/push/vapid-public-key", channels.VapidKeyHandler, s),
        tornado.web.url(r"/api/push/subscriptions", channels.PushSubscriptionsHandler, s),
        tornado.web.url(r"/api/webhook", channels.WebhookHandler, s),
        tornado.web.url(r"/api/templates/([^/]+)/([^/]+)", channels.TemplateHandler, s),
        tornado.web.url(r"/api/scheduled", api.ScheduledHandler, s),
        tornado.web.url(r"/api/scheduled/([^/]+)", api.ScheduledEntryHandler, s),
        tornado.web.url(r"/api/tickets", api.TicketsHandler, s),
        tornado.web.url(r"/api/suppressions", email.SuppressionsHandler, s),
        tornado.web.url(r"/api/suppressions/([^/]+)", email.SuppressionHandler, s),
        tornado.web.url(r"/api/ses/events", email.SesEventsHandler, s),
        tornado.web.url(r"/api/tenant", tenant.TenantHandler, s),
        tornado.web.url(r"/api/openapi.json", api.OpenAPIHandler, s),
        tornado.web.url(r"/healthz", api.HealthHandler, s),
        tornado.web.url(r"/metrics", api.MetricsHandler, s),
        tornado.web.url(r"/admin", admin.OverviewHandler, s),
        tornado.web.url(r"/admin/login", admin.LoginHandler, s),
        tornado.web.url(r"/admin/logout", admin.LogoutHandler, s),
        tornado.web.url(r"/admin/ws", admin.AdminSocket, s),
        tornado.web.url(r"/admin/tenants/([^/]+)", admin.TenantHandler, s),
        tornado.web.url(r"/admin/tenants/([^/]+)/send", admin.TenantHandler, s),
        tornado.web.url(r"/demo", admin.DemoHandler, s),
        tornado.web.url(r"/unsubscribe/([^/]+)", email.UnsubscribeHandler, s),
        tornado.web.url(r"/", tornado.web.RedirectHandler, {"url": "/demo"}),
    ]


def make_app(services: Services, **overrides: Any) -> tornado.web.Application:
    settings = services.settings
    app_settings: dict[str, Any] = {
        "log_function": log_request,
        "static_path": str(ASSETS / "static"),
        "template_path": str(ASSETS / "templates"),
        "websocket_max_message_size": WS_MAX_MESSAGE,
        "websocket_ping_interval": settings.heartbeat,
        "websocket_ping_timeout": settings.heartbeat,  # Tornado caps it at the interval
        "default_handler_class": NotFoundHandler,
        "default_handler_args": {"services": services},
        "jinja": jinja2.Environment(loader=jinja2.FileSystemLoader(ASSETS / "templates"),
                                    autoescape=True),
        "xsrf_cookies": True,
        "cookie_secret": str(settings.cookie_secret or ""),
        "tenant_rate": RateLimiter(settings.tenant_rate),
        "outbound": OutboundPolicy.from_settings(settings),
        "trusted_proxies": proxy_networks(settings.trusted_proxies),
        **overrides,
    }
    return tornado.web.Application(routes(services), **app_settings)
