"""Log output: the text lines as they have always been, or one JSON object a line.

The JSON form keeps the log calls as they are: the ``key=value`` pairs and the ids that the
text lines carry (``tenant=acme user=alice``, ``websocket connection 3f2a opened``,
``notification 42 created``, the access log's status and path) are read back out of the
formatted message into keys of their own. Tokens never appear: token, ticket and
access_token values, anything shaped like a JWT and the signed part of an unsubscribe link
are replaced before either form is written."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

_SECRET_PARAM = re.compile(r"\b((?:token|ticket|access_token|once)=)[^&\s]*", re.IGNORECASE)
_JWT = re.compile(r"\beyJ[\w-]*\.[\w-]+\.[\w-]*")
_UNSUBSCRIBE = re.compile(r"(/unsubscribe/)[^\s?#\"'>]+")
_PAIR = re.compile(r"(?<![\w/?&])([a-z_]+)=([^\s&]+)")
_CONNECTION = re.compile(r"\b(websocket|sse) connection (\S+) (opened|closed)")
_DROPPED = re.compile(r"\bslow (websocket|sse) connection (\S+)")
_CREATED = re.compile(r"\bnotifications? (\d+)(?:-(\d+))? created")
_DELIVERY = re.compile(r"^(\w+) delivery (\d+) ")
_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_ACCESS = re.compile(r"^(\d{3}) ([A-Z]+) (\S+) \(([^)]*)\) ([\d.]+)ms$")


def redact_path(text: str) -> str:
    """The signed token of an unsubscribe link (``/unsubscribe/<token>``) replaced."""
    return _UNSUBSCRIBE.sub(r"\1[redacted]", text)


# What each pattern above needs in a line to match at all (lowercased): a line of ASCII
# that has none of them is left as it is without running the patterns.
_NEEDED = ("token=", "ticket=", "once=", "eyj", "/unsubscribe/")


def redact(text: str) -> str:
    if text.isascii():
        lowered = text.lower()
        if not any(needed in lowered for needed in _NEEDED):
            return text
    return redact_path(_JWT.sub("[redacted]", _SECRET_PARAM.sub(r"\1[redacted]", text)))


def _value(raw: str) -> Any:
    raw = raw.rstrip(",;:")
    return int(raw) if raw.isdigit() else raw


def fields(message: str, logger: str = "") -> dict[str, Any]:
    """The structured fields a formatted log message carries."""
    found: dict[str, Any] = {}
    if logger == "tornado.access" and (m := _ACCESS.match(message)):
        status, method, path, ip, ms = m.groups()
        return {"status": int(status), "method": method, "path": path, "remote_ip": ip,
                "duration_ms": float(ms)}
    if m := _CONNECTION.search(message):
        found.update(transport=m[1], connection=m[2], event=m[3])
    elif m := _DROPPED.search(message):
        found.update(transport=m[1], connection=m[2], event="dropped")
    if m := _CREATED.search(message):
        if m[2]:
            found.update(notification_id_first=int(m[1]), notification_id_last=int(m[2]))
        else:
            found["notification_id"] = int(m[1])
    if m := _DELIVERY.match(message):
        found.update(channel=m[1], delivery_id=int(m[2]))
    for key, value in _PAIR.findall(message):
        found.setdefault(key, _value(value))
    return found


class TextFormatter(logging.Formatter):
    """One record, one line: line breaks inside the message (from a client's text) are
    escaped, so nobody can forge a log line; a traceback below it stays as it is."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        message = record.message
        if _BREAKS.search(message):
            record.message = _BREAKS.sub(lambda m: repr(m[0])[1:-1], message)
        return super().formatMessage(record)

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, DATE_FORMAT)
        self._second: int | None = None
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """The second's time stamp, formatted once per second."""
        second = int(record.created)
        if second != self._second or datefmt != DATE_FORMAT:
            if datefmt != DATE_FORMAT:
                return super().formatTime(record, datefmt)
            self._stamp = time.strftime(DATE_FORMAT, self.converter(second))
            self._second = second
        return self._stamp

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and the message's fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = redact(record.getMessage())
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, Any] = {
            "time": f"{seconds}.{int(record.msecs):03d}Z", "level": record.levelname,
            "logger": record.name, "message": message,
        }
        for key, value in fields(message, record.name).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class TurnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """To stderr, the lines of one turn of the event loop in one write at its end (a batch of
    creates and their access lines: one system call, not one a line), in the order logged.
    A WARNING or worse, a line from outside the loop's thread and a line logged while no
    loop runs are written at once, with everything before them; `logging.shutdown` (at exit)
    writes what is left."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: list[str] = []
        self._due: asyncio.AbstractEventLoop | None = None  # the loop that will flush
        self._due_thread = 0  # and its thread

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING or not self._deferred():
            self.flush()

    def _deferred(self) -> bool:
        if self._due is not None:  # (the thread first: asking for the running loop costs more)
            return threading.get_ident() == self._due_thread and self._due.is_running()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        loop.call_soon(self.flush)
        self._due, self._due_thread = loop, threading.get_ident()
        return True

    def flush(self) -> None:
        self.acquire()
        try:
            self._due = None
            text = "".join(self._pending)
            self._pending.clear()
            if text:
                self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stderr is gone: there is nowhere left to say so
        finally:
            self.release()


def setup(level: str = "INFO", fmt: str = "text") -> None:
    """Configures the root logger for the server's process. Neither format shows the thread,
    the process or the source line of a call, so records do not collect them (the logging
    HOWTO's "Optimization"): a create's two lines cost less."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no caller's frame looked up
    handler = TurnHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=getattr(logging, level, logging.INFO), handlers=[handler])
