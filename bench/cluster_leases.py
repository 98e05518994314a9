"""Fenced leases on PostgreSQL: operation rates, and how long a lease takes to move when its
holder stops.

Needs the PostgreSQL of this machine (postgresql+psycopg://postgres@127.0.0.1/test, `--db`); the
benchmark works in a schema of its own, dropped at the end. No mist server is started.

1. Rates, per operation, with 1 and 4 threads (`--threads`) for `--seconds` each, beside the
   floor measured in the same run: `SELECT 1` on the same engine (one autocommit round trip,
   what any one-statement operation costs at least):
   - acquire of a free name (the INSERT path), acquire of a name someone else holds (refused),
     renew of a held lease, `renew_all` of a holder's 16 leases (a scheduler's renewal), and
     `floors()` of 64 names (a worker's refresh);
   - beside renew, the same renew with `synchronous_commit=off`: not safe for leases (a crash
     of PostgreSQL could forget a granted epoch and grant it again), measured only to show that
     a write's cost is the WAL flush to disk.
2. Membership: a heartbeat (load, warm set, 20 instances) and the snapshot a scheduler reads
   of `--workers` workers.
3. Failover: a holder process acquires "bench/failover" (TTL `--ttl`, renewing every TTL/3) and
   is then stopped at a random point of its renew cycle; a contender in this process tries to
   acquire every `--poll-ms`. Measured: from the stop to the contender's grant, `--trials` times
   for each way of stopping:
   - kill -9 (a crashed scheduler), SIGSTOP (a paused or partitioned one: it can act no more
     than a stopped process, and it is what the fencing test covers), SIGTERM with a clean
     release (a scheduler shutting down).
   Expected: a lost holder's lease moves after between 2/3 TTL and TTL (the time left since its
   last renewal) plus up to one poll; a released one within one poll.

    .venv/bin/python bench/cluster_leases.py [--ttl 1.0 --poll-ms 50 --trials 10 --seconds 3]
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time

import sqlalchemy as sa
from _common import Report, arg_parser, summary

from mist.cluster.leases import Lease
from mist.cluster.membership import Capacity, HealthPolicy, Heartbeat, InstanceReport, Load, Warm, WorkerInfo, assess
from mist.cluster.pg import connect
from mist.cluster.sqlleases import PgLeaseStore
from mist.cluster.sqlmembership import PgMembership

HOLDER = """
import signal, sys, time
from mist.cluster.leases import LeaseKeeper
from mist.cluster.sqlleases import PgLeaseStore
from mist.cluster.sqlmembership import PgMembership
url, ttl = sys.argv[1], float(sys.argv[2])
keeper = LeaseKeeper(PgLeaseStore(url), "holder-%d" % time.time_ns(), ttl)
def leave(*_):
    keeper.release("bench/failover")
    sys.exit(0)
signal.signal(signal.SIGTERM, leave)
while not keeper.acquire("bench/failover"):
    time.sleep(0.01)
print("held", keeper.epoch("bench/failover"), flush=True)
while True:
    time.sleep(ttl / 3)
    if keeper.renew():
        sys.exit("lost the lease")
