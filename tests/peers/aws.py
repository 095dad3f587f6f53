"""moto in server mode, standing in for SES and SNS; a test reads what it recorded over HTTP."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

REGION = "eu-west-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
}


class MotoPeer:
    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"

    def _call(self, path: str, method: str = "GET") -> bytes:
        request = urllib.request.Request(self.endpoint_url + path, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return bytes(response.read())

    def recorded(self) -> dict[str, Any]:
        """moto's ``/moto-api/data.json``: every model it holds, by service and class."""
        return dict(json.loads(self._call("/moto-api/data.json")))

    def sent_emails(self) -> list[dict[str, Any]]:
        """SES messages: ``source``, ``destinations``, ``raw_data`` (the MIME text)."""
        return list(self.recorded().get("ses", {}).get("RawMessage", []))

    def sent_sms(self) -> list[dict[str, Any]]:
        """SNS SMS: ``phone_number``, ``message``, ``message_id``."""
        return list(self.recorded().get("sns", {}).get("SMS", []))

    def reset(self) -> None:
        self._call("/moto-api/reset", method="POST")

    def verify_sender(self, address: str, region: str = REGION) -> None:
        """SES sends only from verified identities, in moto as in AWS."""
        boto3.client("sesv2", region_name=region, endpoint_url=self.endpoint_url
                     ).create_email_identity(EmailIdentity=address)

    def close(self) -> None:
        self._server.stop()
