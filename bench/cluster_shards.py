"""Several schedulers sharing the shards (`mist up --db --cluster-listen`): invocations per second
with 1 and 2 scheduler processes, the time a graceful shard move takes, and failover after a
scheduler is killed with SIGKILL — against the shard lease TTL.

Every process on this machine's loopback: scheduler processes on one PostgreSQL database (a
schema of its own, dropped at the end), one worker agent joined to all of them. Functions are
chosen by their shard so that each scheduler owns one (`own-A`, `own-B`).

1. Throughput (`wrk`, trivial function, after a warm-up): 1 scheduler, `-c{connections}`; then 2
   schedulers, each sent `-c{connections/2}` for a function it owns (no forwarding), and crossed
   (each sent the other's function: every call forwarded once). All processes, the worker's
   sandboxes and wrk share the machine's CPUs: compare the rows of one run.
2. Graceful move (`--trials` times, alternating direction): the map is changed by
   compare-and-set to give one shard to the other scheduler (what the shard manager writes);
   measured from the write to the new owner holding the shard's lease (cluster_leases polled
   every 5 ms). Expected: up to a step (TTL/4) for the old owner to see it and release, then up
   to a step for the new one to acquire.
3. Split and merge (`--trials` times): a shard of A is split at its midpoint by compare-and-set
   (as the manager splits a hot one); measured from the write to A holding the new half's
   lease; then merged back, measured to the new half's lease being released. Expected: up to a
   step each (the owner acquires or releases at its next step).
4. Failover (`--trials` times): a third scheduler C joins and gets its share of shards; it is
   killed with SIGKILL; measured from the kill to every one of C's shards being held by a live
   scheduler. Expected: about one TTL (its leases and its directory row run out), plus up to a
   step for the manager to reassign and one for the owner to acquire.

    .venv/bin/python bench/cluster_shards.py [--ttl 2 --trials 5 --seconds 6 --connections 16]
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from _common import REPO, MistServer, Report, arg_parser, client, deploy, free_port, mist_command, run_wrk, \
    summary

from mist.core.sharding import Merge, Move, ShardMap, Split  # noqa: E402  (after _common puts the repo on the path)
from mist.testing.worker import remove_worker_leftovers  # noqa: E402

PG = "postgresql+psycopg://postgres@127.0.0.1/test"
SOURCE = "def handler(event, context):\n    return {'ok': True}\n"


class Cluster:
    def __init__(self, url: str, ttl: float, token: str, key_file: Path) -> None:
        self.url, self.ttl, self.token, self.key_file = url, ttl, token, key_file
        self.engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        self.servers: list[MistServer] = []

    def start(self) -> MistServer:
        port = free_port()
        srv = MistServer(["--db", self.url, "--secrets-key-file", str(self.key_file), "--cluster-listen",
                          f"127.0.0.1:{port}", "--cluster-token", self.token, "--no-embedded-worker",
                          "--shard-lease-ttl", str(self.ttl), "--shard-balance", "0", "--worker-timeout", "3"])
        srv.start()
        srv.cluster_url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        self.servers.append(srv)
        return srv

    def holder(self, srv: MistServer, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.engine.connect() as conn:
                for (h,) in conn.execute(sa.text("SELECT holder FROM cluster_schedulers")):
                    if f":{srv.pid}:" in h:
                        return h
            time.sleep(0.05)
        raise RuntimeError(f"scheduler pid {srv.pid} never reported")

    def map(self) -> ShardMap:
        with self.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT version, body FROM cluster_shard_maps WHERE name = 'scheduler'")).one()
        return ShardMap.from_json(row.body, row.version)

    def cas(self, smap: ShardMap, new: ShardMap) -> bool:
        with self.engine.connect() as conn:
            got = conn.execute(sa.text("UPDATE cluster_shard_maps SET version = version + 1, body = CAST(:b AS json) "
                                       "WHERE name = 'scheduler' AND version = :v RETURNING version"),
                               {"b": json.dumps(new.to_json()), "v": smap.version}).first()
        return got is not None

    def lease_holders(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT name, holder FROM cluster_leases WHERE expires_at > now() "
                                        "AND name LIKE 'shard/%'")).all()
        return {name: holder for name, holder in rows}

    def wait(self, what: str, check, timeout: float = 30, every: float = 0.005):
        deadline = time.monotonic() + timeout
        while not (got := check()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not within {timeout} s")
            time.sleep(every)
        return got


def owned_by(smap: ShardMap, holder: str, taken: set[str]) -> str:
    return next(f"f{i}" for i in range(10_000) if smap.route(f"f{i}").owner == holder and f"f{i}" not in taken)


def main() -> None:
    ap = arg_parser(__doc__.splitlines()[0])
    ap.add_argument("--ttl", type=float, default=2.0)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    schema = f"bench_shards_{secrets.token_hex(4)}"
    admin = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = f"{PG}?options=-csearch_path%3D{schema}"
    token = secrets.token_hex(16)
    key_file = Path(tempfile.mkdtemp(prefix="mist-bench-key-")) / "secrets.key"
    key_file.write_bytes(os.urandom(32))
    key_file.chmod(0o600)
    cl = Cluster(url, args.ttl, token, key_file)
    worker_dir = Path(tempfile.mkdtemp(prefix="mist-bench-worker-"))
    worker = None
    rep = Report(f"sharded scheduler: 1 and 2 scheduler processes, moves and failover (lease TTL {args.ttl:g} s)")
    try:
        a = cl.start()
        key = (a.data_dir / "data" / "admin.key").read_text().strip()
        os.environ["MIST_API_KEY"] = key
        b = cl.start()
        ha, hb = cl.holder(a), cl.holder(b)
        cl.wait("the map is shared", lambda: sorted(len(v) for v in cl.map().owned().values()) == [8, 8], every=0.05)
        with open(worker_dir / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                [*mist_command(), "worker", "--join", f"{a.cluster_url},{b.cluster_url}",  # type: ignore[attr-defined]
                 "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(worker_dir / "data"), "--prewarm", "2"],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "MIST_CLUSTER_TOKEN": token})
        smap = cl.map()
        fa = owned_by(smap, ha, set())
        fb = owned_by(smap, hb, {fa})
        with client(a.url) as c:
            for fn in (fa, fb):
                deploy(c, fn, {"main.py": SOURCE})
        for srv in (a, b):
            with client(srv.url) as c:
                cl.wait("the worker is seen", lambda c=c: c.get("/v1/statistics").json()["Scheduler"]["healthy"] == 1,
                        every=0.1)
                for fn in (fa, fb):
                    for _ in range(20):
                        c.post(f"/v1/functions/{fn}/invocations", json={}).raise_for_status()

        def wrk(pairs: list[tuple[MistServer, str]], conns: int) -> tuple[float, int]:
            import concurrent.futures as cf

            def one(p: tuple[MistServer, str]) -> dict:
                return run_wrk(f"{p[0].url}/v1/functions/{p[1]}/invocations", connections=conns,
                               duration_s=args.seconds)

            with cf.ThreadPoolExecutor(len(pairs)) as pool:
                runs = list(pool.map(one, pairs))
            return sum(r["requests_per_s"] for r in runs), sum(r["errors"]["status"] for r in runs)

        half = max(1, args.connections // 2)
        run_wrk(f"{a.url}/v1/functions/{fa}/invocations", connections=args.connections, duration_s=2)  # warm-up
        rates = {}
        # then 1 scheduler: B stopped (SIGTERM: it releases its leases and leaves), A takes every shard
        rates["2 schedulers, each its own function"] = wrk([(a, fa), (b, fb)], half)
        rates["2 schedulers, crossed (every call forwarded)"] = wrk([(a, fb), (b, fa)], half)
        b.stop()
        cl.servers.remove(b)
        cl.wait("A owns every shard", lambda: set(cl.lease_holders().values()) == {ha} and len(cl.lease_holders()) == 16,
                every=0.05)
        rates["1 scheduler"] = wrk([(a, fa)], args.connections)
        for label in ("1 scheduler", "2 schedulers, each its own function", "2 schedulers, crossed (every call forwarded)"):
            r, errors = rates[label]
            rep.row(f"wrk, {label}", f"{r:.0f} inv/s", f"{args.connections} connections in all; non-2xx {errors}")
        # graceful moves between A and a new B
        b = cl.start()
        hb = cl.holder(b)
        cl.wait("the map is shared again", lambda: sorted(len(v) for v in cl.map().owned().values()) == [8, 8],
                every=0.05)
        cl.wait("B holds its shards", lambda: list(cl.lease_holders().values()).count(hb) == 8, every=0.05)
        moves = []
        for t in range(args.trials):
            smap = cl.map()
            frm, to = (ha, hb) if t % 2 == 0 else (hb, ha)
            start = smap.starts[smap.owned()[frm][0]]
            name = f"shard/{start}"
            written = time.monotonic()
            assert cl.cas(smap, smap.apply([Move(start, to)]))
            cl.wait("the new owner holds the lease", lambda: cl.lease_holders().get(name) == to)
            moves.append((time.monotonic() - written) * 1000)
            time.sleep(0.3)
        m = summary(moves)
        rep.row("graceful move: map written -> new owner holds the lease",
                f"p50 {m['p50']:.0f} ms, max {max(moves):.0f} ms",
                f"{args.trials} moves; TTL {args.ttl:g} s, steps every {args.ttl / 4:g} s")
        # a live split and merge back (what the shard manager writes for a hot shard, then cold halves)
        splits, merges = [], []
        for t in range(args.trials):
            smap = cl.map()
            i = smap.owned()[ha][t % 8]
            start, end = smap.starts[i], smap.end(i)
            at = start + (end - start) // 2
            written = time.monotonic()
            assert cl.cas(smap, smap.apply([Split(start, at)]))
            cl.wait("the owner holds the new half's lease", lambda: cl.lease_holders().get(f"shard/{at}") == ha)
            splits.append((time.monotonic() - written) * 1000)
            smap = cl.map()
            written = time.monotonic()
            assert cl.cas(smap, smap.apply([Merge(start, ha)]))
            cl.wait("the right half's lease released", lambda: f"shard/{at}" not in cl.lease_holders())
            merges.append((time.monotonic() - written) * 1000)
            time.sleep(0.3)
        for label, ms in (("split: map written -> the owner holds the new half's lease", splits),
                          ("merge: map written -> the absorbed lease released", merges)):
            rep.row(label, f"p50 {summary(ms)['p50']:.0f} ms, max {max(ms):.0f} ms",
                    f"{args.trials} trials; steps every {args.ttl / 4:g} s")
        # failover after kill -9 of a third scheduler
        fails = []
        for _ in range(args.trials):
            c_srv = cl.start()
            hc = cl.holder(c_srv)
            cl.wait("C gets shards", lambda: hc in cl.map().owners, every=0.05)
            mine = {f"shard/{cl.map().starts[i]}" for i in cl.map().owned()[hc]}
            cl.wait("C holds its shards", lambda: all(cl.lease_holders().get(n) == hc for n in mine), every=0.05)
            os.kill(c_srv.pid, signal.SIGKILL)
            killed = time.monotonic()

            def taken() -> bool:
                held = cl.lease_holders()
                return all(held.get(n) in (ha, hb) for n in mine)

            cl.wait("C's shards taken over", taken, timeout=10 * args.ttl)
            fails.append(time.monotonic() - killed)
            c_srv.stop()
            cl.servers.remove(c_srv)
            cl.wait("C is gone from the map", lambda: hc not in cl.map().owners, every=0.05)
        f = summary([x * 1000 for x in fails])
        rep.row("failover: kill -9 -> its shards held by the others", f"p50 {f['p50'] / 1000:.2f} s, max {max(fails):.2f} s",
                f"{args.trials} kills; lease TTL {args.ttl:g} s")
        rep.data.update(rates={k: v[0] for k, v in rates.items()}, moves_ms=moves, splits_ms=splits, merges_ms=merges,
                        failover_s=fails, ttl_s=args.ttl)
        rep.notes.append("every process (2-3 schedulers, a worker agent and its sandboxes, wrk, PostgreSQL) shares "
                         "this machine's CPUs (2 vCPU, shared with other sessions): compare rows of one run")
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            remove_worker_leftovers(worker_dir / "data")
        for srv in cl.servers:
            srv.stop()
        cl.engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
    rep.print(as_json=args.json)


if __name__ == "__main__":
    main()
