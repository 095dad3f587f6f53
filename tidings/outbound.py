"""Where tidings may send requests (webhooks, web push): public addresses only.

Every outbound connection is checked on the address it is about to connect to, after the
name was resolved, by a resolver that the HTTP clients use (Tornado's for webhooks, aiohttp's
for web push): a name that resolves to loopback, private, link-local, shared (100.64/10),
multicast, reserved or unspecified space is refused, also as IPv4-mapped IPv6, and so is any
spelling of such an address (``2130706433``, ``0x7f.1``, ``127.1``, ``[::ffff:127.0.0.1]``),
since the operating system's resolver reads those the same way. A name re-pointed between a
check and the connection (DNS rebinding) cannot pass: the check is on the connect address.

``--outbound-allow`` names hosts, ``host:port`` pairs and CIDRs allowed anyway (an internal
receiver); ``--dev`` allows loopback. URLs are refused at registration when their host is a
literal address (or ``localhost``) that is not allowed; names are checked at send time."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

MAX_URL = 2048
REFUSED = "destination not allowed"  # the whole last_error of a refused send
FAILED = "connection failed"  # the whole last_error of any other network failure

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefused(OSError):
    """The address is not one tidings may connect to."""

    def __init__(self) -> None:
        super().__init__(REFUSED)


def _literal(host: str) -> Address | None:
    """``host`` as an address when it is one, in any spelling the OS resolver accepts
    (after the percent-decoding and IDNA mapping clients apply: ``127。0。0。1``, ``①②⑦.0.0.1``)."""
    host = unquote(host)
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:  # inet_aton takes 127.1, 2130706433, 0x7f.1, 0177.0.0.1 as getaddrinfo does
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def _public(ip: Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return _public(mapped)
        if ip.teredo is not None:
            return False
    return bool(ip.is_global and not (
        ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
        or ip.is_reserved or ip.is_unspecified
        or ip in ipaddress.ip_network("100.64.0.0/10")))


RESOLVE_TIMEOUT = 3.0  # seconds; the webhook and push clients' connect timeouts are longer


def refused(error: BaseException | None) -> bool:
    """Whether a client library's error came from a refused destination."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, DestinationRefused):
            return True
        error = getattr(error, "os_error", None) or error.__cause__ or error.__context__
        seen += 1
    return False


class OutboundPolicy:
    """The rules above, from ``--outbound-allow`` and ``--dev``."""

    def __init__(self, allow: Iterable[str] = (), allow_loopback: bool = False) -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.hosts: set[str] = set()
        self.host_ports: set[tuple[str, int]] = set()
        self.allow_loopback = allow_loopback
        for entry in (e.strip().lower() for e in allow):
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            host, sep, port = entry.rpartition(":")
            if sep and port.isdigit() and "]" not in port:
                self.host_ports.add((host.strip("[]"), int(port)))
            else:
                self.hosts.add(entry.strip("[]"))

    @classmethod
    def from_settings(cls, settings: Any) -> OutboundPolicy:
        return cls(getattr(settings, "outbound_allow", ()), bool(getattr(settings, "dev", False)))

    def _named(self, host: str, port: int | None) -> bool:
        host = host.lower().strip("[]")
        return host in self.hosts or (port is not None and (host, port) in self.host_ports)

    def allows(self, host: str, port: int | None, ip: Address) -> bool:
        """Whether a connection to ``ip`` (resolved from ``host``) may be made."""
        if self._named(host, port) or self._named(str(ip), port):
            return True
        if any(ip in net for net in self.networks):
            return True
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            if any(ip.ipv4_mapped in net for net in self.networks):
                return True
            if self.allow_loopback and ip.ipv4_mapped.is_loopback:
                return True
        if self.allow_loopback and ip.is_loopback:
            return True
        return _public(ip)

    def check_url(self, url: str, field: str) -> str:
        """At registration: raises ValueError("field: problem") for a URL that can never be
        sent to (scheme, length, a literal address that is not allowed)."""
        if len(url) > MAX_URL:
            raise ValueError(f"{field}: must be at most {MAX_URL} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError(f"{field}: is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{field}: must be an absolute http(s) URL")
        host = parts.hostname
        port = port or (443 if parts.scheme == "https" else 80)
        ip = _literal(host)
        if ip is None and (host == "localhost" or host.endswith(".localhost")):
            ip = ipaddress.ip_address("127.0.0.1")
        if ip is not None and not self.allows(host, port, ip):
            raise ValueError(f"{field}: {REFUSED} (a loopback, private or reserved address)")
        return url

    async def resolve(self, host: str, port: int, family: int = socket.AF_UNSPEC,
                      ) -> list[tuple[int, Any]]:
        """``(family, sockaddr)`` pairs to connect to; DestinationRefused when any address the
        name has is not allowed (a name with one private address is not used at all)."""
        loop = asyncio.get_running_loop()
        try:
            # Within the client's own connect timeout: an answer that came after it would be
            # an error nobody waits for (Tornado logs those as server faults).
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                infos = await loop.getaddrinfo(host.strip("[]"), port, family=family,
                                               type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            raise OSError(FAILED) from None
        result: list[tuple[int, Any]] = []
        for fam, _type, _proto, _canon, sockaddr in infos:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if not self.allows(host, port, ip):
                raise DestinationRefused()
            result.append((fam, sockaddr))
        if not result:
            raise OSError(FAILED)
        return result
