"""Where the shard map is kept: one versioned document per sharded service, changed only by
compare-and-set on its version, followed by readers that poll with the version they have.

The map itself — shard ranges of the hash space, each with its owner and epoch — and its pure
policy live in mist/core/sharding.py; this store keeps it as a JSON document (`body`) and does
not look inside. Numbers are kept exactly, 64-bit hash points included.

The shard manager writes: read the map, compute the next one, `compare_and_set(version, body)`;
on None another manager got there first, so it reads and decides again (two managers can never
both win). Gateways follow: `ShardMapFollower.poll()` every second or so and after a redirect —
one primary-key read that returns no row while nothing changed. Why polling and not
LISTEN/NOTIFY: docs/cluster.md.

The map is routing, not authority: a shard's owner acts only while it holds the shard's lease
(mist/cluster/leases.py) and stamps orders with that lease's epoch. A gateway with a stale map
sends a request to the old owner, which redirects it: a stale map costs a hop, never a wrong
placement.

Worked example: the first map is written with `compare_and_set(0, m1)` -> version 1. Manager A
and manager B both read version 1; A writes `compare_and_set(1, m2)` -> version 2; B's
`compare_and_set(1, m2')` -> None, B re-reads version 2. A follower at version 1 polls and
receives version 2; polling again, it receives None.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class StoredMap:
    version: int  # 1 for the first map, +1 on every change
    body: Any  # a JSON value: the map as mist.core.sharding encodes it


class ShardMapStore(Protocol):
    def read(self, newer_than: int = 0) -> StoredMap | None:
        """The map if its version is above `newer_than`, else None (also when there is none)."""

    def compare_and_set(self, expected_version: int, body: Any) -> StoredMap | None:
        """Store `body` as version expected_version + 1 if the stored map is still at
        `expected_version` (0: there is none yet); None if another writer got there first."""


@dataclass(frozen=True)
class FollowerStatistics:
    version: int
    polls: int
    changes: int


class ShardMapFollower(Generic[T]):
    """A reader's copy of the map, decoded once per version by `decode(stored)` (e.g. into
    mist.core.sharding.ShardMap). `map` is None until the first map exists. Thread-safe."""

    def __init__(self, store: ShardMapStore, decode: Callable[[StoredMap], T]) -> None:
        self.store, self.decode = store, decode
        self.map: T | None = None
        self.version = 0
        self._lock = threading.Lock()
        self._polls = self._changes = 0

    def poll(self) -> bool:
        """Fetch and decode a newer map if there is one; True if the map changed."""
        newer = self.store.read(newer_than=self.version)
        decoded = self.decode(newer) if newer is not None else None
        with self._lock:
            self._polls += 1
            if newer is None or newer.version <= self.version:
                return False
            self.map, self.version = decoded, newer.version
            self._changes += 1
            return True

    def statistics(self) -> FollowerStatistics:
        with self._lock:
            return FollowerStatistics(self.version, self._polls, self._changes)
