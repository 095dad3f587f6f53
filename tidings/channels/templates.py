"""Message templates: sandboxed Jinja2 over the notification's fields.

Each (type, channel) may have a tenant's own ``{subject, text, html}``; what it leaves
empty comes from the channel's built-in default. HTML is autoescaped, text is not. A
template that fails raises TemplateError, which the caller records on the delivery."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from .base import DeliveryError, Rendered

FIELDS = ("subject", "text", "html")
MAX_SOURCE = 20_000  # characters in one template
MAX_OUTPUT = 100_000  # characters one template may produce


class TemplateError(DeliveryError):
    """A template that does not compile or render; ``field`` names the part at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"template {field}: {message}", permanent=True)
        self.field = field


@dataclasses.dataclass(frozen=True, slots=True)
class MessageTemplate:
    subject: str = ""
    text: str = ""
    html: str = ""


_EMAIL_HTML = """\
<!doctype html>
<html><body style="font-family: sans-serif">
<h2>{{ title }}</h2>
{% if message %}<p>{{ message }}</p>{% endif %}
<p style="color: #888; font-size: small">{{ type }} · {{ priority }}</p>
</body></html>
"""

DEFAULTS: Mapping[str, MessageTemplate] = {
    "email": MessageTemplate("{{ title }}", "{{ title }}\n\n{{ message }}\n", _EMAIL_HTML),
    "sms": MessageTemplate(text="{{ title }}{% if message %}: {{ message }}{% endif %}"),
    "push": MessageTemplate("{{ title }}", "{{ message }}"),
    "webhook": MessageTemplate(),  # the body is the notification JSON itself
}

DIGEST = MessageTemplate(
    "{{ notifications | length }} new notification{{ 's' if notifications | length != 1 }}",
    "{% for n in notifications %}- {{ n.title }}{% if n.message %}: {{ n.message }}{% endif %}"
    "\n{% endfor %}",
    "<!doctype html>\n<html><body style=\"font-family: sans-serif\"><ul>\n"
    "{% for n in notifications %}<li><b>{{ n.title }}</b>{% if n.message %}: {{ n.message }}"
    "{% endif %}</li>\n{% endfor %}</ul></body></html>\n",
)

SAMPLE = {"id": 1, "tenant_id": "acme", "user_id": "alice", "type": "info",
          "title": "Build finished", "message": "main is green", "data": {"build": 7},
          "priority": "normal", "created_at": "2026-01-01T00:00:00.000Z", "read_at": None}
# Sends also give templates the recipient as `user` (the orchestrator's `extra`).
SAMPLE_USER = {"id": "alice", "email": "alice@example.com", "phone": "+14155550123",
               "timezone": "Europe/Berlin", "locale": "en"}


MAX_BITS = 100_000  # size of an integer a template may compute


def _too_big(op: str, left: Any, right: Any) -> bool:
    sized = (str, list, tuple)
    if op == "**" and isinstance(left, int) and isinstance(right, int):
        return right * max(left.bit_length(), 1) > MAX_BITS
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, sized) and isinstance(n, int):
                return len(seq) * n > MAX_OUTPUT
        if isinstance(left, int) and isinstance(right, int):
            return left.bit_length() + right.bit_length() > MAX_BITS
    if op == "+" and isinstance(left, sized) and isinstance(right, sized):
        return len(left) + len(right) > MAX_OUTPUT
    return False


class _Sandbox(SandboxedEnvironment):
    """The stock sandbox blocks attribute escapes but not ``'x' * 10**9`` or ``2 ** 10**9``,
    which would stall the whole process; results that large are refused here."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any,
                   right: Any) -> Any:
        if _too_big(operator, left, right):
            raise SecurityError("result too large")
        return self.binop_table[operator](left, right)


_text_env = _Sandbox(autoescape=False, keep_trailing_newline=True)
_html_env = _Sandbox(autoescape=True, keep_trailing_newline=True)


@functools.lru_cache(maxsize=512)
def _compile(source: str, html: bool) -> jinja2.Template:
    return (_html_env if html else _text_env).from_string(source)


def _render(field: str, source: str, context: Mapping[str, Any]) -> str:
    if len(source) > MAX_SOURCE:
        raise TemplateError(field, f"longer than {MAX_SOURCE} characters")
    try:
        out = _compile(source, field == "html").render(context)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(field, f"{e.message} (line {e.lineno})") from None
    except Exception as e:  # anything a template can raise: SecurityError, ZeroDivision, ...
        raise TemplateError(field, f"{type(e).__name__}: {e}") from None
    if len(out) > MAX_OUTPUT:
        raise TemplateError(field, f"output longer than {MAX_OUTPUT} characters")
    return out


def _render_all(template: MessageTemplate, default: MessageTemplate,
                context: Mapping[str, Any], notification: Mapping[str, Any]) -> Rendered:
    parts = {f: _render(f, getattr(template, f) or getattr(default, f), context)
             for f in FIELDS}
    return Rendered(notification=notification, **parts)


def render(notification: Mapping[str, Any], channel: str,
           template: MessageTemplate | None = None,
           extra: Mapping[str, Any] | None = None) -> Rendered:
    """Renders one notification for ``channel`` with the tenant's template (or the default).
    Templates see the notification's fields (``title``, ``message``, ``data``, ...), the
    whole of it as ``notification``, and whatever ``extra`` adds (e.g. ``user``)."""
    context = {**notification, "notification": notification, **(extra or {})}
    default = DEFAULTS.get(channel, MessageTemplate())
    return _render_all(template or default, default, context, notification)


def render_digest(notifications: Sequence[Mapping[str, Any]],
                  template: MessageTemplate | None = None,
                  extra: Mapping[str, Any] | None = None) -> Rendered:
    """One email listing ``notifications`` (oldest first); templates see ``notifications``."""
    context = {"notifications": list(notifications), **(extra or {})}
    return _render_all(template or DIGEST, DIGEST, context, {})


def validate(channel: str, template: MessageTemplate) -> None:
    """For ``PUT /api/templates/{type}/{channel}``: compiles each part and renders it over a
    sample notification; raises TemplateError naming the part at fault."""
    if channel not in DEFAULTS:
        raise TemplateError("channel", f"unknown channel {channel!r}")
    for field in FIELDS:
        source = getattr(template, field)
        if not isinstance(source, str):
            raise TemplateError(field, "must be a string")
        if source:
            _render(field, source, {**SAMPLE, "notification": SAMPLE, "user": SAMPLE_USER})
