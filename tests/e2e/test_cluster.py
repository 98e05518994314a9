"""A real cluster on this machine: `mist up --cluster-listen` in the host's network namespace and
two `mist worker --join` agents, each a "host" of its own — a network namespace reached only
through its veth pair (10.77.K.1 on the host's side, 10.77.K.2 inside). PostgreSQL keeps the
membership and the shard leases.

What a user of the cluster would notice: invocations run on both workers; a worker killed with
SIGKILL under load fails only the calls it was running (WorkerLost, 502) and later calls
succeed on the other; an order stamped with the epoch of a shard lease that has moved is
refused by the worker (StaleEpoch), and the control plane that lost the lease places nothing
for that shard until it holds it again; the provisioned instance of a function with
min_instances on the killed worker is started on the other, and its calls are warm again.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from mist.cluster import wire
from mist.cluster.pg import connect
from mist.cluster.sqlleases import PgLeaseStore
from mist.cluster.sqlshardmap import PgShardMapStore
from mist.core.sharding import ShardMap
from mist.testing.worker import remove_worker_leftovers
from mist.worker.types import SandboxSpec
from tests.e2e.conftest import MIST, REPO, Server, start_server, write_function

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nsenter") is None,
                                reason="network namespaces need root and nsenter")

TOKEN = "test-cluster-token-" + secrets.token_hex(8)
TIMEOUT_S = 3  # --worker-timeout: heartbeats every 0.6 s, lost after 3 s of silence


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@dataclass
class Host:
    name: str  # the netns
    veth: str  # the host side
    gateway: str  # the host's address on the veth (the control plane listens on the first)
    address: str  # the worker's address inside


@dataclass
class Agent:
    id: str
    host: Host
    proc: subprocess.Popen
    log: Path
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://{self.host.address}:7071"

    def status(self) -> dict:
        r = httpx.get(self.url + "/v1/agent/status", headers={"Authorization": wire.bearer(TOKEN)}, timeout=5)
        r.raise_for_status()
        return r.json()


def make_hosts(n: int) -> list[Host]:
    tag = secrets.token_hex(2)
    base = 10 + (os.getpid() * 7) % 200
    hosts = []
    for i in range(n):
        k = base + i
        host = Host(f"mistw{tag}{i}", f"mv{tag}{i}h", f"10.77.{k}.1", f"10.77.{k}.2")
        inner = f"mv{tag}{i}n"
        sh("ip", "netns", "add", host.name)
        hosts.append(host)
        sh("ip", "link", "add", host.veth, "type", "veth", "peer", "name", inner)
        sh("ip", "link", "set", inner, "netns", host.name)
        sh("ip", "addr", "add", f"{host.gateway}/24", "dev", host.veth)
        sh("ip", "link", "set", host.veth, "up")
        inside = ("ip", "netns", "exec", host.name)
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "ip", "addr", "add", f"{host.address}/24", "dev", inner)
        sh(*inside, "ip", "link", "set", inner, "up")
        sh(*inside, "ip", "route", "add", "default", "via", host.gateway)
    return hosts


def remove_hosts(hosts: list[Host]) -> None:
    for host in hosts:
        subprocess.run(["ip", "netns", "del", host.name], capture_output=True)  # takes its veth pair with it
        subprocess.run(["ip", "link", "del", host.veth], capture_output=True)


def start_agent(host: Host, worker_id: str, join: str, data_dir: Path) -> Agent:
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"{worker_id}.log"
    env = {**os.environ, "MIST_CLUSTER_TOKEN": TOKEN}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{host.name}", "--", MIST, "worker", "--join", join,
             "--listen", f"{host.address}:7071", "--data-dir", str(data_dir), "--id", worker_id,
             "--memory", "2048", "--prewarm", "1"],
            stdout=out, stderr=out, cwd=REPO, env=env)  # fmt: skip
    return Agent(worker_id, host, proc, log, data_dir)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Cluster:
    server: Server
    agents: list[Agent]
    pg_url: str

    def invoke(self, client: httpx.Client, payload: dict) -> httpx.Response:
        return client.post("/v1/functions/where/invocations", json=payload)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_url):
    root = tmp_path_factory.mktemp("cluster")
    hosts = make_hosts(2)
    agents: list[Agent] = []
    server = None
    try:
        server = start_server(root / "control", "--cluster-listen", f"{hosts[0].gateway}:0",
                              "--cluster-token", TOKEN, "--cluster-db", pg_url,
                              "--worker-timeout", str(TIMEOUT_S), "--no-embedded-worker", "--shard-lease-ttl", "2")  # fmt: skip
        join = _cluster_url(server, hosts[0])
        agents = [start_agent(h, f"w{i}", join, root / f"w{i}") for i, h in enumerate(hosts)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if all(a.status()["incarnation"] >= 1 for a in agents):
                    break
            except httpx.HTTPError:
                pass
            assert all(a.proc.poll() is None for a in agents), "a worker exited:\n" + "\n".join(
                a.log.read_text() for a in agents)
            time.sleep(0.2)
        else:
            raise AssertionError("the workers did not join:\n" + "\n".join(a.log.read_text() for a in agents))
        fn = write_function(root / "fn", {"main.py": (
            "import time\n"
            "def handler(event, context):\n"
            "    time.sleep(event.get('sleep', 0))\n"
            "    return {'n': event.get('n')}\n")})  # fmt: skip
        deployed = server.cli("deploy", "where", str(fn))
        assert deployed.returncode == 0, deployed.stderr
        deployed = server.cli("deploy", "kept", str(fn), "--min-instances", "1")
        assert deployed.returncode == 0, deployed.stderr
        time.sleep(TIMEOUT_S / 5 * 2)  # the control plane has read the workers' first heartbeats
        yield Cluster(server, agents, pg_url)
    finally:
        for a in agents:
            stop(a.proc)
            remove_worker_leftovers(a.data_dir)  # the cgroups of the one killed with SIGKILL
        if server is not None:
            server.stop()
        remove_hosts(hosts)


def _cluster_url(server: Server, host: Host) -> str:
    """The control plane prints `cluster API at URL` on stdout before it is ready; the fixture's
    reader consumed it, so read the port from the listening sockets instead."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if f"{host.gateway}:" in line and f"pid={server.proc.pid}," in line:
            return "http://" + line.split()[3]
    raise AssertionError(f"the control plane does not listen on {host.gateway}:\n{out}")


