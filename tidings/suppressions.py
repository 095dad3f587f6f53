"""Each tenant's suppression list: email addresses that tidings no longer sends to.

An address gets there by a permanent SES bounce or a complaint (tidings/bounces.py), or by a
tenant admin (`POST /api/suppressions`); an admin removes it. Addresses are kept in lower
case, so ``Alice@Example.com`` and ``alice@example.com`` are one entry. A delivery to a
suppressed address is `skipped` with last_error "suppressed".
"""

from __future__ import annotations

import re
from email.utils import parseaddr
from typing import Any

from . import errors, validation

REASONS = ("bounce", "complaint", "manual")
SKIPPED = "suppressed"  # a skipped delivery's last_error
MAX_PAGE = 500
_ADDRESS = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def normalize(address: str) -> str:
    """The form an address is stored and compared in: the bare address, lower case."""
    return (parseaddr(address)[1] or address).strip().lower()


def checked(address: Any, field: str = "address") -> str:
    """An address given by an admin, normalized; a 400 naming `field` when it is not one."""
    if not isinstance(address, str) or len(address) > 254 or not _ADDRESS.match(address):
        raise errors.invalid(field, "is not an email address")
    return normalize(address)


def page(limit: str | None, after: str | None) -> tuple[int, str]:
    """`?limit=` (1 to 500, default 100) and `?after=` of the list."""
    return validation.limit(limit, 100, MAX_PAGE), (after or "").lower()
