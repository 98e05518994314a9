"""The shard map: which range of the hash space is which shard, owned by whom, at which epoch.

One map per sharded service, versioned. The shard manager changes it by compare-and-set on the
version (two managers cannot both win), gateways follow it by polling with the version they have
(`ShardMapFollower.poll`: one primary-key read that returns nothing while nothing changed).
Why polling and not LISTEN/NOTIFY: docs/cluster.md.

The map is routing, not authority: a shard's owner acts only while it holds the shard's lease
(mist/cluster/leases.py) and stamps orders with that lease's epoch. A gateway with a stale map
sends a request to the old owner, which redirects it; it costs a hop, never a wrong placement.

Worked example: space 100, shards [0,50) "a" owned by s1 at epoch 3 and [50,100) "b" owned by
s2 at epoch 1, version 7. `lookup(42)` is "a". The manager moves "b" to s1: it writes the new
ranges with `compare_and_set(7, ...)` and gets version 8; a second manager still at 7 gets None
and must re-read. A follower at version 7 polls and receives version 8; one at 8 receives None.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class ShardRange:
    """Keys lo <= key < hi are shard `shard`, owned by `owner` (None: unassigned) at `epoch`."""

    lo: int
    hi: int
    shard: str
    owner: str | None = None
    epoch: int = 0


@dataclass(frozen=True)
class ShardMap:
    version: int
    space: int  # keys are 0 .. space-1
    shards: tuple[ShardRange, ...]
    _los: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_ranges(self.space, self.shards)
        object.__setattr__(self, "_los", [s.lo for s in self.shards])

    def lookup(self, key: int) -> ShardRange:
        """The range holding `key` (0 <= key < space)."""
        if not 0 <= key < self.space:
            raise ValueError(f"key {key} is outside the hash space 0..{self.space - 1}")
        return self.shards[bisect.bisect_right(self._los, key) - 1]

    def owned_by(self, owner: str) -> tuple[ShardRange, ...]:
        return tuple(s for s in self.shards if s.owner == owner)


def check_ranges(space: int, shards: Sequence[ShardRange]) -> None:
    """Ranges must be sorted, non-empty, contiguous, cover 0..space and have distinct ids."""
    if space < 1:
        raise ValueError(f"shard map: space must be >= 1, got {space}")
    if not shards:
        raise ValueError("shard map: needs at least one range")
    at = 0
    for s in shards:
        if s.lo != at or s.hi <= s.lo:
            raise ValueError(f"shard map: range {s.shard!r} is [{s.lo}, {s.hi}) but must start at {at} and not be empty")
        at = s.hi
    if at != space:
        raise ValueError(f"shard map: ranges end at {at} but must cover the space up to {space}")
    ids = [s.shard for s in shards]
    if len(set(ids)) != len(ids):
        raise ValueError(f"shard map: shard ids repeat: {sorted(i for i in set(ids) if ids.count(i) > 1)}")


class ShardMapStore(Protocol):
    def read(self, newer_than: int = 0) -> ShardMap | None:
        """The map if its version is above `newer_than`, else None (also when there is none)."""

    def compare_and_set(self, expected_version: int, space: int, shards: Sequence[ShardRange]) -> ShardMap | None:
        """Write the map as version expected_version + 1 if the stored one is still at
        `expected_version` (0: there is none yet); None if another writer got there first.
        Raises ValueError for ranges that do not tile the space."""


@dataclass(frozen=True)
class FollowerStatistics:
    version: int
    polls: int
    changes: int


class ShardMapFollower:
    """A gateway's copy of the map. Call `poll()` every second or so, and at once after a
    redirect; `map` is None until the first map exists."""

    def __init__(self, store: ShardMapStore) -> None:
        self.store = store
        self.map: ShardMap | None = None
        self._lock = threading.Lock()
        self._polls = self._changes = 0

    @property
    def version(self) -> int:
        return self.map.version if self.map else 0

    def poll(self) -> bool:
        """Fetch a newer map if there is one; True if the map changed."""
        newer = self.store.read(newer_than=self.version)
        with self._lock:
            self._polls += 1
            if newer is None or newer.version <= self.version:
                return False
            self.map = newer
            self._changes += 1
            return True

    def statistics(self) -> FollowerStatistics:
        with self._lock:
            return FollowerStatistics(self.version, self._polls, self._changes)
