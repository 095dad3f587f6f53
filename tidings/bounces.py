"""SES bounce and complaint notifications, as Amazon SNS posts them to ``POST /api/ses/events``.

One SES account sends for every tenant, so the tenant an event is about is the one whose
delivery SES sent with the message id the event names (``mail.messageId``, which the SES
channel keeps as the delivery's provider id). A permanent bounce or a complaint puts each
address it names on that tenant's suppression list, and only on that tenant's. Transient
bounces, deliveries and other events change nothing.

Both the SES notification form (``notificationType``) and the event publishing form
(``eventType``) are understood.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from . import sns, suppressions
from .store import DeliveryQueue, Directory

log = logging.getLogger("tidings.bounces")


def _addresses(items: Any) -> list[str]:
    if not isinstance(items, list):
        return []
    return [item["emailAddress"] for item in items
            if isinstance(item, dict) and isinstance(item.get("emailAddress"), str)]


def suppressible(event: Any) -> tuple[str, str | None, list[str]]:
    """(reason, detail, addresses) of an SES event: reason "bounce" (permanent ones only) or
    "complaint"; no addresses when the event suppresses nothing."""
    if not isinstance(event, dict):
        return "", None, []
    kind = event.get("notificationType") or event.get("eventType")
    if kind == "Bounce" and isinstance(event.get("bounce"), dict):
        bounce = event["bounce"]
        if bounce.get("bounceType") != "Permanent":
            return "bounce", None, []
        detail = bounce.get("bounceSubType")
        return "bounce", str(detail) if detail else None, _addresses(bounce.get("bouncedRecipients"))
    if kind == "Complaint" and isinstance(event.get("complaint"), dict):
        complaint = event["complaint"]
        detail = complaint.get("complaintFeedbackType")
        return ("complaint", str(detail) if detail else None,
                _addresses(complaint.get("complainedRecipients")))
    return "", None, []


class SesEvents:
    """Receives one SNS message: checks it, confirms a subscription, or suppresses what an SES
    bounce or complaint names."""

    def __init__(self, verifier: sns.SnsVerifier, directory: Directory,
                 queue: DeliveryQueue) -> None:
        self.verifier = verifier
        self.directory = directory
        self.queue = queue

    async def receive(self, envelope: Any) -> dict[str, Any]:
        message = sns.parse(envelope)
        await self.verifier.verify(message)
        kind = message["Type"]
        if kind == "SubscriptionConfirmation":
            await self.verifier.confirm(message)
            return {"status": "confirmed"}
        if kind == "UnsubscribeConfirmation":
            log.info("SNS topic %s unsubscribed this endpoint", message["TopicArn"])
            return {"status": "ignored"}
        try:
            event = json.loads(message["Message"])
        except ValueError:
            event = None
        reason, detail, addresses = suppressible(event)
        mail = event.get("mail") if isinstance(event, dict) else None
        message_id = mail.get("messageId") if isinstance(mail, dict) else None
        if not addresses or not isinstance(message_id, str):
            return {"status": "ignored"}
        tenant = await self.queue.tenant_of_sent("email", message_id)
        if tenant is None:  # not a message tidings sent (or one since removed)
            log.info("SES %s for message %s, which no delivery was sent as: ignored", reason,
                     message_id)
            return {"status": "ignored"}
        added = 0
        for address in addresses:
            added += await self.directory.suppress(tenant, suppressions.normalize(address),
                                                   reason, detail)
        log.info("SES %s: %d address(es) suppressed tenant=%s", reason, added, tenant)
        return {"status": "suppressed", "suppressed": added}

    async def aclose(self) -> None:
        await self.verifier.aclose()
