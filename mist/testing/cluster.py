"""In-memory cluster stores with an injectable clock: the same contracts as the PostgreSQL
stores of mist/cluster (tests/cluster runs one suite against both), for one process.

`ManualClock` plays the database's clock: every store here reads time from it only, as the
PostgreSQL stores read `now()` only.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from mist.cluster.directory import SchedulerRecord
from mist.cluster.leases import Lease
from mist.cluster.membership import Heartbeat, Load, MembershipSnapshot, WorkerInfo, WorkerRecord
from mist.cluster.shardmap import StoredMap


class ManualClock:
    """A clock that moves only when told: `clock()` -> aware datetime, `advance(seconds)`."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc)) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


@dataclass
class _Row:
    holder: str
    epoch: int
    expires_at: datetime


class MemoryLeaseStore:
    def __init__(self, clock: ManualClock, *, first_epoch: int = 1) -> None:
        """`first_epoch`: where the one sequence of epochs starts (a store that replaces another,
        as a restarted control plane's does, must start above every epoch the old one granted)."""
        self.clock = clock
        self._rows: dict[str, _Row] = {}
        self._epochs = itertools.count(first_epoch)  # one sequence for every lease, as in PostgreSQL
        self._lock = threading.Lock()

    def acquire(self, name: str, holder: str, ttl_s: float) -> Lease | None:
        with self._lock:
            now, row = self.clock(), self._rows.get(name)
            if row is not None and row.expires_at > now:
                if row.holder != holder:
                    return None
                epoch = row.epoch  # its live holder: a renewal
            else:
                epoch = next(self._epochs)
            self._rows[name] = new = _Row(holder, epoch, now + timedelta(seconds=_ttl(ttl_s)))
            return Lease(name, holder, new.epoch, new.expires_at)

    def _live(self, lease: Lease) -> _Row | None:
        row = self._rows.get(lease.name)
        if row and (row.holder, row.epoch) == (lease.holder, lease.epoch) and row.expires_at > self.clock():
            return row
        return None

    def renew(self, lease: Lease, ttl_s: float) -> Lease | None:
        renewed = self.renew_all([lease], ttl_s)
        return renewed[0] if renewed else None

    def renew_all(self, held: Sequence[Lease], ttl_s: float) -> list[Lease]:
        with self._lock:
            expires_at = self.clock() + timedelta(seconds=_ttl(ttl_s))
            renewed = []
            for lease in held:
                if (row := self._live(lease)) is not None:
                    row.expires_at = expires_at
                    renewed.append(replace(lease, expires_at=expires_at))
            return renewed

    def release(self, lease: Lease) -> bool:
        with self._lock:
            row = self._live(lease)
            if row is not None:
                row.expires_at = self.clock()
            return row is not None

    def current(self, name: str) -> Lease | None:
        with self._lock:
            row = self._rows.get(name)
            if row is None or row.expires_at <= self.clock():
                return None
            return Lease(name, row.holder, row.epoch, row.expires_at)

    def floors(self, names: Iterable[str]) -> dict[str, int]:
        with self._lock:
            now = self.clock()
            return {
                n: r.epoch if r.expires_at > now else r.epoch + 1
                for n in names
                if (r := self._rows.get(n)) is not None
            }


def _ttl(ttl_s: float) -> float:
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
    return ttl_s


class MemoryMembership:
    def __init__(self, clock: ManualClock, *, timeout_s: float) -> None:
        self.clock = clock
        self.timeout = timedelta(seconds=timeout_s)
        self._workers: dict[str, WorkerRecord] = {}
        self._lock = threading.Lock()

    def register(self, info: WorkerInfo) -> WorkerRecord:
        with self._lock:
            now, old = self.clock(), self._workers.get(info.id)
            rec = WorkerRecord(info, (old.incarnation + 1) if old else 1, False, now, now, Load(), ())
            self._workers[info.id] = rec
            return rec

    def heartbeat(self, worker_id: str, incarnation: int, beat: Heartbeat) -> bool:
        with self._lock:
            now, rec = self.clock(), self._workers.get(worker_id)
            if rec is None or rec.incarnation != incarnation or rec.heartbeat_at <= now - self.timeout:
                return False
            info = replace(rec.info, warm=beat.warm)
            self._workers[worker_id] = replace(
                rec, info=info, heartbeat_at=now, load=beat.load, instances=tuple(beat.instances)
            )
            return True

    def set_draining(self, worker_id: str, draining: bool) -> bool:
        with self._lock:
            rec = self._workers.get(worker_id)
            if rec is not None:
                self._workers[worker_id] = replace(rec, draining=draining)
            return rec is not None

    def leave(self, worker_id: str, incarnation: int) -> bool:
        with self._lock:
            rec = self._workers.get(worker_id)
            if rec is None or rec.incarnation != incarnation:
                return False
            del self._workers[worker_id]
            return True

    def snapshot(self) -> MembershipSnapshot:
        with self._lock:
            return MembershipSnapshot(self.clock(), tuple(self._workers[w] for w in sorted(self._workers)))


class MemoryShardMapStore:
    def __init__(self) -> None:
        self._map: StoredMap | None = None
        self._lock = threading.Lock()

    def read(self, newer_than: int = 0) -> StoredMap | None:
        with self._lock:
            return self._map if self._map is not None and self._map.version > newer_than else None

    def compare_and_set(self, expected_version: int, body: Any) -> StoredMap | None:
        with self._lock:
            if (self._map.version if self._map else 0) != expected_version:
                return None
            self._map = StoredMap(expected_version + 1, json.loads(json.dumps(body)))  # a copy, as stored
            return self._map


class MemorySchedulerDirectory:
    """The SchedulerDirectory of mist/cluster/directory.py in memory, on `clock`."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self._rows: dict[str, tuple[SchedulerRecord, datetime]] = {}
        self._lock = threading.Lock()

    def report(self, holder: str, address: str, rates: Mapping[int, float], *,
               hot: Mapping[str, float] = MappingProxyType({}), version: int = 0) -> None:
        with self._lock:
            self._rows[holder] = (SchedulerRecord(holder, address, dict(rates), dict(hot), version), self.clock())

    def live(self, within_s: float) -> list[SchedulerRecord]:
        since = self.clock() - timedelta(seconds=within_s)
        with self._lock:
            return [rec for holder, (rec, at) in sorted(self._rows.items()) if at > since]

    def leave(self, holder: str) -> None:
        with self._lock:
            self._rows.pop(holder, None)
