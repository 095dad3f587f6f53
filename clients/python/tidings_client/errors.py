"""The server's errors as exceptions: one base class, one subclass per HTTP status."""

from __future__ import annotations

import json
from typing import Any


class TidingsError(Exception):
    """An error answer from tidings (``{"error": {"code", "message", "field"}}``), or a
    server that could not be reached (``status`` 0, ``code`` "unreachable")."""

    status: int = 0

    def __init__(self, code: str, message: str, status: int | None = None,
                 field: str | None = None) -> None:
        super().__init__(f"{message} ({code})" if code else message)
        self.code = code
        self.message = message
        if status is not None:
            self.status = status
        self.field = field


class BadRequest(TidingsError):
    status = 400


class Unauthorized(TidingsError):
    status = 401


class Forbidden(TidingsError):
    status = 403


class NotFound(TidingsError):
    status = 404


class Conflict(TidingsError):
    status = 409


class PayloadTooLarge(TidingsError):
    status = 413


class RateLimited(TidingsError):
    """429: too many requests or connections; ``retry_after`` is the server's advice in
    seconds (``None`` when it gave none)."""

    status = 429

    def __init__(self, code: str, message: str, status: int | None = None,
                 field: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(code, message, status, field)
        self.retry_after = retry_after


class ServerError(TidingsError):
    """A 5xx other than 503."""

    status = 500


class Unavailable(ServerError):
    status = 503


class Unreachable(TidingsError):
    """No answer at all: refused, timed out, reset."""


BY_STATUS: dict[int, type[TidingsError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 429: RateLimited, 503: Unavailable,
}


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: rare enough to leave to the caller's backoff


def from_response(status: int, body: bytes, headers: Any = None) -> TidingsError:
    """The exception for an error answer; a body that is not tidings' JSON still gives one."""
    code, message, field = "", "", None
    try:
        error = json.loads(body)["error"]
        code, message, field = str(error.get("code", "")), str(error.get("message", "")), \
            error.get("field")
    except (ValueError, KeyError, TypeError, AttributeError):
        message = body.decode("utf-8", "replace").strip()[:200]
    message = message or f"HTTP {status}"
    cls = BY_STATUS.get(status) or (ServerError if status >= 500 else TidingsError)
    if cls is RateLimited:
        retry = _retry_after(headers.get("Retry-After") if headers is not None else None)
        return RateLimited(code, message, status, field, retry_after=retry)
    return cls(code, message, status, field)
