"""Amazon SNS as an HTTP(S) subscriber sees it: messages signed as SNS signs them (RSA,
SignatureVersion 1 = SHA-1, 2 = SHA-256, over the "Key\\nvalue\\n" lines of the signed
fields), with a signing certificate and a SubscribeURL served over HTTP on loopback.

The signed text is built here from the AWS documentation, not with tidings' own code, so the
tests check tidings against the format rather than against itself."""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from typing import Any

import tornado.web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from .loop import Inbox, LoopThread

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-bounces"
_SIGNED = {"Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
           "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp",
                                        "Token", "TopicArn", "Type")}


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


class _Cert(tornado.web.RequestHandler):
    def initialize(self, peer: SnsPeer) -> None:
        self.peer = peer

    def get(self) -> None:
        self.peer.cert_fetches.add(self.request.uri)
        self.set_header("Content-Type", "application/x-pem-file")
        self.finish(self.peer.cert_pem)


class _Confirm(tornado.web.RequestHandler):
    def initialize(self, peer: SnsPeer) -> None:
        self.peer = peer

    def get(self) -> None:
        self.peer.confirmations.add(self.get_query_argument("Token"))
        self.set_header("Content-Type", "text/xml")
        self.finish("<ConfirmSubscriptionResponse/>")


class SnsPeer:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.cert_pem = _certificate(self.key)
        self.cert_fetches = Inbox()
        self.confirmations = Inbox()
        self._thread = LoopThread("sns-peer")
        self.port = self._thread.serve(tornado.web.Application([
            (r"/SimpleNotificationService-test\.pem", _Cert, {"peer": self}),
            (r"/confirm", _Confirm, {"peer": self})]))
        self.host = f"127.0.0.1:{self.port}"
        self.cert_url = f"http://{self.host}/SimpleNotificationService-test.pem"

    def sign(self, message: dict[str, Any], version: str = "2") -> dict[str, Any]:
        text = "".join(f"{k}\n{message[k]}\n" for k in _SIGNED[message["Type"]] if k in message)
        algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), algorithm)
        return {**message, "SignatureVersion": version,
                "Signature": base64.b64encode(signature).decode(),
                "SigningCertURL": self.cert_url}

    def notification(self, event: dict[str, Any], version: str = "2",
                     **more: str) -> dict[str, Any]:
        """An SES event (bounce, complaint) as SNS delivers it, signed (with a Subject when
        one is given: SNS signs it then)."""
        return self.sign({
            "Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": TOPIC,
            "Message": json.dumps(event), "Timestamp": _now(),
            "UnsubscribeURL": f"http://{self.host}/unsubscribe", **more}, version)

    def subscription_confirmation(self, token: str) -> dict[str, Any]:
        return self.sign({
            "Type": "SubscriptionConfirmation", "MessageId": str(uuid.uuid4()),
            "Token": token, "TopicArn": TOPIC, "Timestamp": _now(),
            "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
            "SubscribeURL": f"http://{self.host}/confirm?Action=ConfirmSubscription"
                            f"&TopicArn={TOPIC}&Token={token}"})

    def close(self) -> None:
        self._thread.close()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def bounce(message_id: str, *addresses: str, kind: str = "Permanent") -> dict[str, Any]:
    return {"notificationType": "Bounce", "mail": {"messageId": message_id},
            "bounce": {"bounceType": kind, "bounceSubType": "General",
                       "bouncedRecipients": [{"emailAddress": a} for a in addresses]}}


def complaint(message_id: str, *addresses: str) -> dict[str, Any]:
    return {"notificationType": "Complaint", "mail": {"messageId": message_id},
            "complaint": {"complaintFeedbackType": "abuse",
                          "complainedRecipients": [{"emailAddress": a} for a in addresses]}}