def settled(client: httpx.Client, invocation_id: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while (body := client.get(f"/v1/invocations/{invocation_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    return body


def provisioned(cluster: Cluster, function: str) -> dict[str, int]:
    """Live worker -> provisioned instances of `function`, as their last heartbeats reported."""
    engine = connect(cluster.pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, instances FROM cluster_workers WHERE heartbeat_at > "
                                        f"now() - interval '{TIMEOUT_S} seconds'")).all()
    finally:
        engine.dispose()
    held = {worker: sum(1 for i in instances if i[1].rsplit("/", 1)[-1] == function and len(i) > 6 and i[6])
            for worker, instances in rows}
    return {worker: n for worker, n in held.items() if n}


def wait_provisioned(cluster: Cluster, function: str, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while not (held := provisioned(cluster, function)):
        assert time.monotonic() < deadline, f"no worker reports a provisioned instance of {function}"
        time.sleep(0.2)
    return held


def invocations(cluster: Cluster) -> list[int]:
    return [a.status()["invocations"] for a in cluster.agents]


def test_invocations_spread_over_both_workers(cluster):
    before = invocations(cluster)
    with cluster.server.client() as client, cf.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda n: cluster.invoke(client, {"n": n, "sleep": 0.05}), range(120)))
    assert [r.status_code for r in answers] == [200] * 120
    assert sorted(r.json()["n"] for r in answers) == list(range(120))
    ran = [after - b for after, b in zip(invocations(cluster), before)]
    assert sum(ran) == 120
    assert min(ran) >= 20, f"invocations per worker: {ran}"  # both workers took a real share


@pytest.mark.network
def test_a_function_with_dependencies_runs_on_a_worker_that_fetched_its_layer(cluster, tmp_path):
    src = write_function(tmp_path / "deps", {
        "main.py": "import mangum\ndef handler(event, context):\n    return {'mangum': mangum.__name__}\n",
        "requirements.txt": "mangum==0.19.0\n"})  # fmt: skip
    deployed = cluster.server.cli("deploy", "deps", str(src))
    assert deployed.returncode == 0, deployed.stderr + deployed.stdout
    with cluster.server.client() as client:
        r = client.post("/v1/functions/deps/invocations", json={})
        assert r.status_code == 200 and r.json() == {"mangum": "mangum"}, r.text
        layer = client.get("/v1/functions/deps").json()["latest"]["layer_sha256"]
    copies = [a.data_dir / "layers" / layer / "python" / "mangum" for a in cluster.agents]
    assert any(p.is_dir() for p in copies), copies  # the worker that ran it has the layer now


def test_an_order_stamped_with_a_moved_shards_old_epoch_is_refused(cluster):
    worker = cluster.agents[1]
    function = "where"
    maps = PgShardMapStore(cluster.pg_url)
    stored = maps.read()
    maps.close()
    assert stored is not None, "the control plane's shard manager wrote the map"
    shard = f"shard/{ShardMap.from_json(stored.body, stored.version).route(function).shard}"
    leases = PgLeaseStore(cluster.pg_url)
    try:
        old = leases.current(shard)
        assert old is not None, "the control plane holds every shard's lease"
        # the shard moves: the control plane's lease is ended (as if it had been cut off past its
        # TTL) and another scheduler takes it, with a higher epoch
        with leases.engine.connect() as conn:
            conn.execute(sa.text("UPDATE cluster_leases SET expires_at = now() WHERE name = :n"), {"n": shard})
        thief = leases.acquire(shard, "another-scheduler", 60)
        assert thief is not None and thief.epoch > old.epoch
        deadline = time.monotonic() + 10
        while worker.status()["floors"].get(shard, 0) < thief.epoch:  # learned from a heartbeat reply
            assert time.monotonic() < deadline, "the worker never learned the new epoch"
            time.sleep(0.1)
        with cluster.server.client() as client:
            fv = client.get(f"/v1/functions/{function}").json()["latest"]
        spec = SandboxSpec(function, fv["version"], Path("/code") / fv["code_sha256"], fv["handler"])
        order = wire.encode_order(wire.Order(shard, old.epoch, "stale-order", spec), b"{}")
        refused = httpx.post(worker.url + "/v1/agent/invoke", content=order,
                             headers={"Authorization": wire.bearer(TOKEN)}, timeout=10)
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "StaleEpoch"
        assert f"epoch {old.epoch} of lease '{shard}'" in refused.json()["error"]["message"]
        # the control plane, having lost the lease, places nothing for that shard
        with cluster.server.client() as client:
            deadline = time.monotonic() + 10
            while (r := cluster.invoke(client, {"n": 1})).status_code == 200:
                assert time.monotonic() < deadline, "the control plane kept placing without its lease"
                time.sleep(0.2)
            assert r.status_code == 503
            assert r.json()["error"]["code"] in ("CoordinationUnavailable", "StaleEpoch")
            leases.release(thief)  # the other scheduler hands the shard back
            deadline = time.monotonic() + 10
            while (r := cluster.invoke(client, {"n": 2})).status_code != 200:
                assert time.monotonic() < deadline, f"the control plane did not take its shard back: {r.text}"
                time.sleep(0.2)
    finally:
        leases.close()


def test_a_worker_killed_under_load_fails_only_its_calls_and_the_other_takes_over(cluster):
    (holder,) = wait_provisioned(cluster, "kept", 10)  # the function with min_instances 1 is kept there
    victim, survivor = sorted(cluster.agents, key=lambda a: a.id != holder)  # killed: the one keeping it
    outcomes: list[tuple[float, float, int, dict]] = []

    def call(n: int) -> None:
        started = time.monotonic()
        r = cluster.invoke(client, {"n": n, "sleep": 0.2})
        outcomes.append((started, time.monotonic(), r.status_code, r.json()))

    with cluster.server.client() as client, cf.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(call, n) for n in range(16)]
        cf.wait(futures)
        assert all(code == 200 for *_, code, _ in outcomes), outcomes  # both workers serving
        survivor_before = survivor.status()["invocations"]
        events = [client.post("/v1/functions/where/invocations", json={"n": n, "sleep": 1.5},
                              headers={"X-Mist-Invocation-Type": "Event"}) for n in range(6)]
        assert all(e.status_code == 202 for e in events)
        futures = [pool.submit(call, n) for n in range(120)]
        time.sleep(1.0)
        victim.proc.kill()  # SIGKILL: no drain, no leave
        killed_at = time.monotonic()
        cf.wait(futures)
    late = [o for o in outcomes[16:] if o[0] > killed_at + 0.5]  # after its process is surely gone
    failed = [o for o in outcomes[16:] if o[2] != 200]
    assert late and all(code == 200 for _, _, code, _ in late), [o for o in late if o[2] != 200]
    assert len(failed) <= 8, failed  # at most the calls running on it
    for _, _, code, body in failed:
        assert code == 502 and body["error"]["code"] == "WorkerLost"
        assert f"worker {victim.id} was lost" in body["error"]["message"]
    assert survivor.status()["invocations"] - survivor_before >= len(late)
    # asynchronous invocations running on it are run again (the dispatcher's retry of a platform error)
    with cluster.server.client() as client:
        attempts = []
        for e in events:
            body = settled(client, e.json()["invocation_id"])
            assert body["status"] == "succeeded", body
            attempts += [a["error_type"] for a in body["attempts"]]
    assert "WorkerLost" in attempts, attempts
    log = cluster.server.log.read_text()
    deadline = time.monotonic() + TIMEOUT_S + 3
    while f"worker {victim.id} is lost (it missed heartbeats" not in log:  # declared lost by the heartbeat timeout
        assert time.monotonic() < deadline, log[-3000:]
        time.sleep(0.2)
        log = cluster.server.log.read_text()
    # its provisioned instance is started on the survivor (at once, plus the instance's init and
    # a heartbeat to report it), and calls of that function are warm again
    assert wait_provisioned(cluster, "kept", 5) == {survivor.id: 1}
    reprovised_s = time.monotonic() - killed_at
    with cluster.server.client() as client:
        r = client.post("/v1/functions/kept/invocations", json={"n": 7})
    assert r.status_code == 200 and r.json() == {"n": 7}, r.text
    assert r.headers["X-Mist-Cold-Start"] == "false"
    assert reprovised_s < TIMEOUT_S + 8, reprovised_s
    print(f"provisioned again {reprovised_s:.1f} s after the kill (heartbeat timeout {TIMEOUT_S} s)")
