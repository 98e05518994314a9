"""A cluster split by role, for real: two `mist up --role scheduler` and two `mist up --role gateway`
processes on one fresh PostgreSQL schema, and one `mist up --role worker` agent (loopback),
shard leases with a 2 s TTL.

What a user would notice: a function deployed and invoked through a gateway runs (the gateway
holds no shard: it forwards each invocation to the scheduler owning it, which places it on the
worker); each scheduler answers /healthz on its cluster API; one of two gateways killed with
SIGKILL under load leaves the other serving every request.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import secrets
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from mist.testing.worker import remove_worker_leftovers
from tests.e2e.conftest import MIST, REPO, Server, shared_secrets_key, start_server, write_function
from tests.e2e.test_cluster import stop
from tests.e2e.test_cluster_shards import call, deploy, until

pytestmark = pytest.mark.sandbox

TOKEN = "test-roles-token-" + secrets.token_hex(8)
TTL = 2.0


def _role(root: Path, name: str, role: str, pg_url: str, key_file: Path, *extra: str) -> Server:
    return start_server(root / name, "--role", role, "--db", pg_url, "--secrets-key-file", str(key_file),
                        "--cluster-token", TOKEN, "--shard-lease-ttl", str(TTL), *extra)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from tests.conftest import pg_schema

    root = tmp_path_factory.mktemp("roles")
    key_file = shared_secrets_key(root)
    started: list[Server] = []
    worker = None
    with pg_schema("mist_roles") as pg_url, cf.ThreadPoolExecutor(4) as pool:
        try:
            sched = ("--cluster-listen", "127.0.0.1:0", "--shard-balance", "0", "--worker-timeout", "3")
            schedulers = list(pool.map(lambda n: _role(root, n, "scheduler", pg_url, key_file, *sched), ("s1", "s2")))
            started += schedulers
            gateways = list(pool.map(lambda n: _role(root, n, "gateway", pg_url, key_file), ("g1", "g2")))
            started += gateways
            with open(root / "worker.log", "ab") as out:
                worker = subprocess.Popen(
                    [MIST, "up", "--role", "worker", "--join", ",".join(s.url for s in schedulers),
                     "--cluster-listen", "127.0.0.1:0", "--data-dir", str(root / "w"), "--prewarm", "1"],
                    stdout=out, stderr=out, cwd=REPO, env={**os.environ, "MIST_CLUSTER_TOKEN": TOKEN})  # fmt: skip
            admin = next(s for s in schedulers if (s.data_dir / "admin.key").exists()).admin_key
            for g in gateways:
                (g.data_dir / "admin.key").write_text(admin)
            src = write_function(root / "fn", {"main.py": (
                "import time\n"
                "def handler(event, context):\n"
                "    time.sleep(event.get('sleep', 0))\n"
                "    return {'n': event.get('n'), 'fn': context.function_name}\n")})  # fmt: skip
            names = [f"fn{i}" for i in range(6)]  # spread over the 16 shards: both schedulers own some
            for name in names:
                deploy(gateways[0], name, src)
            until("the worker serves through a gateway", lambda: call(gateways[0], names[0], 0).status_code == 200,
                  timeout=40, every=0.5)
            yield schedulers, gateways, names
        finally:
            if worker is not None:
                stop(worker)
                remove_worker_leftovers(root / "w")
            for s in started:
                s.stop()


def test_invocations_through_either_gateway_reach_their_shard_s_owner(cluster):
    schedulers, gateways, names = cluster
    jobs = [(g, name, n) for n in range(3) for g in gateways for name in names]
    with cf.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda j: call(*j), jobs))
    assert [r.status_code for r in answers] == [200] * len(jobs), [r.text for r in answers if r.status_code != 200]
    assert [(r.json()["fn"], r.json()["n"]) for r in answers] == [(name, n) for _, name, n in jobs]
    for g in gateways:
        routed = httpx.get(g.url + "/v1/statistics", headers=g.auth, timeout=10).json()["GatewayRouter"]
        assert routed["schedulers"] == 2 and routed["forwarded_out"] >= len(names) * 3  # none placed by a gateway
    # the functions were deployed through gateways[0], which unpacked the uploads to check them; the
    # other only forwarded their invocations: it never fetched nor unpacked their code
    code = gateways[1].data_dir / "code"
    assert not code.exists() or not [p for p in code.iterdir() if p.is_dir()]
    placed = 0
    for s in schedulers:  # no public API: the cluster API and its /healthz only
        assert httpx.get(s.url + "/healthz", timeout=10).status_code == 200
        assert httpx.get(s.url + "/v1/functions", headers=gateways[0].auth, timeout=10).status_code == 404
        stats = httpx.get(s.url + "/v1/cluster/statistics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert stats.status_code == 200 and {"Scheduler", "InvocationLog"} <= set(stats.json())  # the process's own
        placed += stats.json()["Scheduler"]["remote_invocations"]
    assert placed >= len(jobs)  # every call was placed by one of them


def test_one_of_two_gateways_killed_under_load_leaves_the_other_serving(cluster):
    _, (g1, g2), names = cluster
    outcomes: list[tuple[str, float, int]] = []
    stop_at = time.monotonic() + 3.0

    def load(g: Server, tag: str) -> None:
        n = 0
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                code = call(g, names[n % len(names)], n, 0.02).status_code
            except httpx.TransportError:  # the killed gateway's connections
                code = 0
            outcomes.append((tag, started, code))
            n += 1

    with cf.ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(load, g, tag) for g, tag in ((g1, "g1"), (g2, "g2"), (g1, "g1"), (g2, "g2"))]
        time.sleep(1.0)
        g1.proc.kill()
        killed = time.monotonic()
        cf.wait(runs)
    survivor = [code for tag, _, code in outcomes if tag == "g2"]
    after = [code for tag, started, code in outcomes if tag == "g2" and started > killed]
    assert len(after) > 5 and set(survivor) == {200}, outcomes
    assert any(tag == "g1" and code == 200 for tag, _, code in outcomes)  # g1 served until it was killed
