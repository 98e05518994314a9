"""Aggregate scheduling rate with 1, 2 and 4 scheduler processes (`mist up --role scheduler`):
invocations placed and run per second, end to end from the scheduler's cluster API.

For each N, a fresh PostgreSQL schema and: one `mist up --role gateway` (deploys; makes the
admin key), N `mist up --role scheduler --no-embedded-worker`, one worker agent joined to all of
them, every process on this machine's loopback. Once the shard manager has shared the 16 shards,
one function per scheduler is deployed among those it owns, and `wrk` POSTs that function's
invocation order (mist/cluster/wire.py, what a gateway forwards) to each scheduler's
`POST /v1/cluster/place` — all N at once, `--connections` in all — for `--seconds` after a
warm-up. Each call is one placement decision and the whole path behind it: the order decoded,
`where()` (this scheduler holds the shard's lease), `InstanceTable.choose`, the order sent to the
agent, the sandbox's call, the result back. The gateway is out of the loop (its own cost — the
public API, records, metering — is what `bench/cluster_shards.py` and `bench/cluster_e2e.py`
include), so the figure is the schedulers' and the worker's.

Also measured per row: how busy the machine's CPUs were (/proc/stat) and the CPU the scheduler
processes and the worker agent used (their /proc/PID/stat), which says what bounds the figure.
A row through the gateway's public API (1 scheduler) is there for comparison.

    .venv/bin/python bench/cluster_roles.py [--seconds 8 --connections 16 --processes 1,2,4]
"""

from __future__ import annotations

import os
import resource
import secrets
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from _common import BENCH_DIR, REPO, MistServer, Report, arg_parser, children_of, client, deploy, free_port, \
    mist_command, run_wrk, terminate

from mist.cluster import wire  # noqa: E402  (after _common puts the repo on the path)
from mist.core.sharding import ShardMap  # noqa: E402
from mist.testing.worker import remove_worker_leftovers  # noqa: E402
from mist.worker.types import SandboxSpec  # noqa: E402

PG = "postgresql+psycopg://postgres@127.0.0.1/test"
SOURCE = "def handler(event, context):\n    return {'ok': True}\n"
TTL = 2.0


def cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used; 0 once it is gone."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (float(parts[11]) + float(parts[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of a process and each of its descendants (the worker agent: its zygote, sandboxes)."""
    return {p: cpu_of(p) for p in children_of(pid)}


def used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(t - before.get(p, 0.0) for p, t in after.items())


def children_cpu() -> float:
    """CPU seconds of the children this process has waited for (the wrk runs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Cluster:
    def __init__(self, n: int, token: str, key_file: Path) -> None:
        self.n, self.token = n, token
        self.schema = f"bench_roles_{secrets.token_hex(4)}"
        self.admin = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {self.schema}")
        self.url = f"{PG}?options=-csearch_path%3D{self.schema}"
        self.engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        common = ["--db", self.url, "--secrets-key-file", str(key_file), "--cluster-token", token,
                  "--shard-lease-ttl", str(TTL)]
        self.gateway = MistServer(["--role", "gateway", *common]).start()  # first: it makes the admin key
        self.schedulers = [MistServer(["--role", "scheduler", *common, "--cluster-listen", f"127.0.0.1:{free_port()}",
                                       "--shard-balance", "0", "--worker-timeout", "3"]).start() for _ in range(n)]
        self.worker_dir = Path(tempfile.mkdtemp(prefix="mist-bench-worker-"))
        self.worker_log = open(self.worker_dir / "worker.log", "wb")
        self.worker = subprocess.Popen(
            [*mist_command(), "up", "--role", "worker", "--join", ",".join(s.url for s in self.schedulers),
             "--cluster-listen", f"127.0.0.1:{free_port()}", "--data-dir", str(self.worker_dir / "data"),
             "--prewarm", "2"],
            stdout=self.worker_log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "MIST_CLUSTER_TOKEN": token})

    def wait(self, what: str, check, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while not (got := check()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not within {timeout:g} s")
            time.sleep(0.1)
        return got

    def holders(self) -> dict[str, str]:
        """cluster API URL -> holder, for the live schedulers."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT holder, address FROM cluster_schedulers")).all()
        return {address: holder for holder, address in rows}

    def map(self) -> ShardMap | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT version, body FROM cluster_shard_maps WHERE name = 'scheduler'")).first()
        return ShardMap.from_json(row.body, row.version) if row else None

    def shared(self) -> bool:
        smap = self.map()
        return smap is not None and len(set(smap.owners)) == self.n and \
            max(len(v) for v in smap.owned().values()) - min(len(v) for v in smap.owned().values()) <= 1

    def stop(self) -> None:
        terminate(self.worker)
        self.worker_log.close()
        remove_worker_leftovers(self.worker_dir / "data")
        for s in [*self.schedulers, self.gateway]:
            s.stop()
        self.engine.dispose()
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {self.schema} CASCADE")
        self.admin.dispose()


def order_for(c, name: str) -> bytes:
    latest = c.get(f"/v1/functions/{name}").json()["latest"]
    spec = SandboxSpec(name, latest["version"], Path("/code") / latest["code_sha256"], latest["handler"],
                       concurrency=8)
    return wire.encode_order(wire.Order("", 0, "bench-order", spec), b"{}")


