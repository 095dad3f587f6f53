"""boto3 for SES and SNS: one client per service, calls run in a thread so the loop never blocks."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from .base import ConfigError, DeliveryError

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")

# AWS answers these with a 4xx status, yet a later try can succeed.
_RETRYABLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "TooManyRequestsException", "LimitExceededException",
    "RequestLimitExceeded", "SendingPausedException", "ServiceUnavailable",
    "InternalError", "InternalFailure", "KMSThrottlingException",
})


def make_client(service: str, region: str, endpoint_url: str | None, setting: str) -> Any:
    """A client with few SDK retries (the caller retries with backoff) and short timeouts."""
    if not _REGION.match(region):
        raise ConfigError(setting, f"{region!r} is not an AWS region (like eu-west-1)")
    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise ConfigError(setting, "no AWS credentials found (environment, ~/.aws or an "
                                   "instance role)")
    config = botocore.config.Config(
        connect_timeout=5, read_timeout=15, retries={"mode": "standard", "max_attempts": 2})
    return session.client(service, region_name=region, endpoint_url=endpoint_url, config=config)


def _delivery_error(e: Exception) -> DeliveryError:
    if isinstance(e, botocore.exceptions.ClientError):
        error = e.response.get("Error", {})
        code = error.get("Code", "")
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
        retryable = code in _RETRYABLE_CODES or status == 429 or status >= 500
        return DeliveryError(f"{code}: {error.get('Message', '')}".strip(": "),
                             permanent=not retryable)
    # BotoCoreError: endpoint unreachable, timeouts, credentials that could not be fetched.
    return DeliveryError(f"{type(e).__name__}: {e}", permanent=False)


async def call(method: Callable[..., dict[str, Any]], **params: Any) -> dict[str, Any]:
    """Runs one blocking SDK call in the default executor, mapping its errors."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, functools.partial(method, **params))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        raise _delivery_error(e) from e
