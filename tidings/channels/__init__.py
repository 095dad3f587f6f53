"""Delivery channels (email, SMS, web push, webhooks) behind one Protocol, and their templates.

    channels = build_channels(settings)             # at start; ConfigError names a bad setting
    rendered = render(notification, "email", tenant_template_or_None)   # TemplateError
    provider_id = await channels["email"].send(recipient, rendered)     # DeliveryError
    await close_channels(channels)                   # at shutdown
"""

from .base import (
    Channel,
    ConfigError,
    DeliveryError,
    PushSubscription,
    Recipient,
    Rendered,
    SubscriptionGone,
    WebhookTarget,
)
from .build import build_channels, close_channels
from .templates import MessageTemplate, TemplateError, render, render_digest, validate
from .webhook import InvalidSignature, new_secret, sign, verify_signature

__all__ = [
    "Channel", "ConfigError", "DeliveryError", "InvalidSignature", "MessageTemplate",
    "PushSubscription", "Recipient", "Rendered", "SubscriptionGone", "TemplateError",
    "WebhookTarget", "build_channels", "close_channels", "new_secret", "render",
    "render_digest", "sign", "validate", "verify_signature",
]
