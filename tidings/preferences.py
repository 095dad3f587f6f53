"""Who gets what, where and when: preferences, quiet hours and digests, as pure functions.

A user's preferences override the tenant's defaults, which override the built-in ones. Each
channel is `true` (always), `false` (never), `"offline"` (only while the user has no live
connection) or, for every channel but in_app, `"unacknowledged"` (only if no connection of the
user acknowledged it within `escalate_after` seconds; at once when none is live).
"""

from __future__ import annotations

import datetime
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import errors

CHANNELS = ("in_app", "email", "sms", "push", "webhook")
DIGESTS = ("off", "hourly", "daily")
# Built in: live in-app always; email and push only when the user is not connected; SMS only
# when asked for; the tenant's webhook (once it has one) always.
BUILT_IN: dict[str, Any] = {
    "channels": {"default": {"in_app": True, "email": "offline", "sms": False,
                             "push": "offline", "webhook": True}},
    "quiet_hours": None,
    "digest": "off",
    "escalate_after": 60,
}
MAX_ESCALATE_AFTER = 7 * 24 * 3600
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_TYPE = re.compile(r"^[a-z][a-z0-9_.-]{0,49}$")

Value = bool | str


def validate(body: dict[str, Any]) -> dict[str, Any]:
    """A PUT body, checked field by field; only the keys given are kept (a partial update)."""
    clean: dict[str, Any] = {}
    if "channels" in body:
        channels = body["channels"]
        if not isinstance(channels, dict):
            raise errors.invalid("channels", "must be an object of notification type -> "
                                             "channel map")
        clean["channels"] = {}
        for type_, mapping in channels.items():
            if not isinstance(type_, str) or not _TYPE.match(type_):
                raise errors.invalid(f"channels.{type_}", "is not a notification type")
            if not isinstance(mapping, dict):
                raise errors.invalid(f"channels.{type_}", "must be an object")
            for channel, value in mapping.items():
                where = f"channels.{type_}.{channel}"
                if channel not in CHANNELS:
                    raise errors.invalid(where, f"unknown channel; one of {', '.join(CHANNELS)}")
                if channel == "in_app" and value not in (True, False, "offline"):
                    raise errors.invalid(where, 'must be true, false or "offline"')
                if value not in (True, False, "offline", "unacknowledged"):
                    raise errors.invalid(where, 'must be true, false, "offline" or '
                                                '"unacknowledged"')
            clean["channels"][type_] = dict(mapping)
    if "quiet_hours" in body:
        quiet = body["quiet_hours"]
        if quiet is not None:
            if not isinstance(quiet, dict):
                raise errors.invalid("quiet_hours", 'must be {"start": "HH:MM", "end": "HH:MM"} '
                                                    "or null")
            for key in ("start", "end"):
                if not isinstance(quiet.get(key), str) or not _CLOCK.match(quiet[key]):
                    raise errors.invalid(f"quiet_hours.{key}", 'must be a time like "22:00"')
            if quiet["start"] == quiet["end"]:
                raise errors.invalid("quiet_hours", "start and end must differ")
            quiet = {"start": quiet["start"], "end": quiet["end"]}
        clean["quiet_hours"] = quiet
    if "digest" in body:
        if body["digest"] not in DIGESTS:
            raise errors.invalid("digest", f"must be one of {', '.join(DIGESTS)}")
        clean["digest"] = body["digest"]
    if "escalate_after" in body:
        wait = body["escalate_after"]
        if not isinstance(wait, int) or isinstance(wait, bool) or \
                not 1 <= wait <= MAX_ESCALATE_AFTER:
            raise errors.invalid("escalate_after", f"must be whole seconds from 1 to "
                                                   f"{MAX_ESCALATE_AFTER}")
        clean["escalate_after"] = wait
    unknown = set(body) - {"channels", "quiet_hours", "digest", "escalate_after"}
    if unknown:
        raise errors.invalid(sorted(unknown)[0], "unknown field; expected channels, quiet_hours, "
                                                 "digest or escalate_after")
    return clean


def apply(stored: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """A validated PUT on stored preferences: only what it names changes, and a channel map
    changes only the channels it gives for that type."""
    result = {**stored, **{k: v for k, v in change.items() if k != "channels"}}
    channels = {t: dict(m) for t, m in stored.get("channels", {}).items()}
    for type_, mapping in change.get("channels", {}).items():
        channels.setdefault(type_, {}).update(mapping)
    if channels:
        result["channels"] = channels
    return result


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers win: per type and per channel for `channels`, whole values otherwise."""
    result: dict[str, Any] = {"channels": {}, "quiet_hours": None, "digest": "off",
                              "escalate_after": BUILT_IN["escalate_after"]}
    for layer in (BUILT_IN, *layers):
        for type_, mapping in layer.get("channels", {}).items():
            result["channels"].setdefault(type_, {}).update(mapping)
        for key in ("quiet_hours", "digest", "escalate_after"):
            if key in layer:
                result[key] = layer[key]
    return result


def channel_value(prefs: dict[str, Any], type_: str, channel: str) -> Value:
    """The value for one channel of one notification type: its own entry, else `default`."""
    for key in (type_, "default"):
        mapping = prefs["channels"].get(key, {})
        if channel in mapping:
            return mapping[channel]  # type: ignore[no-any-return]
    return False


def turned_off(own: dict[str, Any], type_: str, channel: str) -> bool:
    """Whether the user's own preferences (not the tenant's nor the built-in ones) say `false`
    for this channel of this type: an opt-out a sender should see, not a default."""
    channels = own.get("channels", {})
    for key in (type_, "default"):
        if channel in channels.get(key, {}):
            return channels[key][channel] is False
    return False


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def quiet_until(quiet: dict[str, str] | None, tz: str | None, now: float) -> float | None:
    """When the quiet hours around `now` end (unix seconds), or None when `now` is not quiet.
    Hours that cross midnight (22:00-07:00) are quiet from start until end the next day."""
    if not quiet:
        return None
    local = datetime.datetime.fromtimestamp(now, zone(tz))
    start, end = (datetime.time.fromisoformat(quiet[k]) for k in ("start", "end"))
    t = local.time()
    inside = start <= t < end if start < end else (t >= start or t < end)
    if not inside:
        return None
    end_at = local.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
    if end_at <= local:
        end_at += datetime.timedelta(days=1)
    return end_at.timestamp()


def digest_due(digest: str, tz: str | None, now: float) -> float:
    """The end of the current digest period: the next full hour, or the next local midnight."""
    local = datetime.datetime.fromtimestamp(now, zone(tz))
    if digest == "hourly":
        boundary = local.replace(minute=0, second=0, microsecond=0) + datetime.timedelta(hours=1)
    else:
        boundary = (local.replace(hour=0, minute=0, second=0, microsecond=0)
                    + datetime.timedelta(days=1))
    return boundary.timestamp()
