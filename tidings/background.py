"""The loop that the housekeepers share (retention, expiry, the scheduler's sender): one round
of work, then a wait until it is woken or its next round is due. A round that fails is logged
and tried again after a backoff: no error ends the loop, and /healthz reports one that did."""

from __future__ import annotations

import asyncio
import logging

from . import errors
from .store import StoreUnavailable

log = logging.getLogger("tidings")

BACKOFF = (1.0, 30.0)  # seconds after a failed round: first, then doubling up to the last


class Background:
    what = "background work"  # for the task's name and the log lines

    def __init__(self) -> None:
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def round(self) -> float:
        """One round of work; returns the seconds until the next one is due."""
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"tidings-{self.what}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """A round now (settings changed, an entry was added, a test moved the clock)."""
        self._wanted.set()

    async def _loop(self) -> None:
        delay = BACKOFF[0]
        while True:
            self._wanted.clear()  # a wake during the round runs it again
            try:
                wait = await self.round()
                delay = BACKOFF[0]
            except (StoreUnavailable, errors.TidingsError) as e:  # a store away, a stop
                log.warning("%s failed (%s); again in %.0fs", self.what, e, delay)
                wait, delay = delay, min(delay * 2, BACKOFF[1])
            except Exception:  # never dies of an error: next time may go better
                log.exception("%s failed; again in %.0fs", self.what, delay)
                wait, delay = delay, min(delay * 2, BACKOFF[1])
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    await self._wanted.wait()
            except TimeoutError:
                pass