"""


def timed(seconds: float, threads: int, op) -> tuple[float, list[float]]:  # noqa: ANN001
    """Run op(thread, i) on `threads` threads for `seconds`: (ops/s, latencies in ms)."""
    lat: list[list[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    stop = time.monotonic() + seconds + 0.2

    def run(t: int) -> None:
        start.wait()
        i = 0
        while (t0 := time.monotonic()) < stop:
            op(t, i)
            lat[t].append((time.monotonic() - t0) * 1000)
            i += 1

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    began = time.monotonic()
    for t in ts:
        t.join()
    flat = [x for xs in lat for x in xs]
    return len(flat) / (time.monotonic() - began), flat


def rates(report: Report, store: PgLeaseStore, no_flush: PgLeaseStore, threads: int, seconds: float) -> None:
    ttl = 60.0
    held = [[store.acquire(f"renew/{t}/{i}", f"r{t}", ttl) for i in range(16)] for t in range(threads)]
    blocker = [store.acquire(f"held/{i}", "someone-else", ttl) for i in range(64)]
    names = [f"held/{i}" for i in range(64)]
    run = secrets.token_hex(3)

    def select1(t: int, i: int) -> None:
        with store.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1")).scalar()

    def acquire_free(t: int, i: int) -> None:
        assert store.acquire(f"free/{run}/{t}/{i}", f"a{t}", ttl) is not None

    def acquire_held(t: int, i: int) -> None:
        assert store.acquire(blocker[i % 64].name, f"a{t}", ttl) is None

    def renew(t: int, i: int) -> None:
        lease: Lease | None = store.renew(held[t][i % 16], ttl)
        assert lease is not None
        held[t][i % 16] = lease

    def renew_all(t: int, i: int) -> None:
        held[t] = store.renew_all(held[t], ttl)
        assert len(held[t]) == 16

    def renew_no_flush(t: int, i: int) -> None:
        assert no_flush.renew(held[t][i % 16], ttl) is not None

    def floors(t: int, i: int) -> None:
        assert len(store.floors(names)) == 64

    floor_rate = None
    for what, op in [("SELECT 1 (floor)", select1), ("acquire, free name", acquire_free),
                     ("acquire, held by another", acquire_held), ("renew", renew),
                     ("renew_all of 16 leases", renew_all),
                     ("renew, synchronous_commit=off *", renew_no_flush),
                     ("floors() of 64 names", floors)]:  # fmt: skip
        rate, lat = timed(seconds, threads, op)
        s = summary(lat)
        floor_rate = floor_rate or rate
        per = f" ({rate * 16:.0f} leases/s)" if op is renew_all else ""
        report.row(f"{what}, {threads} thread(s)", f"{rate:7.0f} ops/s{per}  p50 {s['p50']:.3f} / p99 {s['p99']:.3f} ms",
                   "" if op is select1 else f"{rate / floor_rate:.2f}x the floor")  # fmt: skip
        report.data[f"{what}/{threads}"] = {"ops_per_s": rate, **s}


def membership(report: Report, engine: sa.Engine, workers: int, seconds: float) -> None:
    """Heartbeats (each with 20 instances) and the snapshot a scheduler reads, `workers` rows."""
    members = PgMembership(engine=engine, timeout_s=3600)
    cap, warm = Capacity(8192, 4000, 64), Warm(frozenset({"c" * 64}), frozenset({"l" * 64}), frozenset())
    incs = [members.register(WorkerInfo(f"w{i}", f"10.0.{i // 250}.{i % 250}:7070", cap, warm)).incarnation
            for i in range(workers)]  # fmt: skip
    beat = Heartbeat(Load(1024, 500, 20, 7), tuple(InstanceReport(f"i{j}", f"fn{j}", 1, 128, 1) for j in range(20)), warm)
    rate, lat = timed(seconds, 1, lambda t, i: members.heartbeat(f"w{i % workers}", incs[i % workers], beat))
    s = summary(lat)
    report.row("heartbeat (20 instances)", f"{rate:7.0f} ops/s  p50 {s['p50']:.3f} / p99 {s['p99']:.3f} ms")
    policy = HealthPolicy()
    rate, lat = timed(seconds, 1, lambda t, i: assess(members.snapshot(), policy))
    s = summary(lat)
    report.row(f"snapshot of {workers} workers + assess", f"{rate:7.1f} ops/s  p50 {s['p50']:.3f} / p99 {s['p99']:.3f} ms")
    report.data["membership"] = {"workers": workers, "snapshot_ms": s}


def failover(report: Report, store: PgLeaseStore, url: str, how: str, ttl: float, poll_s: float, trials: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    times = []
    for trial in range(trials):
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, url, str(ttl)], stdout=subprocess.PIPE, text=True, env=env)
        assert holder.stdout is not None and holder.stdout.readline().startswith("held")
        time.sleep(ttl + random.uniform(0, ttl))  # stop it anywhere in its renew cycle
        stopped = time.monotonic()
        holder.send_signal({"kill -9": signal.SIGKILL, "SIGSTOP": signal.SIGSTOP, "release": signal.SIGTERM}[how])
        while (lease := store.acquire("bench/failover", f"contender-{trial}", ttl)) is None:
            time.sleep(poll_s)
        times.append(time.monotonic() - stopped)
        store.release(lease)
        holder.kill()
        holder.wait()
    s = summary([t * 1000 for t in times])
    bound = f"poll = {poll_s * 1000:.0f}" if how == "release" else f"TTL + poll = {(ttl + poll_s) * 1000:.0f}"
    report.row(f"failover after {how}, TTL {ttl:g} s, poll {poll_s * 1000:.0f} ms",
               f"p50 {s['p50']:.0f} / max {s['max']:.0f} ms (min {s['min']:.0f})", f"bound: {bound} ms")  # fmt: skip
    report.data[f"failover/{how}"] = {"ttl_s": ttl, "poll_s": poll_s, **s}
    return times


def main() -> None:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("--db", default="postgresql+psycopg://postgres@127.0.0.1/test")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--ttl", type=float, default=1.0)
    p.add_argument("--poll-ms", type=float, default=50.0)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--workers", type=int, default=200, help="worker rows for the membership figures")
    args = p.parse_args()

    schema = f"mist_bench_{os.getpid()}"
    admin = sa.create_engine(args.db, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = f"{args.db}?options=-csearch_path%3D{schema}"
    report = Report("fenced leases on PostgreSQL")
    report.notes.append("* not safe for leases (a PostgreSQL crash could forget a granted epoch); "
                        "shown only to measure what the WAL flush costs a write")  # fmt: skip
    store = PgLeaseStore(engine=connect(url))
    no_flush = PgLeaseStore(engine=connect(url.replace("?options=", "?options=-csynchronous_commit%3Doff%20")))
    try:
        for n in args.threads:
            rates(report, store, no_flush, n, args.seconds)
        membership(report, store.engine, args.workers, args.seconds)
        poll = args.poll_ms / 1000
        for how in ("kill -9", "SIGSTOP", "release"):
            times = failover(report, store, url, how, args.ttl, poll, args.trials)
            bound = (poll if how == "release" else args.ttl + poll) + 0.1
            report.check(f"failover after {how}: max (s)", max(times), f"<= {bound:.2f} s", max(times) <= bound)
    finally:
        store.close()
        no_flush.close()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
    report.print(args.json)


if __name__ == "__main__":
    main()
