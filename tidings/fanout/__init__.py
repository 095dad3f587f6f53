"""Fan-out between processes: in-process by default, Redis pub/sub with `--redis-url`."""

from .protocol import Broker, BrokerUnavailable, Envelope, Receive

__all__ = ["Broker", "BrokerUnavailable", "Envelope", "Receive"]
