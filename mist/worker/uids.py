"""Sandbox uids: each live sandbox gets its own unprivileged uid from the worker's range.

RLIMIT_NPROC counts processes per real uid, so a uid is shared by nobody, and is handed out
again only after its sandbox's processes are all gone (the Worker releases it after the
sandbox's cgroups were removed).
"""

from __future__ import annotations

import heapq


class UidRange:
    def __init__(self, first: int, count: int) -> None:
        self.first = first
        self.count = count
        self._free = list(range(first, first + count))  # a heap: lowest uid first
        self._used: set[int] = set()

    def allocate(self) -> int | None:
        if not self._free:
            return None
        uid = heapq.heappop(self._free)
        self._used.add(uid)
        return uid

    def release(self, uid: int) -> None:
        if uid in self._used:
            self._used.remove(uid)
            heapq.heappush(self._free, uid)

    @property
    def in_use(self) -> int:
        return len(self._used)
