"""Templates: built-in defaults, a tenant's overrides, the sandbox, and errors as values."""

from __future__ import annotations

import pytest

from tidings.channels import DeliveryError, MessageTemplate, TemplateError, render, validate
from tidings.channels.templates import render_digest

NOTIFICATION = {"id": 42, "tenant_id": "acme", "user_id": "alice", "type": "warning",
                "title": "Disk <b>full</b>", "message": "sda1 at 93%", "data": {"host": "db1"},
                "priority": "high", "created_at": "2026-11-24T04:00:00.123Z", "read_at": None}


def test_email_default_has_subject_text_and_escaped_html() -> None:
    r = render(NOTIFICATION, "email")
    assert r.subject == "Disk <b>full</b>"
    assert r.text == "Disk <b>full</b>\n\nsda1 at 93%\n"
    assert "<h2>Disk &lt;b&gt;full&lt;/b&gt;</h2>" in r.html and "<b>full</b>" not in r.html
    assert r.notification == NOTIFICATION


@pytest.mark.parametrize("channel, subject, text", [
    ("sms", "", "Disk <b>full</b>: sda1 at 93%"),
    ("push", "Disk <b>full</b>", "sda1 at 93%"),
    ("webhook", "", ""),
])
def test_defaults_per_channel(channel: str, subject: str, text: str) -> None:
    r = render(NOTIFICATION, channel)
    assert (r.subject, r.text, r.html) == (subject, text, "")


def test_override_fills_what_it_gives_and_defaults_the_rest() -> None:
    template = MessageTemplate(
        subject="[{{ priority | upper }}] {{ title }}",
        html="<p>{{ title }} on {{ data.host }}</p>{{ extra }}")
    r = render(NOTIFICATION, "email", template, extra={"extra": "<script>"})
    assert r.subject == "[HIGH] Disk <b>full</b>"
    assert r.html == "<p>Disk &lt;b&gt;full&lt;/b&gt; on db1</p>&lt;script&gt;"
    assert r.text == "Disk <b>full</b>\n\nsda1 at 93%\n"  # the default


def test_missing_field_renders_empty() -> None:
    r = render(NOTIFICATION, "sms", MessageTemplate(text="{{ data.nothing }}|{{ nope }}"))
    assert r.text == "|"


@pytest.mark.parametrize("source, problem", [
    ("{{ title.__class__.__mro__ }}", "SecurityError"),  # the sandbox
    ("{{ 'x' * 100000000 }}", "too large"),  # memory bomb
    ("{{ 2 ** 1000000000 }}", "too large"),  # CPU bomb
    ("{% set ns = namespace(s='ab') %}{% for _ in range(40) %}{% set ns.s = ns.s + ns.s %}"
     "{% endfor %}", "too large"),
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ("{% for %}", "line 1"),  # syntax
])
def test_broken_template_raises_template_error(source: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=problem) as caught:
        render(NOTIFICATION, "email", MessageTemplate(text=source))
    assert caught.value.field == "text"
    assert isinstance(caught.value, DeliveryError) and caught.value.permanent


def test_validate_names_the_part_at_fault() -> None:
    validate("email", MessageTemplate("{{ title }}", "{{ message }}", "<p>{{ data.build }}</p>"))
    with pytest.raises(TemplateError) as caught:
        validate("email", MessageTemplate(subject="ok", html="{{ title"))
    assert caught.value.field == "html" and str(caught.value).startswith("template html:")
    with pytest.raises(TemplateError, match="SecurityError"):
        validate("sms", MessageTemplate(text="{{ ''.__class__.__mro__ }}"))
    with pytest.raises(TemplateError) as caught:
        validate("fax", MessageTemplate(text="hi"))
    assert caught.value.field == "channel"


def test_digest_lists_every_notification() -> None:
    items = [dict(NOTIFICATION, id=i, title=f"Event {i}") for i in range(10)]
    r = render_digest(items)
    assert r.subject == "10 new notifications"
    assert r.text.splitlines() == [f"- Event {i}: sda1 at 93%" for i in range(10)]
    assert r.html.count("<li>") == 10
    assert render_digest(items[:1]).subject == "1 new notification"
