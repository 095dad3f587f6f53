"""SMS through the SNS API: a direct publish to a phone number, no topic."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlsplit

from . import aws
from .base import DeliveryError, Recipient, Rendered

log = logging.getLogger("tidings.channels")

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MAX_BYTES = 1600  # SNS refuses longer SMS messages


def truncate(text: str, limit: int = MAX_BYTES) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "…"


class SnsSms:
    name = "sms"

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None) -> SnsSms:
        region = urlsplit(url).netloc
        client = aws.make_client("sns", region, endpoint_url, "--sms-url")
        log.info("sms: SNS in %s%s", region, " (emulator)" if endpoint_url else "")
        return cls(client)

    async def send(self, recipient: Recipient, message: Rendered) -> str:
        if not recipient.phone or not E164.match(recipient.phone):
            raise DeliveryError("no phone number in E.164 form", permanent=True)
        reply = await aws.call(
            self._client.publish,
            PhoneNumber=recipient.phone,
            Message=truncate(message.text),
            # Transactional: routed for reliability rather than cost, as alerts should be.
            MessageAttributes={"AWS.SNS.SMS.SMSType": {
                "DataType": "String", "StringValue": "Transactional"}},
        )
        return str(reply["MessageId"])

    async def aclose(self) -> None:
        pass
