"""Message templates: sandboxed Jinja2 over the notification's fields.

Each (type, channel) may have a tenant's own ``{subject, text, html}``; what it leaves
empty comes from the channel's built-in default. HTML is autoescaped, text is not. A
template that fails raises TemplateError, which the caller records on the delivery."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import multiprocessing
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .base import DeliveryError, Rendered

FIELDS = ("subject", "text", "html")
MAX_SOURCE = 20_000  # characters in one template


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
{% if actions %}<p>{% for a in actions %}<a href="{{ a.url }}">{{ a.label }}</a>
{%- if not loop.last %} · {% endif %}{% endfor %}</p>{% endif %}
<p style="color: #888; font-size: small">{{ type }} · {{ priority }}</p>
</body></html>
"""

DEFAULTS: Mapping[str, MessageTemplate] = {
    "email": MessageTemplate("{{ title }}", "{{ title }}\n\n{{ message }}\n"
                             "{% for a in actions %}\n{{ a.label }}: {{ a.url }}{% endfor %}"
                             "{% if actions %}\n{% endif %}", _EMAIL_HTML),
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

def sample() -> tuple[dict[str, Any], dict[str, Any]]:
    """A notification and a user to check templates against: made anew for each check, so no
    template ever sees (or could change) what another tenant's check sees."""
    notification = {"id": 1, "tenant_id": "acme", "user_id": "alice", "type": "info",
                    "title": "Build finished", "message": "main is green", "data": {"build": 7},
                    "priority": "normal", "created_at": "2026-01-01T00:00:00.000Z",
                    "read_at": None, "group": "build-7",
                    "actions": [{"label": "Open", "url": "https://example.com/builds/7"}]}
    # Sends also give templates the recipient as `user` (the orchestrator's `extra`).
    user = {"id": "alice", "email": "alice@example.com", "phone": "+14155550123",
            "timezone": "Europe/Berlin", "locale": "en"}
    return notification, user


# The budget of one render: time, and the size of any value it computes or outputs.
MAX_SECONDS = 1.0
MAX_VALUE = 256 * 1024  # characters or items
MAX_BITS = 100_000  # size of an integer a template may compute
CHECK_TIMEOUT = 3.0  # a PUT's check, in its own process, is cut off after this

_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("template_deadline",
                                                                 default=float("inf"))
_BIG_NUMBER = re.compile(r"\d{7,}")  # a width or precision of a million or more


def _over_budget() -> SecurityError:
    return SecurityError(f"too large or too slow: over its budget ({MAX_SECONDS:g} s, {MAX_VALUE // 1024} KiB)")


def _tick() -> None:
    if time.monotonic() > _deadline.get():
        raise _over_budget()


def _sized(value: Any) -> None:
    if isinstance(value, str | bytes | list | tuple | dict | set) and len(value) > MAX_VALUE:
        raise _over_budget()
    if isinstance(value, int) and not isinstance(value, bool) \
            and value.bit_length() > MAX_BITS:
        raise _over_budget()


def _check_args(args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuses arguments that ask for a huge result before it is computed: widths and counts
    (``ljust(10**9)``, ``center``, ``indent``, ``range``) and format strings with them."""
    for arg in (*args, *kwargs.values()):
        if isinstance(arg, int | float) and not isinstance(arg, bool) and abs(arg) > MAX_VALUE:
            raise _over_budget()
        if isinstance(arg, str) and _BIG_NUMBER.search(arg) and ("%" in arg or "{" in arg):
            raise _over_budget()


def _too_big(op: str, left: Any, right: Any) -> bool:
    sized = (str, list, tuple)
    if op == "**" and isinstance(left, int) and isinstance(right, int):
        return right * max(left.bit_length(), 1) > MAX_BITS
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, sized) and isinstance(n, int):
                return len(seq) * n > MAX_VALUE
        if isinstance(left, int) and isinstance(right, int):
            return left.bit_length() + right.bit_length() > MAX_BITS
    if op == "+" and isinstance(left, sized) and isinstance(right, sized):
        return len(left) + len(right) > MAX_VALUE
    if op == "%" and isinstance(left, str):
        return bool(_BIG_NUMBER.search(left))
    return False


class _Range:
    """``range`` for templates: at most MAX_VALUE items, and the time budget checked as it
    goes, so nested loops stop at the budget instead of running for minutes."""

    def __init__(self, *args: int) -> None:
        _check_args(args, {})
        self._range = range(*args)
        if len(self._range) > MAX_VALUE:
            raise _over_budget()

    def __len__(self) -> int:
        return len(self._range)

    def __iter__(self) -> Iterator[int]:
        for i, value in enumerate(self._range):
            if not i & 255:
                _tick()
            yield value


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_args(args[1:], kwargs)  # args[0] is the filtered value (or the environment)
        result = fn(*args, **kwargs)
        _sized(result)
        return result
    return call


def _budgeted(value: Any) -> Iterator[Any]:
    """What every ``{% for %}`` iterates: the loop's own items, with the time budget checked
    as it goes (nested loops over long strings have no call or output to check on)."""
    for i, item in enumerate(value):
        if not i & 255:
            _tick()
        yield item


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox (no attribute escapes, no changing lists or dicts) with a budget:
    time and size are checked on every call, attribute, operator, filter, range and output
    chunk, since the stock sandbox lets ``'x' * 10**9`` or nested ``range`` loops stall the
    whole process."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = _Range
        self.filters = {name: _guarded(fn) for name, fn in self.filters.items()}
        self.filters["_budgeted"] = _budgeted

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """Every ``{% for x in items %}`` becomes ``for x in items|_budgeted``: a filter, not
        a name, so a template cannot shadow it."""
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "_budgeted", [], [], None, None,
                                     lineno=loop.iter.lineno)
        return tree

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any,
                   right: Any) -> Any:
        _tick()
        if _too_big(operator, left, right):
            raise _over_budget()
        return self.binop_table[operator](left, right)

    def call(__self, __context: jinja2.runtime.Context, __obj: Any,  # noqa: N805
             *args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_args(args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        _sized(result)
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` of a string that asks for a huge width ('{:>999999999}'.format(1))
        is refused before it builds it: the width is in the string, not in an argument."""
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_args((value.__self__,), {})
        return wrapped

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)


_text_env = _Sandbox(autoescape=False, keep_trailing_newline=True)
_html_env = _Sandbox(autoescape=True, keep_trailing_newline=True)


@functools.lru_cache(maxsize=512)
def _compile(source: str, html: bool) -> jinja2.Template:
    return (_html_env if html else _text_env).from_string(source)


def _run(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """Renders chunk by chunk, within the time and size budget."""
    token = _deadline.set(time.monotonic() + MAX_SECONDS)
    try:
        out: list[str] = []
        size = 0
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_VALUE:
                raise _over_budget()
            _tick()
            out.append(chunk)
        return "".join(out)
    finally:
        _deadline.reset(token)


def _render(field: str, source: str, context: Mapping[str, Any]) -> str:
    if len(source) > MAX_SOURCE:
        raise TemplateError(field, f"longer than {MAX_SOURCE} characters")
    try:
        return _run(_compile(source, field == "html"), context)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(field, f"{e.message} (line {e.lineno})") from None
    except MemoryError:
        raise TemplateError(field, f"SecurityError: {_over_budget()}") from None
    except Exception as e:  # anything a template can raise: SecurityError, ZeroDivision, ...
        raise TemplateError(field, f"{type(e).__name__}: {e}") from None


def _render_all(template: MessageTemplate, default: MessageTemplate,
                context: Mapping[str, Any], notification: Mapping[str, Any]) -> Rendered:
    parts = {f: _render(f, getattr(template, f) or getattr(default, f), context)
             for f in FIELDS}
    return Rendered(parts["subject"], parts["text"], parts["html"], notification)


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
    """Compiles each part and renders it over a sample notification, within the budget;
    raises TemplateError naming the part at fault. Runs anywhere: see ``check``."""
    if channel not in DEFAULTS:
        raise TemplateError("channel", f"unknown channel {channel!r}")
    for field in FIELDS:
        source = getattr(template, field)
        if not isinstance(source, str):
            raise TemplateError(field, "must be a string")
        if source:
            notification, user = sample()
            _render(field, source, {**notification, "notification": notification,
                                    "user": user})


def _check_in_child(channel: str, template: MessageTemplate, answer: Any) -> None:
    try:
        validate(channel, template)
        answer.send(None)
    except TemplateError as e:
        answer.send((e.field, str(e).partition(": ")[2]))
    except BaseException as e:  # noqa: BLE001 - whatever it is, the parent says so
        answer.send(("text", f"{type(e).__name__}"))


async def check(channel: str, template: MessageTemplate) -> None:
    """``validate`` for ``PUT /api/templates/...``: in a child process, never on the event loop,
    and killed when it overruns; raises TemplateError naming the part at fault."""
    if channel not in DEFAULTS:
        raise TemplateError("channel", f"unknown channel {channel!r}")
    # forkserver: children forked from a small single-threaded process, never from this one
    # (forking a process with threads can deadlock the child, and newer Pythons warn of it).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_check_in_child, args=(channel, template, send), daemon=True)
    child.start()
    send.close()
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(receive.fileno(), ready.set)
    try:
        await asyncio.wait_for(ready.wait(), CHECK_TIMEOUT)
        result = receive.recv()
    except (TimeoutError, EOFError):
        result = (_first_part(template), str(_over_budget()))
    finally:
        loop.remove_reader(receive.fileno())
        receive.close()
        if child.is_alive():
            child.kill()
        await loop.run_in_executor(None, child.join)
        child.close()
    if result is not None:
        field, message = result
        raise TemplateError(field, message)


def _first_part(template: MessageTemplate) -> str:
    return next((f for f in FIELDS if getattr(template, f)), "text")
