"""The control plane's Scheduler and worker agents in one process, over real HTTP on loopback,
with the in-memory coordination stores on the real clock and FakeWorkers in place of sandboxes
(tests/e2e/test_cluster.py runs the same with real processes, sandboxes and PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import uvicorn

from mist.cluster import wire
from mist.cluster.agent import Agent, AgentConfig
from mist.cluster.codecache import CodeCache
from mist.cluster.controlapi import build_cluster_app
from mist.cluster.membership import Capacity, HealthPolicy
from mist.cluster.scheduler import Scheduler, SchedulerSettings
from mist.errors import CoordinationUnavailable, StaleEpoch, WorkerLost
from mist.testing.cluster import MemoryLeaseStore, MemoryMembership
from mist.testing.worker import FakeWorker
from mist.worker.types import SandboxSpec

TOKEN = "in-process-cluster-token"
POLICY = HealthPolicy(interval_s=0.1, late_after_s=0.3, timeout_s=0.6)
SHA = "ab" * 32


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class SlowWorker(FakeWorker):
    """A FakeWorker whose calls take `delay` seconds (forever while `hang` is set); it keeps the
    provisioned instances it is asked for (`kept`) and reports them, as the Worker does."""

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.0
        self.hang = False
        self.started: list[str] = []
        self.kept: dict[str, SandboxSpec] = {}  # function -> the spec whose min_instances it keeps

    async def provision(self, spec):
        await super().provision(spec)
        if spec.min_instances > 0:
            self.kept[spec.function_name] = spec
        else:
            self.kept.pop(spec.function_name, None)
        return spec.min_instances

    def stop_provisioning(self):
        super().stop_provisioning()
        names, self.kept = sorted(self.kept), {}
        return names

    async def retire(self, function_name, keep_version=None):
        await super().retire(function_name, keep_version)
        kept = self.kept.get(function_name)
        if kept is not None and kept.version != keep_version:  # as the Worker: its provisioning ends
            del self.kept[function_name]

    async def invoke(self, spec, invocation_id, payload):
        self.started.append(invocation_id)
        if self.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay)
        return await super().invoke(spec, invocation_id, payload)

    def statistics(self):
        functions = tuple(SimpleNamespace(name=k.function_name, version=k.version, instances=k.min_instances,
                                          in_flight=0, memory_mb=k.memory_mb, provisioned=k.min_instances)
                          for k in self.kept.values())
        return SimpleNamespace(functions=functions, memory_reserved_mb=0, instances=0, prewarmed=0)


async def serve(app) -> tuple[uvicorn.Server, asyncio.Task, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=0.5))
    server.capture_signals = contextlib.nullcontext
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
async def cluster(tmp_path):
    members = MemoryMembership(utcnow, timeout_s=POLICY.timeout_s)
    leases = MemoryLeaseStore(utcnow)
    scheduler = Scheduler(members, leases, SchedulerSettings(TOKEN, "cp-1", POLICY, shards=4, lease_ttl_s=1.0))
    await scheduler.start()
    servers = [await serve(build_cluster_app(scheduler, TOKEN, tmp_path / "code", tmp_path / "layers",
                                             tmp_path / "archives"))]
    join = servers[0][2]
    agents, tasks = [], []
    for i in range(2):
        root = tmp_path / f"w{i}"
        (root / "code" / SHA).mkdir(parents=True)  # the code is there already: nothing to fetch
        client = httpx.AsyncClient(headers={"Authorization": wire.bearer(TOKEN)})
        worker = SlowWorker()
        agent = Agent(worker, AgentConfig(f"w{i}", "", join, TOKEN, Capacity(4096, 2000, 64)), client,
                      CodeCache(root, client, join))
        servers.append(await serve(agent.app))
        agent.config = replace(agent.config, address=servers[-1][2])
        agents.append(agent)
        tasks.append(asyncio.create_task(agent.run_membership()))
    await wait_for(lambda: len(scheduler.table.healthy()) == 2)
    yield SimpleNamespace(scheduler=scheduler, agents=agents, members=members, leases=leases, tasks=tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for server, task, _ in servers:
        server.should_exit = True
        await task
    await scheduler.stop()
    for agent in agents:
        await agent._client.aclose()


async def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def spec(name: str = "f") -> SandboxSpec:
    return SandboxSpec(name, 1, Path("/control/code") / SHA, "main.handler", concurrency=1)


async def test_concurrent_calls_run_on_both_workers(cluster):
    for agent in cluster.agents:
        agent.worker.delay = 0.05
    results = await asyncio.gather(*(cluster.scheduler.invoke(spec(), f"i{n}", b'{"n": %d}' % n)
                                     for n in range(20)))
    assert sorted(r.payload for r in results) == sorted(b'{"n": %d}' % n for n in range(20))
    counts = [len(agent.worker.calls) for agent in cluster.agents]
    assert sum(counts) == 20 and min(counts) >= 5, counts


async def test_a_call_on_a_worker_that_goes_silent_fails_with_worker_lost_and_the_next_goes_elsewhere(cluster):
    silent = cluster.agents[0]
    silent.worker.hang = True
    cluster.tasks[0].cancel()  # its heartbeats stop: cut off, as far as the cluster can tell
    cluster.scheduler.table.update(cluster.scheduler.table._placement_reports(), {"w0": {("f", 1): 1}})
    started = asyncio.get_running_loop().time()
    with pytest.raises(WorkerLost) as lost:
        await cluster.scheduler.invoke(spec(), "stuck", b"{}")
    waited = asyncio.get_running_loop().time() - started
    assert "worker w0 was lost" in lost.value.message and "missed heartbeats" in lost.value.message
    assert waited < POLICY.timeout_s + 1.5  # the timeout, plus a loaded machine's scheduling
    result = await cluster.scheduler.invoke(spec(), "next", b"{}")
    assert result.ok and len(cluster.agents[1].worker.calls) == 1
    assert cluster.scheduler.statistics().workers_lost == 1


async def test_an_order_from_a_scheduler_whose_shard_moved_is_refused_and_it_places_nothing(cluster):
    scheduler, leases = cluster.scheduler, cluster.leases
    name = f"shard/{scheduler.map.route('f').shard}"
    old = leases.current(name)
    leases.release(old)  # the shard moves to another scheduler
    thief = leases.acquire(name, "cp-2", 60)
    assert thief.epoch > old.epoch
    scheduler.floors = leases.floors(scheduler.names)  # what the next lease round reads
    await wait_for(lambda: all(a.fence.floor(name) >= thief.epoch for a in cluster.agents))
    with pytest.raises(StaleEpoch) as refused:  # its keeper has not noticed yet: the worker says no
        await scheduler.invoke(spec(), "stale", b"{}")
    assert refused.value.epoch == old.epoch and refused.value.floor == thief.epoch
    assert all(not a.worker.calls for a in cluster.agents)
    await wait_for(lambda: scheduler.keeper.epoch(name) is None, timeout=2.0)
    with pytest.raises(CoordinationUnavailable, match="does not hold the lease"):
        await scheduler.invoke(spec(), "unowned", b"{}")


async def test_a_worker_whose_heartbeat_is_refused_joins_again_as_a_new_incarnation(cluster):
    agent = cluster.agents[1]
    before = agent.incarnation
    cluster.members.register(cluster.members.snapshot().workers[1].info)  # someone else took its place
    await wait_for(lambda: agent.incarnation > before + 1)
    await wait_for(lambda: "w1" in cluster.scheduler.table.healthy())


async def test_a_cut_off_worker_stops_provisioning_and_bills_only_until_it_could_be_taken_for_lost(cluster):
    from mist.worker.types import ProvisionedSpan

    billed = []
    cluster.scheduler.on_provisioned = billed.append
    agent = cluster.agents[1]
    await agent.worker.provision(replace(spec(), function_name="kept", min_instances=1))
    assert agent.lost_after_s == POLICY.timeout_s  # told at register
    before = agent.incarnation
    cluster.members.register(cluster.members.snapshot().workers[1].info)  # the cluster lost it: next beat refused
    cut = agent._accepted_ms + int(POLICY.timeout_s * 1000)  # noqa: SLF001
    agent.worker.on_provisioned(ProvisionedSpan("kept", 1, "acme", 128, 1, cut - 5_000, cut + 60_000))
    agent.worker.on_provisioned(ProvisionedSpan("kept", 1, "acme", 128, 1, cut + 60_000, cut + 90_000))
    await wait_for(lambda: agent.incarnation > before + 1)
    await wait_for(lambda: len(billed) >= 1)
    await asyncio.sleep(3 * POLICY.interval_s)
    assert billed == [ProvisionedSpan("kept", 1, "acme", 128, 1, cut - 5_000, cut)]  # the rest was another's
    assert agent.worker.stop_provisioning() == []  # it had stopped keeping "kept" when it was cut off


async def test_provisioning_taken_by_a_cluster_worker_ends_on_the_embedded_worker(cluster):
    local = FakeWorker()  # the embedded worker of `mist up`, which kept it before any worker joined
    cluster.scheduler.local = local
    kept = replace(spec(), function_name="kept", min_instances=1)
    await local.provision(kept)
    assert await cluster.scheduler.provision(kept) == 1
    assert [a.worker.provisioned[-1].min_instances for a in cluster.agents if a.worker.provisioned] == [1]
    assert local.stop_provisioning() == []  # it was told to stop keeping it: billed once, on the worker


async def test_orders_without_the_cluster_token_are_refused(cluster):
    async with httpx.AsyncClient() as client:
        r = await client.get(cluster.agents[0].config.join_url + "/v1/cluster/statistics")
        assert r.status_code == 401
        r = await client.post(cluster.agents[0].config.address + "/v1/agent/invoke", content=b"{}\n{}")
        assert r.status_code == 401 and r.json()["error"]["code"] == "Unauthenticated"
        r = await client.post(cluster.agents[0].config.join_url + "/v1/cluster/workers", json={},
                              headers={"Authorization": "Bearer wrong-token"})
        assert r.status_code == 401 and "--cluster-token" in r.json()["error"]["message"]
    assert not cluster.agents[0].worker.calls


async def test_the_cluster_api_shows_the_schedulers_statistics_to_holders_of_the_token(cluster):
    async with httpx.AsyncClient(headers={"Authorization": wire.bearer(TOKEN)}) as client:
        r = await client.get(cluster.agents[0].config.join_url + "/v1/cluster/statistics")
    assert r.status_code == 200
    assert r.json()["Scheduler"]["workers"] == 2


async def test_a_draining_worker_finishes_its_calls_gets_nothing_new_and_leaves(cluster):
    draining, other = cluster.agents
    for agent in cluster.agents:
        agent.worker.delay = 0.3
    await draining.worker.provision(replace(spec(), function_name="kept", min_instances=1))
    running = [asyncio.create_task(cluster.scheduler.invoke(spec(), f"r{n}", b"{}")) for n in range(6)]
    await wait_for(lambda: draining.worker.started)
    leaving = asyncio.create_task(draining.drain_and_leave())
    await wait_for(lambda: "w0" not in cluster.scheduler.table.healthy())
    assert draining.worker.kept == {}  # its provisioned function is the cluster's to start elsewhere, now
    before = len(draining.worker.started)
    later = await asyncio.gather(*(cluster.scheduler.invoke(spec(), f"l{n}", b"{}") for n in range(4)))
    assert all(r.ok for r in await asyncio.gather(*running)) and all(r.ok for r in later)
    assert len(draining.worker.started) == before  # nothing new went to it
    await leaving
    await wait_for(lambda: cluster.scheduler.table.workers() == ["w1"])
    assert cluster.scheduler.statistics().workers_lost == 0  # it left; it was not lost


async def test_provisioned_time_on_a_worker_is_billed_once_through_its_heartbeats(cluster):
    from mist.worker.types import ProvisionedSpan

    billed = []
    cluster.scheduler.on_provisioned = billed.append
    agent = cluster.agents[0]
    spans = [ProvisionedSpan("f", 1, "acme", 256, 2, 1_000, 2_000 + n) for n in range(2)]
    for span in spans:
        agent.worker.on_provisioned(span)  # as the Worker reports it
    await wait_for(lambda: len(billed) == 2)
    await asyncio.sleep(3 * POLICY.interval_s)  # more heartbeats: nothing billed again
    assert billed == spans and not agent._spans
    # a heartbeat sent again (its reply was lost) carries spans already billed: not billed twice
    beat = {"incarnation": agent.incarnation, "load": {}, "spans": [{"seq": 1, **spans[0].__dict__}]}
    assert (await cluster.scheduler.heartbeat("w0", beat))["accepted"]
    assert billed == spans


async def test_a_worker_with_the_wrong_token_is_told_so_and_stops_trying(cluster, tmp_path):
    from mist.errors import Unauthenticated

    join = cluster.agents[0].config.join_url
    client = httpx.AsyncClient(headers={"Authorization": wire.bearer("not-the-cluster-token")})
    agent = Agent(SlowWorker(), AgentConfig("w9", "http://127.0.0.1:9", join, "not-the-cluster-token",
                                            Capacity(1024, 1000, 8)), client, CodeCache(tmp_path / "w9", client, join))
    with pytest.raises(Unauthenticated, match="refused this worker's cluster token"):
        await asyncio.wait_for(agent.run_membership(), 5)
    await client.aclose()
    assert "w9" not in cluster.scheduler.table.workers()


async def test_provisioned_instances_of_a_lost_worker_are_started_on_another_and_duplicates_released(cluster):
    scheduler, (w0, w1) = cluster.scheduler, cluster.agents
    wanted = replace(spec(), min_instances=1, memory_mb=128)
    scheduler.provisioned = lambda: [wanted]
    await scheduler._reconcile()  # nobody keeps it yet (a start with no worker joined, say)
    await wait_for(lambda: sum(len(a.worker.kept) for a in (w0, w1)) == 1)
    holder, other = (w0, w1) if w0.worker.kept else (w1, w0)
    await wait_for(lambda: scheduler._held == {wanted.key: {holder.config.worker_id: 1}})
    for _ in range(3):  # held and reported: no second order
        await scheduler._reconcile()
    assert len(holder.worker.provisioned) == 1 and not other.worker.provisioned

    cluster.tasks[cluster.agents.index(holder)].cancel()  # it stops heartbeating: lost after the timeout
    started = asyncio.get_running_loop().time()
    await wait_for(lambda: scheduler.statistics().reprovisioned == 2, timeout=POLICY.timeout_s + 2.0)
    assert asyncio.get_running_loop().time() - started < POLICY.timeout_s + 1.0  # forgotten, then at once
    assert wanted.function_name in other.worker.kept

    i = cluster.agents.index(holder)  # it comes back (a new incarnation) still keeping its instance
    cluster.tasks[i] = asyncio.create_task(holder.run_membership())
    await wait_for(lambda: len(scheduler._held.get(wanted.key, {})) == 2)
    await scheduler._reconcile()
    await wait_for(lambda: scheduler.statistics().provisions_released == 1)
    assert [bool(a.worker.kept) for a in (w0, w1)] == [True, False]  # one kept (ties: the first by id)

    newer = replace(wanted, version=2)  # a deploy, as FunctionService sends it: retire the others, provision
    scheduler.provisioned = lambda: [newer]
    await scheduler.retire("f", keep_version=2)
    await scheduler.provision(newer)
    await wait_for(lambda: scheduler._held.get(newer.key) is not None)
    for _ in range(3):
        await scheduler._reconcile()
    assert [a.worker.kept["f"].key for a in (w0, w1) if a.worker.kept] == [newer.key]  # v1 kept nowhere
    scheduler.provisioned = lambda: []  # deleted: nothing is ordered any more
    await scheduler._reconcile()
    assert scheduler.statistics().reprovisioned == 2
