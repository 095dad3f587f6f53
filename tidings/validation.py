"""Turns a client's JSON body into validated domain values, naming the field that is wrong."""

from __future__ import annotations

import datetime
import json
import math
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from . import errors
from .models import PRIORITIES, TYPES, NewNotification

MAX_TITLE = 500
MAX_MESSAGE = 10_000
MAX_DATA_BYTES = 64 * 1024
MAX_DATA_DEPTH = 32  # `data` itself is level 1
MAX_BODY_DEPTH = 40  # any JSON a client sends: bounds the walk below
MAX_ID = 2**63 - 1  # ids and cursors are SQLite INTEGERs
MAX_USER_IDS = 1000
MAX_BATCH_DATA_BYTES = 1 << 20  # `data` is stored once per recipient: one request's bound
_DIGITS = re.compile(r"[0-9]{1,20}")  # more would not fit any id or limit (nor int() quickly)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_ID_LENGTH = 200
CHANNELS = ("in_app", "email", "sms", "push", "webhook")
MAX_GROUP = 200
MAX_ACTIONS = 3
MAX_ACTION_LABEL = 40
MAX_ACTION_URL = 2048
MAX_SCHEDULE_AHEAD = 30 * 86400  # seconds: `send_at` at most 30 days ahead
MAX_TTL = 366 * 86400  # a notification lives at most a year (and a day) before it expires


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(raw: str) -> float:
    """A JSON number; one too large for a float (1e999) would be sent on as Infinity,
    which is not JSON either."""
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"{raw} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)
# 19 digits in a row: maybe a number past 64 bits, which orjson would read as a float.
_LONG_NUMBER = re.compile(r"[0-9]{19}")
_LONG_NUMBER_BYTES = re.compile(rb"[0-9]{19}")


def _parse(raw: str | bytes) -> Any:
    """orjson where it reads the text as `json.loads` below does, several times faster; the
    text it refuses (and any with a number that may not fit 64 bits) goes to `json.loads`,
    whose result or error is the answer, as it always was."""
    long = _LONG_NUMBER_BYTES.search(raw) if isinstance(raw, bytes) else \
        _LONG_NUMBER.search(raw)
    if long is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return _DECODER.decode(raw) if isinstance(raw, str) else \
        json.loads(raw, parse_constant=_no_constant, parse_float=_finite)


