"""Who is connected across every process: local by default, Redis with `--redis-url`."""

from .protocol import Presence, Stats, empty

__all__ = ["Presence", "Stats", "empty"]
