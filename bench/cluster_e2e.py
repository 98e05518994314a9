"""A cluster end to end: invocations per second through one control plane with 0 (its embedded
worker), 1 and 2 worker agents, the cost of the hop to a worker, and failover after a kill -9.

One `mist up --cluster-listen` and up to two `mist worker --join` processes on this machine's
loopback (the test suite runs the same across network namespaces: tests/e2e/test_cluster.py).
The coordination stores are in memory (no --cluster-db): a lease renewal costs nothing here.

1. Throughput: `wrk -c{connections}` POSTs to a trivial function for `--seconds`, after a warm-up,
   with the embedded worker (no agent joined: the single-machine path), then 1, then 2 agents.
   Every process shares this machine's CPUs, so more agents cannot mean more throughput here:
   the figures show what the extra hop costs (control plane -> agent over HTTP/1.1 keep-alive)
   and that the load spreads; on separate machines the sandboxes' work leaves the control plane.
2. Latency of one call at a time (p50/p99 over `--calls`), embedded and through an agent: the
   difference is the hop (the floor: a loopback HTTP keep-alive round trip, ~25 us, findings.md).
3. Failover: 4 client threads call in a loop; one of the 2 agents is killed with SIGKILL.
   Measured: the calls that failed (WorkerLost: only those it was running), the time from the
   kill to the last failed call (new calls go to the other agent once a connection is refused),
   and to the control plane declaring it lost (`--worker-timeout`; heartbeats every fifth).

    .venv/bin/python bench/cluster_e2e.py [--seconds 8 --connections 16 --calls 300 --worker-timeout 3]
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from _common import REPO, MistServer, Report, arg_parser, client, deploy, free_port, mist_command, run_wrk, \
    statistics, summary, terminate

from mist.testing.worker import remove_worker_leftovers  # noqa: E402  (after _common puts the repo on the path)

FUNCTION = "ping"
SOURCE = "def handler(event, context):\n    return {'ok': True}\n"


class Agent:
    def __init__(self, join: str, token: str) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mist-bench-worker-"))
        self.log = open(self.dir / "worker.log", "wb")
        self.proc = subprocess.Popen(
            [*mist_command(), "worker", "--join", join, "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", str(self.dir / "data"), "--prewarm", "2"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "MIST_CLUSTER_TOKEN": token})

    def stop(self) -> None:
        terminate(self.proc)
        self.log.close()
        remove_worker_leftovers(self.dir / "data")  # the killed one's cgroups
        shutil.rmtree(self.dir, ignore_errors=True)


def scheduler_stats(c) -> dict:
    return statistics(c).get("Scheduler", {})


def wait_workers(c, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while scheduler_stats(c).get("healthy") != n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{n} workers did not join: {scheduler_stats(c)}")
        time.sleep(0.1)


def sequential(c, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = c.post(f"/v1/functions/{FUNCTION}/invocations", json={})
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text
    return out


def failover(url: str, c, victim: Agent, timeout_s: float) -> dict:
    stop = threading.Event()
    calls: list[tuple[float, float, int, str]] = []  # (start, end, status, code)
    lock = threading.Lock()

    def loop() -> None:
        with client(url) as own:
            while not stop.is_set():
                t = time.monotonic()
                r = own.post(f"/v1/functions/{FUNCTION}/invocations", json={})
                code = r.json().get("error", {}).get("code", "") if r.status_code != 200 else ""
                with lock:
                    calls.append((t, time.monotonic(), r.status_code, code))

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    lost_before = scheduler_stats(c).get("workers_lost", 0)
    victim.proc.kill()
    killed = time.monotonic()
    declared = None
    while time.monotonic() < killed + timeout_s + 10:
        if scheduler_stats(c).get("workers_lost", 0) > lost_before:
            declared = time.monotonic() - killed
            break
        time.sleep(0.05)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    failed = [c for c in calls if c[2] != 200]
    after = [c for c in calls if c[0] > killed]
    return {"calls": len(calls), "failed": len(failed), "codes": sorted({c[3] for c in failed}),
            "failed_started_before_kill": sum(1 for c in failed if c[0] <= killed),
            "last_failure_after_kill_s": max((c[1] - killed for c in failed), default=0.0),
            "declared_lost_after_s": declared, "calls_started_after_kill": len(after),
            "ok_started_after_kill": sum(1 for c in after if c[2] == 200)}


def main() -> None:
    ap = arg_parser(__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--worker-timeout", type=float, default=3.0)
    args = ap.parse_args()
    token = secrets.token_hex(16)
    cluster_port = free_port()
    join = f"http://127.0.0.1:{cluster_port}"
    os.environ["MIST_CLUSTER_TOKEN"] = token
    rep = Report("cluster end to end: one control plane, 0 / 1 / 2 worker agents")
    agents: list[Agent] = []
    with MistServer(["--cluster-listen", f"127.0.0.1:{cluster_port}", "--worker-timeout", str(args.worker_timeout),
                     *args.mist_arg]) as srv, client(srv.url) as c:
        deploy(c, FUNCTION, {"main.py": SOURCE})
        rates, latencies = {}, {}
        for n in (0, 1, 2):
            while len(agents) < n:
                agents.append(Agent(join, token))
            wait_workers(c, n) if n else None
            sequential(c, 50)  # instances started, connections open
            latencies[n] = summary(sequential(c, args.calls))
            run_wrk(srv.url + f"/v1/functions/{FUNCTION}/invocations", connections=args.connections, duration_s=2)
            w = run_wrk(srv.url + f"/v1/functions/{FUNCTION}/invocations", connections=args.connections,
                        duration_s=args.seconds)
            rates[n] = w
            label = "embedded worker (no agent)" if n == 0 else f"{n} agent{'s' * (n > 1)}"
            rep.row(f"wrk -c{args.connections}, {label}", f"{w['requests_per_s']:.0f} inv/s",
                    f"p50 {w['latency_us']['p50'] / 1000:.2f} / p99 {w['latency_us']['p99'] / 1000:.2f} ms; "
                    f"non-2xx {w['errors']['status']}")
            rep.row(f"one call at a time, {label}", f"p50 {latencies[n]['p50']:.2f} ms",
                    f"p99 {latencies[n]['p99']:.2f} ms")
        hop = latencies[1]["p50"] - latencies[0]["p50"]
        rep.row("the hop to an agent (p50, 1 agent - embedded)", f"{hop:.2f} ms",
                "floor: a loopback HTTP keep-alive round trip, ~0.025 ms (findings.md)")
        rep.data["scheduler"] = scheduler_stats(c)
        f = failover(srv.url, c, agents[0], args.worker_timeout)
        rep.row("failover: calls failed when an agent was killed", f"{f['failed']} of {f['calls']}",
                f"codes {f['codes']}; the calls sent to it before its process was gone (4 clients)")
        rep.row("failover: last failure answered, after the kill", f"{f['last_failure_after_kill_s'] * 1000:.0f} ms",
                "after that every call went to the other agent")
        declared = f["declared_lost_after_s"]
        rep.row("failover: declared lost after the kill", "never" if declared is None else f"{declared:.2f} s",
                f"--worker-timeout {args.worker_timeout:g} s, heartbeats every {args.worker_timeout / 5:g} s, "
                f"membership read every {args.worker_timeout / 10:g} s")
        rep.row("failover: calls started after the kill that succeeded",
                f"{f['ok_started_after_kill']} of {f['calls_started_after_kill']}")
        rep.data.update(rates={str(k): v for k, v in rates.items()}, latencies=latencies, failover=f)
        rep.notes.append("every process shares this machine's CPUs (2 vCPU, shared with other sessions): "
                         "compare the rows of one run, not with other machines")
        for a in agents:
            a.stop()
    rep.print(as_json=args.json)


if __name__ == "__main__":
    main()
