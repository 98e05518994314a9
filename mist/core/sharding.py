"""The shard map: which scheduler owns a function (pure, no I/O, no clock).

Every function hashes to a point of a 64-bit space (`point`: the first 8 bytes of its
BLAKE2b digest, the same in every process). The space is cut into **shards**, contiguous ranges
`[start, next start)`, far more of them than scheduler owners (16 per owner to begin with), so
that load can be evened by moving whole shards. A `ShardMap` lists the shards' starts in order
with, for each, its owner and its **epoch**; finding a function's shard is a binary search.

Epochs fence owners. Every change of the map makes a new map `version`, and each shard whose
owner or range changed takes that version as its epoch, so epochs only grow: an owner sends its
orders with the epoch of the shard it holds, and a worker that has seen a higher epoch for the
function refuses them (a stale owner that lost its lease, or missed a move, can place nothing).

A function too hot for any one owner is cut into **parts**: with `parts[f] = k`, f's requests
spread over k sub-keys (`f`, `f#1`, ..., `f#k-1`), each its own point, so its parts land in
different shards, owned by different owners, each holding a k-th of its instances. Part 0 is
the function's own point, so a function with one part is routed exactly as before.

The map changes only through actions, applied in order by `apply`: `Move` (a shard to another
owner), `Split` (a shard in two at a point; both halves keep the owner), `Merge` (a shard with
its right neighbour, under one owner) and `Parts` (a function's number of parts).

Worked example: two owners, four shards of the space (quarters), round-robin. The function
falls in the third quarter, owned by s1; that shard moves to s2 (epoch 1, the new version) while
the first quarter is split in two, then merged again, and the function is cut in 4 parts:

    >>> m = ShardMap.uniform(4, ["s1", "s2"])
    >>> [(hex(s.start), s.owner, s.epoch) for s in m.shards()]
    [('0x0', 's1', 0), ('0x4000000000000000', 's2', 0), ('0x8000000000000000', 's1', 0), ('0xc000000000000000', 's2', 0)]
    >>> hex(point("acme/resize")), m.route("acme/resize").owner
    ('0x91c0285d674a6ccc', 's1')
    >>> m2 = m.apply([Move(0x8000000000000000, "s2"), Split(0x0, 0x2000000000000000)])
    >>> r = m2.route("acme/resize")
    >>> m2.version, r.owner, r.shard == 0x8000000000000000, r.epoch, len(m2)
    (1, 's2', True, 1, 5)
    >>> m3 = m2.apply([Merge(0x0, "s1"), Parts("acme/resize", 4)])
    >>> [m3.route("acme/resize", pick=i).part for i in range(5)], len(m3)
    ([0, 1, 2, 3, 0], 4)
"""

from __future__ import annotations

import functools
import hashlib
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from mist.errors import InvalidRequest

SPACE = 1 << 64  # points are in [0, SPACE)


