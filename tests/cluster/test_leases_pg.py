"""Leases on the real PostgreSQL with real processes: many processes contending, a holder cut
off from the database (a partition), and the worker's fence refusing the old holder's orders."""

import json
import multiprocessing
import random
import subprocess
import sys
import time
from collections import defaultdict
from datetime import timedelta

import pytest
import sqlalchemy as sa

from mist.cluster.leases import Fence, LeaseKeeper
from mist.cluster.pg import connect
from mist.cluster.sqlleases import PgLeaseStore
from mist.errors import CoordinationUnavailable, StaleEpoch
from tests.cluster.proxy import CuttableProxy


@pytest.fixture
def store(pg_url):
    s = PgLeaseStore(pg_url)
    with s.engine.connect() as conn:
        conn.exec_driver_sql("TRUNCATE cluster_leases")
    yield s
    s.close()


def test_expiry_is_stamped_by_the_database_clock(store):
    lease = store.acquire("s", "a", 7.0)
    with store.engine.connect() as conn:
        db_now = conn.execute(sa.select(sa.func.now())).scalar_one()
    assert timedelta(seconds=6.5) < lease.expires_at - db_now <= timedelta(seconds=7)


def _churn(url, name, holder, ttl, seconds, out):
    """One contender: acquire, renew 0-3 times, then release or let it run out; repeat."""
    store, rnd, seen = PgLeaseStore(url), random.Random(holder), []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        lease = store.acquire(name, holder, ttl)
        if lease is None:
            time.sleep(0.002)
            continue
        seen.append(("grant", lease.epoch, lease.expires_at))
        for _ in range(rnd.randint(0, 3)):
            time.sleep(ttl / 4)
            if (lease := store.renew(lease, ttl)) is None:
                break
            seen.append(("renew", lease.epoch, lease.expires_at))
        if lease is not None and rnd.random() < 0.5:
            store.release(lease)
            seen.append(("release", lease.epoch, None))
        else:
            time.sleep(ttl * 1.5)  # let it run out (acquiring now would renew it)
    store.close()
    out.put((holder, seen))


def test_contending_processes_hold_the_lease_one_at_a_time_with_rising_epochs(pg_url, store):
    ttl, ctx = 0.1, multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_churn, args=(pg_url, "hot", f"p{i}", ttl, 2.5, out)) for i in range(6)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(10)
    by_epoch = defaultdict(list)
    for holder, seen in results.items():
        for kind, epoch, expires in seen:
            by_epoch[epoch].append((holder, kind, expires))
    for e, uses in by_epoch.items():
        assert len({h for h, _, _ in uses}) == 1, f"epoch {e} was held by two processes"
    # Grants in the database's time order (a grant's time is its first expiry less the TTL).
    granted = sorted((min(x for _, kind, x in uses if kind == "grant") - timedelta(seconds=ttl), e)
                     for e, uses in by_epoch.items())  # fmt: skip
    assert len(granted) >= 10, "the contenders should have passed the lease around many times"
    assert len({h for uses in by_epoch.values() for h, _, _ in uses}) > 1
    assert [e for _, e in granted] == sorted(by_epoch), "epochs must rise with every grant"
    for (_, e), (next_start, later) in zip(granted, granted[1:]):
        if not any(kind == "release" for _, kind, _ in by_epoch[e]):  # it ran out: then the next grant
            last_end = max(x for _, kind, x in by_epoch[e])
            assert next_start >= last_end, f"epoch {later} was granted while epoch {e} was live"


NEW_HOLDER = """
import json, sys, time
from mist.cluster.sqlleases import PgLeaseStore
store = PgLeaseStore(sys.argv[1])
while (lease := store.acquire("shard/7", "scheduler-b", 30.0)) is None:
    time.sleep(0.02)
print(json.dumps({"epoch": lease.epoch, "at": time.monotonic()}))
"""


def test_a_partitioned_holder_stops_and_its_old_epoch_is_refused_after_another_process_takes_over(pg_url, store):
    proxy = CuttableProxy()
    cut_off = PgLeaseStore(engine=connect(pg_url.replace("@127.0.0.1/", f"@127.0.0.1:{proxy.port}/"), timeout_s=1))
    worker = Fence()
    try:
        a = LeaseKeeper(cut_off, "scheduler-a", ttl_s=1.0)
        epoch = a.acquire("shard/7").epoch
        assert a.valid("shard/7")
        worker.check("shard/7", epoch)  # A places normally

        proxy.cut()  # A can no longer reach PostgreSQL; everything else can
        with pytest.raises(CoordinationUnavailable, match="could not be reached"):
            a.renew()
        assert a.valid("shard/7")  # still within the lease it had
        b = subprocess.Popen([sys.executable, "-c", NEW_HOLDER, pg_url], stdout=subprocess.PIPE, text=True)
        while a.valid("shard/7"):
            time.sleep(0.005)
        a_stopped = time.monotonic()
        out, _ = b.communicate(timeout=30)
        taken = json.loads(out)

        assert taken["epoch"] > epoch
        assert a_stopped <= taken["at"], "A must stop acting before B can take the lease"
        worker.learn(store.floors(["shard/7"]))  # the worker's periodic read, before B sent anything
        with pytest.raises(StaleEpoch, match=f"epoch {epoch} of lease 'shard/7'"):
            worker.check("shard/7", epoch)
        worker.check("shard/7", taken["epoch"])  # B's orders go through

        proxy.heal()
        assert a.renew() == ["shard/7"]  # back in touch, A learns it has lost the lease
        assert store.current("shard/7").holder == "scheduler-b"
    finally:
        cut_off.close()
        proxy.close()


def test_processes_starting_at_once_on_an_empty_database_create_the_cluster_tables_once(fresh_pg_url):
    """`mist up --db` processes of a new cluster started together: none fails on another's
    CREATE TABLE (they take turns under the schema lock)."""
    code = ("import sys, time; from mist.cluster.pg import connect\n"
            "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all imported: go together\n"
            "connect(sys.argv[1]).dispose()")
    go = str(time.time() + 4.0)
    procs = [subprocess.Popen([sys.executable, "-c", code, fresh_pg_url, go], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err[-800:] for _, err in outs]
    engine = connect(fresh_pg_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM cluster_leases").scalar_one() == 0
    engine.dispose()
