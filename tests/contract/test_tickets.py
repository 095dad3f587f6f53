"""One tickets contract, run against the in-process tickets and the Redis ones; with Redis, a
second instance stands for a second process sharing it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tidings import tickets as tickets_module
from tidings.errors import TidingsError
from tidings.models import Principal
from tidings.tickets import LocalTickets, RedisTickets, Tickets

ALICE = Principal("acme", "alice", "user")


@pytest.fixture(params=["local", "redis"])
def make(request: pytest.FixtureRequest, io_loop: Any) -> Iterator[Callable[[], Tickets]]:
    """Opens tickets of the kind under test; with Redis each call is another process."""
    opened: list[Tickets] = []
    if request.param == "local":
        opened.append(LocalTickets())
        yield lambda: opened[0]
    else:
        redis = request.getfixturevalue("redis")
        redis.flush()

        def another() -> Tickets:
            opened.append(RedisTickets(redis.url))
            return opened[-1]
        yield another
    for tickets in opened:
        io_loop.run_sync(tickets.close)


async def refused(call: Any) -> TidingsError:
    with pytest.raises(TidingsError) as caught:
        await call
    return caught.value


@pytest.mark.gen_test
async def test_a_ticket_is_its_makers_principal_once(make):
    made, other = make(), make()
    ticket = await made.issue(ALICE)
    assert await other.redeem(ticket, []) == ALICE
    for where in (made, other):
        assert (await refused(where.redeem(ticket, []))).code == "invalid_ticket"


@pytest.mark.gen_test
async def test_shown_to_many_at_once_it_is_spent_by_one(make):
    first, second = make(), make()
    ticket = await first.issue(ALICE)
    results = await asyncio.gather(*(t.redeem(ticket, []) for t in [first, second] * 10),
                                   return_exceptions=True)
    assert [r for r in results if isinstance(r, Principal)] == [ALICE]
    assert {r.code for r in results if isinstance(r, TidingsError)} == {"invalid_ticket"}


@pytest.mark.gen_test
async def test_another_tenant_is_a_mismatch_and_does_not_spend_it(make):
    tickets = make()
    ticket = await tickets.issue(ALICE)
    assert (await refused(tickets.redeem(ticket, ["acme", "globex"]))).code == "tenant_mismatch"
    assert await tickets.redeem(ticket, ["acme", "acme"]) == ALICE


@pytest.mark.gen_test
async def test_it_expires_after_its_time(make):
    tickets = make()
    ticket = await tickets.issue(ALICE)
    tickets.clock = lambda: time.time() + tickets_module.TTL + 1
    assert (await refused(tickets.redeem(ticket, []))).code == "invalid_ticket"


@pytest.mark.gen_test
@pytest.mark.parametrize("shown", ["", "nope", "x" * 65, "a b", "ä", "../../etc", "*"])
async def test_unknown_and_malformed_tickets_are_refused(make, shown):
    assert (await refused(make().redeem(shown, []))).code == "invalid_ticket"


@pytest.mark.gen_test
async def test_a_user_past_its_share_is_told_to_wait_and_its_tenant_is_not(make, monkeypatch):
    monkeypatch.setattr(tickets_module, "MAX_PER_USER", 2)
    tickets = make()
    for _ in range(2):
        await tickets.issue(ALICE)
    assert (await refused(tickets.issue(ALICE))).status == 429
    assert await tickets.issue(Principal("acme", "bob"))


@pytest.mark.gen_test
async def test_a_tenant_past_its_share_is_told_to_wait_and_others_are_not(make, monkeypatch):
    monkeypatch.setattr(tickets_module, "MAX_PER_TENANT", 3)
    tickets = make()
    for _ in range(3):
        await tickets.issue(ALICE)
    assert (await refused(tickets.issue(ALICE))).status == 429
    assert await tickets.issue(Principal("globex", "bob"))
