"""CodeTrees: a function's code, cloned for mounting ahead of the cold start that mounts it.

A cold start mounts the function's code directory read-only at /var/task in the sandbox
(`isolation.attach_code`): a detached, read-only clone of the directory (open_tree +
mount_setattr), then moved into the sandbox's mount namespace. The clone is the larger part of
the attach: ~0.13 ms of the ~0.25 ms on a sparse cold start on the benchmark machine
(docs/benchmarks.md). It does not depend on the sandbox, so it is made ahead: when a version is
deployed (`Worker.provision`), and again after each cold start that used one, once its answer
is out (the next instance of the same version, on scale-out or after a reclaim, finds one).

A clone is an fd, and moved once; this holds at most one per function version, the most recent
`limit` of them (each pins nothing but its directory's mount). A version retired or removed
loses its clone (`drop`): a clone keeps its directory alive even after it is deleted.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable

from mist.worker import syscalls as sc

log = logging.getLogger(__name__)

Key = tuple[str, int]  # (function name, version)


class CodeTrees:
    def __init__(self, limit: int = 64, clone: Callable[[str], int] = sc.clone_tree_readonly) -> None:
        self.limit = limit
        self._clone = clone
        self._trees: OrderedDict[Key, tuple[str, int]] = OrderedDict()  # key -> (code dir, fd), oldest first
        self.used = 0  # cold starts that found their clone made

    def __len__(self) -> int:
        return len(self._trees)

    def prepare(self, key: Key, code_dir: str) -> None:
        """Make the clone of `code_dir` for `key` now, unless it is there already. A directory
        that cannot be cloned is left to the cold start (which reports the error)."""
        held = self._trees.get(key)
        if held is not None:
            if held[0] == code_dir:
                self._trees.move_to_end(key)
                return
            self._close(self._trees.pop(key))
        try:
            fd = self._clone(code_dir)
        except OSError as exc:
            log.debug("cloning %s ahead failed (the cold start clones it): %s", code_dir, exc)
            return
        self._trees[key] = (code_dir, fd)
        while len(self._trees) > self.limit:
            self._close(self._trees.popitem(last=False)[1])

    def take(self, key: Key, code_dir: str) -> int | None:
        """The clone made for `key`, now the caller's to move (and close); None if there is none
        of `code_dir`."""
        held = self._trees.pop(key, None)
        if held is None:
            return None
        if held[0] != code_dir:
            self._close(held)
            return None
        self.used += 1
        return held[1]

    def drop(self, function_name: str, keep_version: int | None = None) -> None:
        """Close the clones of `function_name`'s versions, except `keep_version`'s."""
        for key in [k for k in self._trees if k[0] == function_name and k[1] != keep_version]:
            self._close(self._trees.pop(key))

    def close(self) -> None:
        while self._trees:
            self._close(self._trees.popitem()[1])

    @staticmethod
    def _close(held: tuple[str, int]) -> None:
        try:
            os.close(held[1])
        except OSError:
            pass
