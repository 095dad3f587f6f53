"""The command line: ``tidings-client notify …`` and ``tidings-client tail …`` (also reached as
``tidings notify`` / ``tidings tail`` where the server is installed).

Reads TIDINGS_URL (default http://127.0.0.1:8888) and TIDINGS_TOKEN; flags win."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .client import AsyncTidings, Tidings
from .errors import TidingsError
from .models import Event
from .subscribe import TRANSPORTS


def _pair(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(value)  # numbers, true/false, null, JSON objects
    except ValueError:
        return key, value


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("TIDINGS_URL"),
                        help="the server [env TIDINGS_URL; default http://127.0.0.1:8888]")
    parser.add_argument("--token", default=os.environ.get("TIDINGS_TOKEN"),
                        help="a token for the server [env TIDINGS_TOKEN]")
    parser.add_argument("--tenant", help="the tenant; must be the token's (the server checks)")


def build_parser(prog: str = "tidings-client") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Send and watch tidings "
                                     "notifications. Reads TIDINGS_URL and TIDINGS_TOKEN.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{notify,tail}")

    notify = sub.add_parser("notify", help="send a notification", description="Send a "
                            "notification (with a service or admin token) to one user, several "
                            "(--user repeated) or every user of the tenant (--broadcast).")
    notify.add_argument("title", help="the notification's title")
    notify.add_argument("-m", "--message", help="its text")
    who = notify.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", action="append", dest="users", metavar="USER",
                     help="a recipient's user id; repeat for several")
    who.add_argument("--broadcast", action="store_true", help="every user of the tenant")
    notify.add_argument("--type", help="info, success, warning, error (or a configured one)")
    notify.add_argument("--priority", choices=("low", "normal", "high", "urgent"))
    notify.add_argument("--data", action="append", type=_pair, default=[], metavar="KEY=VALUE",
                        help="a field of its data (a JSON value, else a string); repeatable")
    notify.add_argument("--channel", action="append", dest="channels", metavar="CHANNEL",
                        help="narrow the channels (email, sms, push, webhook); repeatable")
    notify.add_argument("--idempotency-key", help="a retry with the same key creates nothing")
    notify.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    _connection_flags(notify)

    tail = sub.add_parser("tail", help="print notifications as they arrive", description=
                          "Print the token's user's notifications as they arrive, forever; "
                          "reconnects and resumes by itself after a drop (Ctrl-C stops).")
    tail.add_argument("--json", action="store_true", help="one JSON object a line")
    tail.add_argument("--since", type=int, help="first print what came after this id")
    tail.add_argument("--transport", choices=TRANSPORTS, default="auto",
                      help="websocket, sse, or auto (WebSocket, SSE when it is blocked)")
    _connection_flags(tail)
    return parser


def _notify(args: argparse.Namespace) -> int:
    users = args.users or []
    with Tidings(args.url, args.token, tenant=args.tenant) as client:
        created = client.notify(
            args.title, message=args.message, type=args.type, priority=args.priority,
            data=dict(args.data) or None, channels=args.channels,
            idempotency_key=args.idempotency_key, broadcast=args.broadcast,
            **({"user_id": users[0]} if len(users) == 1 else
               {"user_ids": users} if users else {}))
    if args.json:
        print(json.dumps({"notifications": [n.to_json() for n in created.notifications],
                          "delivery": created.delivery, "replayed": created.replayed}))
        return 0
    for n in created.notifications:
        print(f"notification {n.id} to {n.user_id or 'everyone'}")
    return 0


def _line(event: Event) -> str:
    n = event.notification
    assert n is not None
    text = f"#{n.id} {n.created_at} [{n.type}] {n.title}"
    return text + (f": {n.message}" if n.message else "")


async def _tail(args: argparse.Namespace) -> int:
    async with AsyncTidings(args.url, args.token, tenant=args.tenant) as client:
        async for event in client.subscribe(since=args.since, transport=args.transport,
                                            events=True):
            if event.type == "connected":
                print(f"tidings: connected over {event.transport} as "
                      f"{event.data.get('user_id')}", file=sys.stderr, flush=True)
            elif event.notification is not None:
                print(json.dumps(event.notification.to_json()) if args.json else _line(event),
                      flush=True)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "tidings-client") -> int:
    args = build_parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "notify":
            return _notify(args)
        return asyncio.run(_tail(args))
    except TidingsError as e:
        print(f"{prog}: {e.message} ({e.code or e.status})", file=sys.stderr)
        return 1
    except ValueError as e:  # no token
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
