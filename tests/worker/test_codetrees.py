"""CodeTrees (mist/worker/codetrees.py): code directories cloned ahead of the cold starts that
mount them; the pure bookkeeping over a fake clone, then the Worker using real clones."""

from __future__ import annotations

import asyncio
import os

import pytest

from mist.worker.codetrees import CodeTrees


class Clones:
    """A clone that is the read end of a pipe: a real fd whose closing the write end we keep
    can tell (even when its number is reused by a later one)."""

    def __init__(self) -> None:
        self.made: list[tuple[str, int]] = []
        self._writers: list[int] = []
        self.fail: set[str] = set()

    def __call__(self, path: str) -> int:
        if path in self.fail:
            raise FileNotFoundError(2, "No such file or directory", path)
        r, w = os.pipe()
        self.made.append((path, r))
        self._writers.append(w)
        return r

    def open(self) -> list[bool]:
        """For each clone made, in order: whether its fd is still open."""
        out = []
        for w in self._writers:
            try:
                os.write(w, b"x")
                out.append(True)
            except BrokenPipeError:
                out.append(False)
        return out

    def close(self) -> None:
        for (_, r), w in zip(self.made, self._writers):
            os.close(w)
            try:
                os.close(r)
            except OSError:
                pass


@pytest.fixture
def clones():
    c = Clones()
    yield c
    c.close()


def test_a_prepared_clone_is_taken_once_then_the_cold_start_clones_itself(clones):
    trees = CodeTrees(clone=clones)
    trees.prepare(("fn", 1), "/code/fn/1")
    trees.prepare(("fn", 1), "/code/fn/1")  # already there: not cloned twice
    assert len(clones.made) == 1 and len(trees) == 1
    fd = trees.take(("fn", 1), "/code/fn/1")
    assert fd == clones.made[0][1] and clones.open() == [True] and trees.used == 1
    assert trees.take(("fn", 1), "/code/fn/1") is None and len(trees) == 0


def test_a_clone_of_another_directory_is_not_used_and_is_closed(clones):
    trees = CodeTrees(clone=clones)
    trees.prepare(("fn", 1), "/code/a")
    assert trees.take(("fn", 1), "/code/b") is None and trees.used == 0
    assert clones.open() == [False]
    trees.prepare(("fn", 1), "/code/a")
    trees.prepare(("fn", 1), "/code/b")  # the key's directory changed: the old clone goes
    assert clones.open() == [False, False, True] and trees.take(("fn", 1), "/code/b") == clones.made[2][1]


def test_only_the_most_recently_prepared_versions_keep_a_clone(clones):
    trees = CodeTrees(limit=2, clone=clones)
    for v in (1, 2, 3):
        trees.prepare(("fn", v), f"/code/{v}")
    trees.prepare(("fn", 2), "/code/2")  # used again: now the most recent
    trees.prepare(("fn", 4), "/code/4")
    assert clones.open() == [False, True, False, True]
    assert trees.take(("fn", 2), "/code/2") is not None and trees.take(("fn", 4), "/code/4") is not None


def test_retiring_drops_the_other_versions_clones_and_removing_drops_all(clones):
    trees = CodeTrees(clone=clones)
    for key in (("fn", 1), ("fn", 2), ("other", 1)):
        trees.prepare(key, f"/code/{key[0]}/{key[1]}")
    trees.drop("fn", keep_version=2)
    assert clones.open() == [False, True, True]
    trees.drop("fn")
    assert clones.open() == [False, False, True]
    trees.close()
    assert clones.open() == [False, False, False] and len(trees) == 0


def test_a_directory_that_cannot_be_cloned_is_left_to_the_cold_start(clones):
    trees = CodeTrees(clone=clones)
    clones.fail.add("/gone")
    trees.prepare(("fn", 1), "/gone")
    assert len(trees) == 0 and trees.take(("fn", 1), "/gone") is None


# -- the Worker, real sandboxes ---------------------------------------------------------------------

WRITE_CODE = """
import os
def handler(event, context):
    if event == "crash":
        os._exit(1)
    try:
        open("/var/task/new.txt", "w")
        wrote = True
    except OSError:
        wrote = False
    return {"code": sorted(os.listdir("/var/task")), "wrote": wrote}
"""


@pytest.mark.sandbox
async def test_a_deployed_version_mounts_code_cloned_ahead_still_read_only_and_the_next_instance_finds_one(
        worker, function):
    from tests.worker.conftest import call, value

    spec = function(WRITE_CODE, files={"data.txt": "x"})
    await worker.provision(spec)  # what a deploy calls
    assert worker.statistics().code_trees == 1
    first = await call(worker, spec)
    assert first.cold_start and value(first) == {"code": ["data.txt", "main.py"], "wrote": False}
    assert worker.statistics().code_trees == 0  # used; the next is made after the answer, not before
    await asyncio.sleep(0)  # the turn of the loop after the answer
    stats = worker.statistics()
    assert (stats.code_trees_used, stats.code_trees) == (1, 1)

    crashed = await call(worker, spec, "crash")  # the instance goes: the next call needs another
    assert not crashed.ok and crashed.instance_id == first.instance_id
    second = await call(worker, spec)
    assert second.cold_start and second.instance_id != first.instance_id and value(second)["wrote"] is False
    assert worker.statistics().code_trees_used == 2

    await worker.retire("fn")  # removed: its clone goes too
    assert worker.statistics().code_trees == 0


@pytest.mark.sandbox
async def test_a_new_version_keeps_its_clone_and_the_retired_ones_lose_theirs(worker, function):
    old, new = function(WRITE_CODE), function(WRITE_CODE)
    await worker.provision(old)
    await worker.provision(new)
    assert worker.statistics().code_trees == 2
    await worker.retire("fn", keep_version=new.version)
    assert worker.statistics().code_trees == 1
    from tests.worker.conftest import call

    assert (await call(worker, new)).cold_start and worker.statistics().code_trees_used == 1