def loads(raw: str | bytes, field: str = "body") -> Any:
    """Any JSON a client sends (a body, a WebSocket frame): parsed, nested at most
    MAX_BODY_DEPTH levels, every string in it (keys too) storable text; else 400 naming
    ``field`` or the path inside it that is wrong."""
    try:
        value = _parse(raw)
    except RecursionError:
        raise errors.invalid(field, "is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise errors.invalid(field, "is not valid JSON") from None
    check_json(value, field if field != "body" else "", MAX_BODY_DEPTH, name=field)
    return value


def json_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise errors.invalid("body", "a JSON object is required")
    body = loads(raw)
    if not isinstance(body, dict):
        raise errors.invalid("body", "must be a JSON object")
    return body


def text(value: str, field: str) -> str:
    """``value`` unless it holds a lone surrogate or NUL, which cannot be stored or sent."""
    if "\x00" in value:
        raise errors.invalid(field, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise errors.invalid(field, "must be valid Unicode (no lone surrogates)") from None
    return value


def check_json(value: Any, path: str, max_depth: int, name: str = "") -> None:
    """Walks ``value`` without recursion: at most ``max_depth`` nested objects/arrays (the
    value itself is level 1), every string and key valid text. Errors name the path."""
    stack: list[tuple[Any, str, int]] = [(value, path, 1)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            text(item, where or name or "body")
        elif isinstance(item, int) and not -MAX_ID - 1 <= item <= MAX_ID:
            raise errors.invalid(where or name or "body", "numbers must fit in 64 bits")
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise errors.invalid(where or name or "body",
                                     f"may nest at most {max_depth} levels")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str):
                    text(key, where or "key")  # the bad key itself is not echoed
                    sub = f"{where}.{key}" if where else key
                else:
                    sub = f"{where}[{key}]"
                stack.append((child, sub, depth + 1))


def query_text(raw: str | None, field: str) -> str | None:
    """A query parameter or header that is stored or compared: valid text."""
    return None if raw is None else text(raw, field)


def _whole(raw: str, field: str, what: str = "a whole number") -> int:
    """ASCII digits only: Python's int() also takes "+5", "1_0", " 5 " and other scripts'
    digits, which a client should not find accepted here and refused elsewhere."""
    if not _DIGITS.fullmatch(raw):
        raise errors.invalid(field, f"must be {what}")
    return int(raw)


def whole_id(raw: str, field: str) -> int:
    """A path id: a whole number that fits an SQLite INTEGER."""
    value = _whole(raw, field)
    if not 0 <= value <= MAX_ID:
        raise errors.invalid(field, f"must be between 0 and {MAX_ID}")
    return value


def _text(body: dict[str, Any], field: str, limit: int, *, required: bool = False) -> str:
    value = body.get(field)
    if value is None:
        if required:
            raise errors.invalid(field, "is required")
        return ""
    if not isinstance(value, str):
        raise errors.invalid(field, "must be a string")
    if required and not value.strip():
        raise errors.invalid(field, "must not be empty")
    if len(value) > limit:
        raise errors.invalid(field, f"must be at most {limit} characters")
    return text(value, field)


def _choice(body: dict[str, Any], field: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(field, default)
    if value not in allowed:
        raise errors.invalid(field, f"must be one of {', '.join(allowed)}")
    return str(value)


def user_id(value: Any, field: str = "user_id") -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise errors.invalid(field, f"must be a non-empty string of at most {MAX_ID_LENGTH} "
                                    "characters")
    if _CONTROL.search(value):
        raise errors.invalid(field, "must not contain control characters")
    return text(value, field)


def expiry(body: dict[str, Any], now: float) -> float | None:
    """`expires_at` (ISO 8601 with a time zone) or `ttl` (whole seconds), as unix seconds;
    in the future and at most MAX_TTL ahead."""
    at, ttl = body.get("expires_at"), body.get("ttl")
    if at is not None and ttl is not None:
        raise errors.invalid("ttl", "give either expires_at or ttl, not both")
    if ttl is not None:
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 < ttl <= MAX_TTL:
            raise errors.invalid("ttl", f"must be a whole number of seconds from 1 to {MAX_TTL}")
        return now + ttl
    if at is None:
        return None
    problem = "must be an ISO 8601 time with a time zone, like 2030-01-01T12:00:00Z"
    if not isinstance(at, str) or len(at) > 64:
        raise errors.invalid("expires_at", problem)
    try:
        parsed = datetime.datetime.fromisoformat(text(at, "expires_at"))
        when = parsed.timestamp()
    except (ValueError, OverflowError):
        raise errors.invalid("expires_at", problem) from None
    if parsed.tzinfo is None:
        raise errors.invalid("expires_at", problem)
    if when <= now:
        raise errors.invalid("expires_at", "must be in the future")
    if when > now + MAX_TTL:
        raise errors.invalid("expires_at", f"must be at most {MAX_TTL} seconds ahead")
    return when


def notifications(body: dict[str, Any], tenant_id: str, types: tuple[str, ...] = TYPES,
                  now: float | None = None) -> tuple[list[NewNotification], bool]:
    """The notifications a POST asks for, and whether it used `user_ids` (a list answer)."""
    targets = [k for k in ("user_id", "user_ids", "broadcast") if body.get(k) not in (None, False)]
    if len(targets) != 1:
        raise errors.invalid("user_id", "give exactly one of user_id, user_ids or "
                                        "broadcast: true")
    if targets == ["broadcast"] and body["broadcast"] is not True:
        raise errors.invalid("broadcast", "must be true")
    recipients: list[str | None]
    if targets == ["user_ids"]:
        ids = body["user_ids"]
        if not isinstance(ids, list) or not ids:
            raise errors.invalid("user_ids", "must be a non-empty list")
        if len(ids) > MAX_USER_IDS:
            raise errors.invalid("user_ids", f"may name at most {MAX_USER_IDS} users")
        recipients = list(dict.fromkeys(user_id(u, "user_ids") for u in ids))
    elif targets == ["user_id"]:
        recipients = [user_id(body["user_id"])]
    else:
        recipients = [None]

    data = body.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise errors.invalid("data", "must be a JSON object")
    check_json(data, "data", MAX_DATA_DEPTH)
    size = data_size(data, len(recipients))
    if size > MAX_DATA_BYTES:
        raise errors.invalid("data", f"must be at most {MAX_DATA_BYTES} bytes as JSON")
    if size * len(recipients) > MAX_BATCH_DATA_BYTES:  # it is stored once per recipient
        raise errors.invalid("data", f"times the number of user_ids must be at most "
                                     f"{MAX_BATCH_DATA_BYTES} bytes as JSON")

    channels = body.get("channels")
    if channels is not None:
        if not isinstance(channels, list) or any(c not in CHANNELS for c in channels):
            raise errors.invalid("channels", f"must be a list of {', '.join(CHANNELS)}")
        channels = tuple(channels)

    title = _text(body, "title", MAX_TITLE, required=True)
    message = _text(body, "message", MAX_MESSAGE)
    type_ = _choice(body, "type", types, "info")
    priority = _choice(body, "priority", PRIORITIES, "normal")
    group = _text(body, "group", MAX_GROUP) or None
    notification_actions = actions(body.get("actions"))
    key = None if body.get("key") is None else user_id(body["key"], "key")
    expires_at = expiry(body, time.time() if now is None else now)
    items = [NewNotification(tenant_id=tenant_id, user_id=r, title=title, message=message,
                             type=type_, priority=priority, data=data, channels=channels,
                             group=group, actions=notification_actions, key=key,
                             expires_at=expires_at)
             for r in recipients]
    return items, targets == ["user_ids"]


def data_size(data: dict[str, Any], copies: int) -> int:
    """`data`'s size as JSON with json.dumps' separators (", ", ": "), the measure its
    bounds are given in. The compact encoding is quicker, and the spaced one is less than
    three times as long (each separator follows a value or key of a byte or more, and a
    number's exponent may gain a sign and a digit): data well inside the bounds is not
    encoded twice. The size returned is then the compact one, under both bounds as well."""
    compact = len(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS))
    if 3 * compact <= MAX_DATA_BYTES and 3 * compact * copies <= MAX_BATCH_DATA_BYTES:
        return compact
    return len(json.dumps(data, ensure_ascii=False).encode())


def actions(value: Any) -> tuple[dict[str, str], ...]:
    """`actions`: at most MAX_ACTIONS buttons, each {"label", "url"} with an http(s) URL
    (a link the reader's browser opens: tidings never fetches it)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise errors.invalid("actions", 'must be a list of {"label", "url"} objects')
    if len(value) > MAX_ACTIONS:
        raise errors.invalid("actions", f"may hold at most {MAX_ACTIONS} actions")
    clean = []
    for i, action in enumerate(value):
        where = f"actions[{i}]"
        if not isinstance(action, dict):
            raise errors.invalid(where, 'must be an object {"label", "url"}')
        unknown = sorted(set(action) - {"label", "url"})
        if unknown:
            raise errors.invalid(f"{where}.{unknown[0]}", "unknown field; expected label or url")
        label = action.get("label")
        if not isinstance(label, str) or not label.strip():
            raise errors.invalid(f"{where}.label", "must be a non-empty string")
        if len(label) > MAX_ACTION_LABEL:
            raise errors.invalid(f"{where}.label",
                                 f"must be at most {MAX_ACTION_LABEL} characters")
        if _CONTROL.search(text(label, f"{where}.label")):
            raise errors.invalid(f"{where}.label", "must not contain control characters")
        clean.append({"label": label, "url": _action_url(action.get("url"), f"{where}.url")})
    return tuple(clean)


def _action_url(url: Any, field: str) -> str:
    if not isinstance(url, str) or not url:
        raise errors.invalid(field, "must be an absolute http(s) URL")
    if len(url) > MAX_ACTION_URL:
        raise errors.invalid(field, f"must be at most {MAX_ACTION_URL} characters")
    if _CONTROL.search(url) or " " in url:
        raise errors.invalid(field, "must not contain spaces or control characters")
    try:
        parts = urlsplit(text(url, field))
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        raise errors.invalid(field, "is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.invalid(field, "must be an absolute http(s) URL")
    return url


def send_at(value: Any, now: float) -> float | None:
    """`send_at`: when a scheduled notification goes (unix seconds), or None to send now.
    ISO 8601; without an offset it is UTC. In the past, or more than 30 days ahead: 400."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise errors.invalid("send_at", "must be an ISO 8601 date and time, like "
                                        "2026-11-24T04:00:00Z")
    try:
        when = datetime.datetime.fromisoformat(text(value, "send_at"))
    except ValueError:
        raise errors.invalid("send_at", "must be an ISO 8601 date and time, like "
                                        "2026-11-24T04:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    at = when.timestamp()
    if at <= now:
        raise errors.invalid("send_at", "is in the past")
    if at > now + MAX_SCHEDULE_AHEAD:
        raise errors.invalid("send_at", "must be at most 30 days ahead")
    return at


def group(raw: str | None) -> str | None:
    """`?group=` on an inbox page."""
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_GROUP:
        raise errors.invalid("group", f"must be at most {MAX_GROUP} characters")
    return text(raw, "group")


def limit(raw: str | None, default: int = 50, maximum: int = 200) -> int:
    if raw is None or raw == "":
        return default
    value = _whole(raw, "limit")
    if not 1 <= value <= maximum:
        raise errors.invalid("limit", f"must be between 1 and {maximum}")
    return value


def flag(raw: str | None, field: str) -> bool:
    """A true/false query parameter; absent means false."""
    if raw is None or raw.lower() in ("false", "0", "no", ""):
        return False
    if raw.lower() in ("true", "1", "yes"):
        return True
    raise errors.invalid(field, "must be true or false")


MAX_SNAPSHOT = 50


def snapshot(raw: str | None) -> int | None:
    """`?snapshot=N` on a stream: 1 to MAX_SNAPSHOT newest notifications in `connected`."""
    if raw is None:
        return None
    value = _whole(raw, "snapshot")
    if not 1 <= value <= MAX_SNAPSHOT:
        raise errors.invalid("snapshot", f"must be between 1 and {MAX_SNAPSHOT}")
    return value


def cursor(raw: str | None, field: str) -> int | None:
    if raw is None or raw == "":
        return None
    value = _whole(raw, field, "a notification id (a whole number)")
    if not 0 <= value <= MAX_ID:
        raise errors.invalid(field, f"must be between 0 and {MAX_ID}")
    return value


def claim(value: str, name: str) -> str:
    """A token claim used as an id (tenant, user): an id as a body's user_id is, else 401
    (the token is at fault)."""
    try:
        return user_id(value, name)
    except errors.TidingsError:
        raise errors.invalid_token(f"the token's {name!r} claim must be a string of 1 to "
                                   f"{MAX_ID_LENGTH} characters, no control characters, "
                                   "valid text") from None


_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


def recipient(body: dict[str, Any]) -> dict[str, str | None]:
    """A user's addresses: email, phone (E.164), timezone (IANA), locale; null clears one."""
    unknown = set(body) - {"email", "phone", "timezone", "locale"}
    if unknown:
        raise errors.invalid(sorted(unknown)[0], "unknown field; expected email, phone, "
                                                 "timezone or locale")
    checks: dict[str, tuple[Callable[[str], bool], str]] = {
        "email": (lambda v: bool(_EMAIL.match(v)) and len(v) <= 254, "is not an email address"),
        "phone": (lambda v: bool(_E164.match(v)), "must be E.164, like +14155550123"),
        "timezone": (_is_zone, "is not an IANA time zone, like Europe/Berlin"),
        "locale": (lambda v: bool(_LOCALE.match(v)), "is not a locale, like en or pt-BR"),
    }
    clean: dict[str, str | None] = {}
    for field, (ok, problem) in checks.items():
        value = body.get(field)
        if value is not None and (not isinstance(value, str) or not ok(value)):
            raise errors.invalid(field, problem)
        clean[field] = value
    return clean


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return "/" in name or name == "UTC"