@functools.lru_cache(maxsize=1 << 16)
def point(function: str, part: int = 0) -> int:
    """A function's point in the hash space (part > 0: the point of its part-th sub-key).
    Memoized: gateways and the shard manager ask for the same few thousand hot ones."""
    key = function if part == 0 else f"{function}#{part}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class Shard:
    start: int
    end: int  # exclusive; SPACE for the last shard
    owner: str
    epoch: int

    @property
    def width(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request of a function goes: the owner, the shard (start) and its epoch, and
    which part of the function it is."""

    owner: str
    shard: int
    epoch: int
    part: int


@dataclass(frozen=True, slots=True)
class Move:
    start: int  # the shard
    to: str  # its new owner


@dataclass(frozen=True, slots=True)
class Split:
    start: int  # the shard
    at: int  # the new half's start, strictly inside the shard


@dataclass(frozen=True, slots=True)
class Merge:
    start: int  # the shard; it absorbs its right neighbour
    owner: str  # the merged shard's owner


@dataclass(frozen=True, slots=True)
class Parts:
    function: str
    parts: int  # 1 = not cut


Action = Move | Split | Merge | Parts


@dataclass(frozen=True)
class ShardMap:
    starts: tuple[int, ...]
    owners: tuple[str, ...]
    epochs: tuple[int, ...]
    version: int = 0
    parts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not self.starts or self.starts[0] != 0:
            raise InvalidRequest("shard map: the first shard must start at 0")
        if not len(self.starts) == len(self.owners) == len(self.epochs):
            raise InvalidRequest("shard map: starts, owners and epochs differ in length")
        if any(b <= a for a, b in zip(self.starts, self.starts[1:])) or self.starts[-1] >= SPACE:
            raise InvalidRequest("shard map: starts must increase strictly and stay below 2**64")

    @classmethod
    def uniform(cls, shards: int, owners: Sequence[str]) -> ShardMap:
        """`shards` equal ranges dealt to `owners` in turn (sorted, so the order given does
        not matter)."""
        if shards < 1 or not owners:
            raise InvalidRequest(f"shard map: need >= 1 shard and >= 1 owner, got {shards} and {len(owners)}")
        ordered = sorted(owners)
        return cls(tuple(i * SPACE // shards for i in range(shards)),
                   tuple(ordered[i % len(ordered)] for i in range(shards)), (0,) * shards)

    def __len__(self) -> int:
        return len(self.starts)

    def index(self, at: int) -> int:
        """The position of the shard holding point `at`."""
        return bisect_right(self.starts, at) - 1

    def end(self, i: int) -> int:
        return self.starts[i + 1] if i + 1 < len(self.starts) else SPACE

    def shard(self, i: int) -> Shard:
        return Shard(self.starts[i], self.end(i), self.owners[i], self.epochs[i])

    def shards(self) -> Iterator[Shard]:
        return (self.shard(i) for i in range(len(self.starts)))

    def parts_of(self, function: str) -> int:
        return self.parts.get(function, 1)

    def route(self, function: str, pick: int = 0) -> Route:
        """Where a request of `function` goes. `pick` chooses the part when the function is
        cut (the gateway passes a random or round-robin number; ignored otherwise)."""
        part = pick % self.parts.get(function, 1)
        i = bisect_right(self.starts, point(function, part)) - 1
        return Route(self.owners[i], self.starts[i], self.epochs[i], part)

    def apply(self, actions: Iterable[Action]) -> ShardMap:
        """The map after `actions`, in order, as one new version. Each action names a shard by
        its start in the map as the previous actions left it."""
        starts, owners, epochs = list(self.starts), list(self.owners), list(self.epochs)
        parts = dict(self.parts)
        version = self.version + 1
        for action in actions:
            if isinstance(action, Parts):
                if action.parts < 1:
                    raise InvalidRequest(f"shard map: {action.function} must keep >= 1 part, got {action.parts}")
                if action.parts == 1:
                    parts.pop(action.function, None)
                else:
                    parts[action.function] = action.parts
                continue
            i = bisect_right(starts, action.start) - 1
            if i < 0 or starts[i] != action.start:
                raise InvalidRequest(f"shard map: no shard starts at {action.start:#x}")
            if isinstance(action, Move):
                owners[i], epochs[i] = action.to, version
            elif isinstance(action, Split):
                end = starts[i + 1] if i + 1 < len(starts) else SPACE
                if not starts[i] < action.at < end:
                    raise InvalidRequest(f"shard map: {action.at:#x} is not inside the shard [{starts[i]:#x}, {end:#x})")
                starts.insert(i + 1, action.at)
                owners.insert(i + 1, owners[i])
                epochs.insert(i + 1, version)
                epochs[i] = version
            elif isinstance(action, Merge):
                if i + 1 >= len(starts):
                    raise InvalidRequest(f"shard map: the shard at {action.start:#x} is the last one, with nothing to merge")
                del starts[i + 1], owners[i + 1], epochs[i + 1]
                owners[i], epochs[i] = action.owner, version
            else:
                raise InvalidRequest(f"shard map: unknown action {action!r}")
        return ShardMap(tuple(starts), tuple(owners), tuple(epochs), version, MappingProxyType(parts))

    def to_json(self) -> dict:
        """The map as stored (mist/cluster/shardmap.py): points as JSON integers, kept exact."""
        return {"starts": list(self.starts), "owners": list(self.owners), "epochs": list(self.epochs),
                "parts": dict(self.parts)}

    @classmethod
    def from_json(cls, body: Mapping, version: int) -> ShardMap:
        """The map `to_json` stored, at the store's `version`."""
        return cls(tuple(int(s) for s in body["starts"]), tuple(body["owners"]), tuple(int(e) for e in body["epochs"]),
                   version, MappingProxyType({str(k): int(v) for k, v in (body.get("parts") or {}).items()}))

    def owned(self) -> dict[str, list[int]]:
        """Owner -> the positions of its shards."""
        out: dict[str, list[int]] = {}
        for i, owner in enumerate(self.owners):
            out.setdefault(owner, []).append(i)
        return out
