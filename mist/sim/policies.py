"""Policy names for the simulator: the keep-alive policies of mist.core.keepalive, plus `oracle`."""

from __future__ import annotations

import math

from mist.core.keepalive import Decision, KeepAlivePolicy, from_name, policy_names
from mist.errors import InvalidRequest


class Oracle:
    """Clairvoyant: loads each function exactly when its next invocation arrives, for 0 s.

    It wastes nothing and misses only each function's first invocation (nothing is loaded before
    it); invocations that find the function executing are warm under every policy. Not a
    KeepAlivePolicy (it needs the future): the simulator asks it with the next arrival's time.
    """

    name = "oracle"

    @staticmethod
    def decide(idle_at: float, next_arrival: float) -> Decision:
        return Decision(next_arrival - idle_at, 0.0) if math.isfinite(next_arrival) else Decision(math.inf, 0.0)


def resolve(name: str) -> KeepAlivePolicy | Oracle:
    """A policy by name: fixed:MINUTES, hybrid-histogram, mist or oracle (InvalidRequest if unknown)."""
    if name == "oracle":
        return Oracle()
    if not name.startswith("fixed:") and name not in names():
        raise InvalidRequest(f"unknown policy {name!r}; known: {', '.join(names())}")
    return from_name(name)


def names() -> list[str]:
    return [*policy_names(), "oracle"]