def place_load(cl: Cluster, orders: dict[str, Path], connections: int, seconds: float) -> tuple[dict, dict]:
    """wrk on every scheduler at once; per scheduler URL its wrk result, and the CPU figures."""
    results: dict[str, dict] = {}
    each = max(1, connections // len(orders))

    def one(url: str, order: Path) -> None:
        results[url] = run_wrk(url + "/v1/cluster/place", connections=each, duration_s=seconds,
                               script=BENCH_DIR / "wrk_place.lua",
                               env={"MIST_ORDER_FILE": str(order), "MIST_CLUSTER_TOKEN": cl.token})

    pids = [s.pid for s in cl.schedulers]
    busy0, total0 = cpu_busy()
    sched0, worker0, wrk0, t0 = sum(cpu_of(p) for p in pids), tree_cpu(cl.worker.pid), children_cpu(), time.monotonic()
    threads = [threading.Thread(target=one, args=item) for item in orders.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    busy1, total1 = cpu_busy()
    span = time.monotonic() - t0
    cpu = {"machine_busy": (busy1 - busy0) / (total1 - total0),
           "schedulers_cores": (sum(cpu_of(p) for p in pids) - sched0) / span,
           "worker_cores": used(worker0, tree_cpu(cl.worker.pid)) / span,  # the agent, its zygote and sandboxes
           "wrk_cores": (children_cpu() - wrk0) / span}
    return results, cpu


def main() -> None:
    ap = arg_parser(__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--processes", default="1,2,4")
    args = ap.parse_args()
    token = secrets.token_hex(16)
    key_file = Path(tempfile.mkdtemp(prefix="mist-bench-key-")) / "secrets.key"
    key_file.write_bytes(os.urandom(32))
    key_file.chmod(0o600)
    rep = Report(f"aggregate scheduling rate: 1 / 2 / 4 scheduler processes (mist up --role scheduler), "
                 f"wrk -c{args.connections} in all on their cluster APIs")
    rates: dict[int, float] = {}
    for n in (int(x) for x in args.processes.split(",")):
        cl = Cluster(n, token, key_file)
        try:
            cl.wait("the shards shared by every scheduler", cl.shared)
            smap = cl.map()
            assert smap is not None
            holders = cl.holders()
            orders: dict[str, Path] = {}
            with client(cl.gateway.url) as c:
                for s in cl.schedulers:
                    name = next(f"f{i}" for i in range(10_000) if smap.route(f"f{i}").owner == holders[s.url])
                    deploy(c, name, {"main.py": SOURCE}, {"concurrency": 8})
                    cl.wait(f"{name} runs through the gateway",
                            lambda: c.post(f"/v1/functions/{name}/invocations", json={}).status_code == 200)
                    order = Path(cl.worker_dir) / f"{name}.order"
                    order.write_bytes(order_for(c, name))
                    orders[s.url] = order
                place_load(cl, orders, args.connections, 2.0)  # warm-up: instances started, connections open
                results, cpu = place_load(cl, orders, args.connections, args.seconds)
                total = sum(r["requests_per_s"] for r in results.values())
                errors = sum(r["errors"]["status"] + r["errors"]["timeout"] for r in results.values())
                rates[n] = total
                per = ", ".join(f"{r['requests_per_s']:.0f}" for r in results.values())
                rep.row(f"{n} scheduler{'s' * (n > 1)}: placed and run, in all", f"{total:.0f} inv/s",
                        f"per process {per}; p50 {max(r['latency_us']['p50'] for r in results.values()) / 1000:.1f} "
                        f"ms (worst); non-2xx/timeouts {errors}")
                rep.row(f"{n} scheduler{'s' * (n > 1)}: CPU", f"machine {cpu['machine_busy']:.0%} busy",
                        f"cores: schedulers {cpu['schedulers_cores']:.2f}, worker agent + sandboxes "
                        f"{cpu['worker_cores']:.2f}, wrk {cpu['wrk_cores']:.2f} (of 2; the rest: PostgreSQL, the "
                        "gateway's follow loops, other sessions)")
                per_call = cpu["schedulers_cores"] / total * 1000  # scheduler CPU ms per placement, all included
                rep.row(f"{n} scheduler{'s' * (n > 1)}: scheduler CPU per placement", f"{per_call:.3f} ms",
                        f"one scheduler on a core of its own: ~{1000 / per_call:,.0f} placements/s, if its "
                        "gateways and workers keep up")
                rep.data[f"n{n}"] = {"results": results, "cpu": cpu, "scheduler_cpu_ms_per_placement": per_call}
                if n == 1:
                    name = next(iter(orders.values())).stem
                    w = run_wrk(f"{cl.gateway.url}/v1/functions/{name}/invocations", connections=args.connections,
                                duration_s=args.seconds)
                    rep.row("1 scheduler, through the gateway's public API", f"{w['requests_per_s']:.0f} inv/s",
                            f"p50 {w['latency_us']['p50'] / 1000:.1f} ms; the gateway's records and metering added")
                    rep.data["gateway"] = w
        finally:
            cl.stop()
    if 1 in rates:
        for n, r in rates.items():
            if n != 1:
                rep.row(f"{n} schedulers / 1 scheduler", f"{r / rates[1]:.2f}x", f"ideal {n}x on {n} machines")
    rep.data["load_average_at_end"] = os.getloadavg()
    rep.notes.append("every process shares this machine's 2 vCPUs (also shared with other sessions): the rows "
                     "are CPU-bound; compare rows of one run")
    rep.print(as_json=args.json)


if __name__ == "__main__":
    main()
