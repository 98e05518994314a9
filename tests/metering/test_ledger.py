import asyncio
import shutil

import pytest

from mist.control.batching import SerialWriter
from mist.control.sqlstore import SqlStore
from mist.metering.journal import Journal
from mist.metering.ledger import Ledger
from mist.testing.stores import MemoryStore
from tests.metering.conftest import T0, usage


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore()
        return
    s = SqlStore(f"sqlite:///{tmp_path / 'mist.db'}")
    yield s
    s.close()


@pytest.fixture
def writer():
    w = SerialWriter()
    yield w
    w.close()


class Refusing(MemoryStore):
    """A database that refuses the next `refusals` imports."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    def add_usage(self, records):
        if self.refusals:
            self.refusals -= 1
            raise OSError("database is locked")
        return super().add_usage(records)


async def started(store, tmp_path, writer, interval_s=3600.0) -> Ledger:
    ledger = Ledger(store, Journal(tmp_path / "j"), writer, interval_s=interval_s)
    await ledger.start()
    return ledger


def stored(store):
    return {r.id for r in store.usage_records(None, 0, T0 * 2, limit=100_000)}


async def test_appended_records_reach_the_usage_table(tmp_path, store, writer):
    ledger = await started(store, tmp_path, writer)
    records = [usage() for _ in range(5)]
    for r in records:
        await ledger.append(r)
    assert stored(store) == set()  # not before the import...
    await ledger.flush()
    assert stored(store) == {r.id for r in records}  # ...all of them after it
    assert list((tmp_path / "j").glob("*.log")) != []  # a fresh segment for what comes next
    await ledger.stop()
    assert list((tmp_path / "j").glob("*.log")) == []  # a clean stop leaves no journal


async def test_a_run_that_died_before_importing_loses_nothing(tmp_path, store, writer):
    dead = await started(store, tmp_path, writer)
    records = [usage() for _ in range(7)]
    for r in records:
        await dead.append(r)
    # the process dies here: no flush, no stop; the next run finds the journal
    successor = await started(store, tmp_path, writer)
    assert stored(store) == {r.id for r in records}
    assert successor.statistics().recovered == 7
    await successor.stop()


async def test_a_run_that_died_between_import_and_deleting_the_segment_counts_nothing_twice(tmp_path, store, writer):
    dead = await started(store, tmp_path, writer)
    records = [usage() for _ in range(4)]
    for r in records:
        await dead.append(r)
    kept = tmp_path / "kept"
    shutil.copytree(tmp_path / "j", kept)  # the segment as it was just before its deletion
    await dead.flush()
    shutil.rmtree(tmp_path / "j")
    shutil.copytree(kept, tmp_path / "j")
    successor = await started(store, tmp_path, writer)
    assert len(store.usage_records(None, 0, T0 * 2)) == 4
    assert store.tenant_totals(0, T0 * 2)["acme"].requests == 4
    await successor.stop()


async def test_an_import_the_database_refuses_is_retried_and_nothing_is_lost(tmp_path, writer):
    store = Refusing(1)
    ledger = await started(store, tmp_path, writer)
    first = usage()
    await ledger.append(first)
    with pytest.raises(OSError):
        await ledger.flush()
    second = usage()
    await ledger.append(second)
    assert ledger.statistics().pending == 2 and ledger.statistics().import_failures == 1
    await ledger.flush()
    assert stored(store) == {first.id, second.id} and ledger.statistics().pending == 0
    await ledger.stop()


async def test_the_same_record_appended_twice_is_stored_once(tmp_path, store, writer):
    ledger = await started(store, tmp_path, writer)
    r = usage()
    await ledger.append(r)
    await ledger.flush()
    await ledger.append(r)  # e.g. replayed from a journal that was imported already
    await ledger.flush()
    assert store.tenant_totals(0, T0 * 2)["acme"].requests == 1
    await ledger.stop()


async def test_records_are_imported_on_the_interval_without_anyone_asking(tmp_path, store, writer):
    ledger = await started(store, tmp_path, writer, interval_s=0.01)
    r = usage()
    await ledger.append(r)
    for _ in range(200):
        if stored(store):
            break
        await asyncio.sleep(0.01)
    assert stored(store) == {r.id}
    await ledger.stop()


async def test_a_stop_the_database_refuses_leaves_the_records_for_the_next_start(tmp_path, writer):
    store = Refusing(1)
    ledger = await started(store, tmp_path, writer)
    r = usage()
    await ledger.append(r)
    await ledger.stop()  # does not raise: mist's shutdown goes on
    successor = await started(store, tmp_path, writer)
    assert stored(store) == {r.id}
    await successor.stop()
