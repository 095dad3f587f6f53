"""One error type for the whole domain; only the HTTP layer turns it into a response."""

from __future__ import annotations


class TidingsError(Exception):
    """An error a client can act on: a stable code, an HTTP status and a message."""

    def __init__(self, code: str, status: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or {}  # e.g. Retry-After on a 429

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        return {"error": body}


def invalid(field: str, message: str) -> TidingsError:
    return TidingsError("invalid_request", 400, f"{field}: {message}", field=field)


def invalid_token(message: str) -> TidingsError:
    return TidingsError("invalid_token", 401, message)


def forbidden(message: str) -> TidingsError:
    return TidingsError("forbidden", 403, message)


def tenant_mismatch() -> TidingsError:
    return TidingsError("tenant_mismatch", 403, "the tenant named does not match the token's")


def not_found(what: str) -> TidingsError:
    return TidingsError("not_found", 404, f"{what} not found")


CONNECTION_RETRY_AFTER = 5  # seconds: a slot frees when another connection closes


def too_many_connections(limit: int, who: str = "user") -> TidingsError:
    return TidingsError("too_many_connections", 429,
                        f"this {who} already has {limit} open connections",
                        headers={"Retry-After": str(CONNECTION_RETRY_AFTER)})


def too_many_scheduled(limit: int) -> TidingsError:
    return TidingsError("too_many_scheduled", 429, f"this tenant already has {limit} pending "
                        "scheduled notifications; cancel some or wait until they are sent")


def rate_limited(retry_after: int) -> TidingsError:
    return TidingsError("rate_limited", 429, "this tenant sends faster than its rate limit; "
                        f"retry after {retry_after} s", headers={"Retry-After": str(retry_after)})


def too_large(limit_kib: int) -> TidingsError:
    return TidingsError("too_large", 413, f"the body is larger than {limit_kib} KiB")


def unavailable(message: str) -> TidingsError:
    return TidingsError("unavailable", 503, message)


def channel_off(message: str) -> TidingsError:
    return TidingsError("channel_off", 404, message)


def store_unavailable() -> TidingsError:
    return TidingsError("store_unavailable", 503, "the store does not answer; try again shortly")


def conflict(field: str, message: str) -> TidingsError:
    return TidingsError("conflict", 409, f"{field}: {message}", field=field)
