"""The control plane's side of a cluster: which workers exist, the shard leases it holds, and
every invocation sent to a worker's agent.

    scheduler = Scheduler(members, leases, settings, local=worker)
    await scheduler.start()       shard leases acquired, membership watched, leases renewed
    await scheduler.invoke(spec, invocation_id, payload)   as Worker.invoke, on a cluster worker
    retire / restart / provision  as the Worker's, sent to every worker (provision: to one)
    await scheduler.stop()

An invocation, step by step:

1. Its function's shard (`ShardMap.route`) names the lease it is sent under; the order is
   stamped with that lease's epoch while this process holds it (else CoordinationUnavailable:
   another scheduler holds the shard, or PostgreSQL cannot be reached).
2. `InstanceTable.choose` (mist/core/routing.py, pure) picks a worker: a free warm instance,
   else a new instance placed by `mist/core/placement.py`, else a queue on a busy one.
3. The order goes to the worker's agent (keep-alive connections, mist/cluster/agentclient.py);
   the worker's fence checks
   the epoch, the worker fetches the code if it lacks it, runs the call and answers the result.
4. A worker that cannot be connected to never got the order: it is excluded until it reports
   again and the call is placed elsewhere (at most 3 tries). A connection that breaks after the
   order was sent, or a worker the membership declares lost while the call runs, fails the call
   with WorkerLost (it may have run; the dispatcher retries asynchronous invocations).

With no cluster worker known the embedded worker (`local`) serves, exactly as `mist up` alone.

Provisioned instances (min_instances) are kept on one worker each. Every `PROVISION_CHECK_S`,
and right after a worker is forgotten, the scheduler compares the provisioned functions of the
shards it owns (`provisioned`: FunctionService.provisioned, from memory) with the provisioned
instances workers report, and starts again those no live worker holds
(mist/core/provisioning.py): after a worker is lost, within the heartbeat timeout plus a check
and the instances' init; after a failover, at the new owner's first check.

Membership is read from the store (`snapshot` every half heartbeat interval, judged by
`assess`, with `changes` naming the workers to forget); leases are renewed every third of
their TTL. Both stores are synchronous and are called from threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx

from mist.cluster import wire
from mist.cluster.agentclient import AgentClient, Broken, Unreachable
from mist.cluster.leases import LeaseKeeper, LeaseStore
from mist.cluster.membership import (
    Assessment,
    Capacity,
    Health,
    HealthPolicy,
    Heartbeat,
    InstanceReport,
    Load,
    MembershipStore,
    WorkerInfo,
    assess,
    changes,
    warm_from_json,
)
from mist.core.placement import Need, WorkerReport, WorkerState
from mist.core.provisioning import Asked, ProvisionConfig, reconcile
from mist.core.routing import InstanceTable, Key
from mist.core.sharding import ShardMap
from mist.cluster.owners import Here, ShardOwner
from mist.cluster.router import ShardRouter
from mist.errors import CoordinationUnavailable, MistError, NoCapacity, NotShardOwner, WorkerLost
from mist.worker.types import InvokeResult, ProvisionedSpan, SandboxSpec

log = logging.getLogger("mist.cluster")

_STATE = {Health.HEALTHY: WorkerState.HEALTHY, Health.DRAINING: WorkerState.DRAINING,
          Health.LATE: WorkerState.UNHEALTHY}
TRIES = 3  # workers tried for one call when connections are refused
PROVISION_CHECK_S = 3.0  # how often provisioned functions are checked against the workers' reports


@dataclass(frozen=True)
class SchedulerSettings:
    token: str
    holder: str  # unique per process run: host:pid:random
    policy: HealthPolicy = HealthPolicy()
    shards: int = 16
    lease_ttl_s: float = 5.0


@dataclass(frozen=True)
class SchedulerStatistics:
    workers: int
    healthy: int
    shards_held: int
    remote_invocations: int
    local_invocations: int
    workers_lost: int
    calls_lost: int
    refused_connections: int
    stale_epochs: int
    warm_calls: int  # calls sent to a free warm instance
    new_instances: int  # calls for which placement chose a worker for a new instance
    queued_calls: int  # calls queued on a worker whose instances were all busy
    unplaced_calls: int  # calls no worker could take (NoCapacity)
    forwarded_out: int = 0  # invocations sent to the scheduler owning their shard
    forwarded_in: int = 0  # invocations other schedulers sent here
    placed_by_shard: dict[str, int] | None = None  # lease name -> invocations placed here (shared shards)
    map_version: int = 0  # the shard map followed (shared shards)
    map_changes: int = 0  # maps this process wrote as shard manager
    shard_splits: int = 0  # splits and merges in those maps
    shard_merges: int = 0
    leases_acquired: int = 0
    leases_released: int = 0
    reprovisioned: int = 0  # provisioned functions the reconciliation started (no live worker kept them)
    provisions_released: int = 0  # workers told to stop keeping a version another worker keeps too


class Scheduler:
    def __init__(self, members: MembershipStore, leases: LeaseStore, settings: SchedulerSettings, *,
                 local: Any | None = None, owner: ShardOwner | None = None) -> None:
        self.members = members
        self.leases = leases
        self.settings = settings
        self.policy = settings.policy
        self.local = local  # the embedded Worker, or None
        self.owner = owner  # several schedulers share the shards (mist/cluster/owners.py); None: this one holds all
        self.keeper = LeaseKeeper(leases, settings.holder, settings.lease_ttl_s)
        self.map = ShardMap.uniform(settings.shards, [settings.holder])
        self.names = [f"shard/{start}" for start in self.map.starts]
        self._stamps: dict[str, tuple[int, float]] = {}  # lease name -> (epoch, monotonic deadline)
        self.table = InstanceTable()
        self._addresses: dict[str, str] = {}
        self._lost: dict[str, asyncio.Future] = {}  # worker -> resolved when it is lost
        self._excluded_at: dict[str, object] = {}  # worker -> its heartbeat_at when excluded
        self._beats: dict[str, object] = {}  # worker -> its last heartbeat_at
        self._previous: Assessment | None = None
        self._client = httpx.AsyncClient(
            headers={"Authorization": wire.bearer(settings.token)},
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
        )
        self._agents = AgentClient(settings.token)  # invocation orders (the hot path)
        self.router = ShardRouter(owner, self._agents) if owner is not None else None  # to other owners
        self._tasks: list[asyncio.Task] = []
        self._counts: Counter[str] = Counter()
        self._by_shard: Counter[str] = Counter()  # lease name -> invocations placed here (with an owner)
        self.floors: dict[str, int] = {}
        self.on_provisioned: Callable[[ProvisionedSpan], None] | None = None  # the meter's (billing)
        self._spans_seen: dict[tuple[str, int], int] = {}  # (worker, incarnation) -> last span seq billed
        self.provisioned: Callable[[], list[SandboxSpec]] | None = None  # what to keep (FunctionService's)
        self._provisioning = ProvisionConfig(settle_s=3 * self.policy.interval_s).validate()  # a report's lag
        self._held: dict[Key, dict[str, int]] = {}  # version -> live worker -> provisioned instances reported
        self._asked: dict[Key, Asked] = {}  # version -> the last provisioning order
        self._orders: set[asyncio.Task] = set()  # provisioning orders sent by the reconciliation

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self._keep_leases()
        await self._watch_once()
        period = self.owner.settings.step_s if self.owner is not None else self.settings.lease_ttl_s / 3
        self._tasks = [asyncio.create_task(self._loop(self._keep_leases, period)),
                       asyncio.create_task(self._loop(self._watch_once, self.policy.interval_s / 2)),
                       asyncio.create_task(self._loop(self._reconcile, PROVISION_CHECK_S))]

    async def stop(self) -> None:
        for task in [*self._tasks, *self._orders]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._orders, return_exceptions=True)
        if self.owner is not None:
            try:
                await asyncio.to_thread(self.owner.stop)
            except MistError:
                pass
        for name in list(self.keeper.leases):
            try:
                await asyncio.to_thread(self.keeper.release, name)
            except MistError:
                pass
        await self._client.aclose()
        self._agents.close()

    async def _loop(self, step, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await step()
            except MistError as exc:
                log.warning("cluster: %s", exc.message)
            except Exception:  # a bug must not stop the loop that keeps the cluster going
                log.exception("cluster: %s failed", step.__name__)

    async def _keep_leases(self) -> None:
        if self.owner is not None:
            await asyncio.to_thread(self.owner.step)
            self.floors = self.owner.floors
            return

        def renew_and_acquire() -> None:
            lost = self.keeper.renew()
            if lost:
                log.warning("cluster: lost the lease of %d shards: %s", len(lost), ", ".join(lost))
            for name in self.names:
                if name not in self.keeper.leases:
                    self.keeper.acquire(name)
            now = time.monotonic()
            self._stamps = {name: (lease.epoch, now + self.keeper.remaining_s(name))
                            for name, lease in self.keeper.leases.items()}
            self.floors = self.leases.floors(self.names)

        await asyncio.to_thread(renew_and_acquire)

    async def _watch_once(self) -> None:
        snapshot = await asyncio.to_thread(self.members.snapshot)
        current = assess(snapshot, self.policy)
        forget = changes(self._previous, current).forget if self._previous is not None else ()
        for worker in forget:
            if worker not in current.health:
                self._forget(worker, "it left the cluster")
            elif current.health[worker] is Health.LOST:
                self._forget(worker, f"it missed heartbeats for {self.policy.timeout_s:g} s")
            else:
                self._forget(worker, "it restarted and joined again as a new incarnation")
        self._previous = current
        reports, instances = [], {}
        held: dict[Key, dict[str, int]] = {}
        for rec in snapshot.workers:
            health = current.health[rec.id]
            if health is Health.LOST:
                continue
            cap, load = rec.info.capacity, rec.load
            reports.append(WorkerReport(
                rec.id, max(0, cap.memory_mb - load.memory_used_mb), cap.memory_mb,
                max(0, cap.cpu_millis - load.cpu_used_millis), max(0, cap.slots - load.slots_used),
                _STATE[health], code=rec.info.warm.code, layers=rec.info.warm.layers,
                zygotes=rec.info.warm.zygotes))
            counts: Counter[tuple[str, int]] = Counter((i.function, i.version) for i in rec.instances)
            instances[rec.id] = dict(counts)
            self._addresses[rec.id] = rec.info.address
            if health is not Health.DRAINING:  # a draining worker's are started elsewhere before it leaves
                for i in rec.instances:
                    if i.provisioned:
                        per = held.setdefault((i.function, i.version), {})
                        per[rec.id] = per.get(rec.id, 0) + 1
        self.table.update(reports, instances)
        self._held = held
        self._beats = beats = {rec.id: rec.heartbeat_at for rec in snapshot.workers}
        for worker, at in list(self._excluded_at.items()):
            if beats.get(worker) == at:
                self.table.exclude(worker)  # no report since it refused a connection
            else:
                del self._excluded_at[worker]
        if forget:
            await self._reconcile()  # their provisioned instances: started elsewhere now

    def _forget(self, worker: str, how: str) -> None:
        if how.startswith("it left"):
            log.info("cluster: worker %s left the cluster", worker)
        else:
            log.warning("cluster: worker %s is lost (%s); its instances are forgotten and its calls in flight fail",
                        worker, how)
            self._counts["workers_lost"] += 1
        self.table.forget(worker)
        if worker in self._addresses:
            self._agents.forget(self._addresses[worker])
        lost = self._lost.pop(worker, None)
        if lost is not None and not lost.done():
            lost.set_result(how)

    # -- invocations --------------------------------------------------------------------------
    def _stamp(self, function: str) -> tuple[str, int]:
        if self.owner is not None:
            here = self.owner.here(function)
            if here is None:
                raise NotShardOwner(f"this scheduler does not hold the shard of {function}")
            return here.name, here.epoch
        name = f"shard/{self.map.route(function).shard}"
        stamp = self._stamps.get(name)
        if stamp is None or time.monotonic() >= stamp[1]:
            raise CoordinationUnavailable(
                f"this control plane does not hold the lease of {name}, the shard of {function} (another "
                "scheduler holds it, or the coordination database cannot be reached); retry shortly")
        return name, stamp[0]

    async def invoke(self, spec: SandboxSpec, invocation_id: str, payload: bytes) -> InvokeResult:
        if not self.table.workers() and self.local is not None:
            self._counts["local"] += 1
            return await self.local.invoke(spec, invocation_id, payload)
        if self.owner is None:
            return await self._place(spec, invocation_id, payload, *self._stamp(spec.function_name))
        assert self.router is not None
        return await self.router.invoke(spec, invocation_id, payload, owned=self._owned)

    async def place(self, spec: SandboxSpec, invocation_id: str, payload: bytes) -> InvokeResult:
        """An invocation another scheduler forwarded: placed here if this process owns its shard
        (waiting for the lease during a move), else NotShardOwner."""
        if self.owner is None:
            raise NotShardOwner("this control plane shares no shards (it runs without --db)")
        self._counts["forwarded_in"] += 1
        where = await self.owner.where(spec.function_name, forward=False)
        assert isinstance(where, Here)
        return await self._owned(where, spec, invocation_id, payload)

    async def _owned(self, here: Here, spec: SandboxSpec, invocation_id: str, payload: bytes) -> InvokeResult:
        assert self.owner is not None
        self.owner.inflight[here.name] += 1
        self.owner.placed[(here.start, spec.function_name)] += 1
        self._by_shard[here.name] += 1
        try:
            return await self._place(spec, invocation_id, payload, here.name, here.epoch)
        finally:
            self.owner.inflight[here.name] -= 1

    async def _place(self, spec: SandboxSpec, invocation_id: str, payload: bytes, shard: str,
                     epoch: int) -> InvokeResult:
        body = wire.encode_order(wire.Order(shard, epoch, invocation_id, spec), payload)
        need = Need(spec.function_name, spec.memory_mb, code=spec.code_dir.name,
                    layer=spec.layer_dir.parent.name if spec.layer_dir is not None else None)
        reason = ""
        for _ in range(TRIES):
            choice = self.table.choose(spec.key, need, spec.concurrency)
            if choice.worker is None:
                reason = choice.reason
                break
            try:
                result = await self._send(choice.worker, spec, body)
            except _Refused:
                continue
            if spec.redactor is not None:
                spec.redactor.result(result)
            self._counts["remote"] += 1
            return result
        if self.local is not None and not self.table.healthy():
            self._counts["local"] += 1
            return await self.local.invoke(spec, invocation_id, payload)
        raise NoCapacity(reason or f"no cluster worker could be reached for {spec.function_name}; "
                         "check that the workers are up (mist worker --join)", retry_after=1.0)

    async def _send(self, worker: str, spec: SandboxSpec, body: bytes) -> InvokeResult:
        address = self._addresses[worker]
        lost = self._lost.get(worker)
        if lost is None:
            lost = self._lost[worker] = asyncio.get_running_loop().create_future()
        self.table.begin(worker, spec.key)
        post = asyncio.ensure_future(self._agents.post(address, "/v1/agent/invoke", body, spec.timeout_s + 30.0))
        try:
            await asyncio.wait((post, lost), return_when=asyncio.FIRST_COMPLETED)
            if not post.done():
                post.cancel()
                self._counts["calls_lost"] += 1
                raise WorkerLost(worker, lost.result())
            try:
                status, data = post.result()
            except Unreachable as exc:
                self._counts["refused"] += 1
                self.table.exclude(worker)
                self._excluded_at[worker] = self._beats.get(worker)
                log.warning("cluster: worker %s at %s cannot be reached (%s); trying another", worker, address, exc)
                raise _Refused() from exc
            except Broken as exc:
                self._counts["calls_lost"] += 1
                raise WorkerLost(worker, f"the connection to {address} broke: {exc}") from exc
        finally:
            if not post.done():
                post.cancel()
            self.table.end(worker, spec.key)
        if status == 200:
            return wire.decode_result(data)
        if status == 409:
            self._counts["stale"] += 1
        wire.raise_error(json.loads(data), worker)
        raise AssertionError("unreachable")

    # -- what FunctionService asks of a worker, sent to the cluster's ------------------------
    async def _fan_out(self, path: str, body: dict[str, Any]) -> None:
        async def one(worker: str) -> None:
            try:
                r = await self._client.post(self._addresses[worker] + path, json=body, timeout=10.0)
                if r.status_code != 200:
                    log.warning("cluster: worker %s answered %s to %s: %s", worker, r.status_code, path, r.text[:200])
            except httpx.HTTPError as exc:
                log.warning("cluster: could not send %s to worker %s (%r)", path, worker, exc)

        await asyncio.gather(*(one(w) for w in self.table.workers()))

    def _skip(self, function_name: str) -> bool:
        """Fan-outs for a shard another scheduler owns are left to it: every process follows the
        change (mist/control/changes.py), so the owner sends them too."""
        return self.owner is not None and self.owner.here(function_name) is None

    async def retire(self, function_name: str, keep_version: int | None = None) -> None:
        if self.local is not None:
            await self.local.retire(function_name, keep_version)
        if self._skip(function_name):
            return
        shard, epoch = self._stamp(function_name)
        await self._fan_out("/v1/agent/retire", {"function": function_name, "keep_version": keep_version,
                                                 "shard": shard, "epoch": epoch})

    async def restart(self, function_name: str, revision: int) -> None:
        if self.local is not None:
            await self.local.restart(function_name, revision)
        if self._skip(function_name):
            return
        shard, epoch = self._stamp(function_name)
        await self._fan_out("/v1/agent/restart", {"function": function_name, "revision": revision,
                                                  "shard": shard, "epoch": epoch})

    async def provision(self, spec: SandboxSpec) -> int:
        """Provisioned instances on the embedded worker while no cluster worker is known, else
        on one cluster worker chosen as for a new instance (the embedded worker then stops
        keeping them: their time would be billed twice)."""
        if not self.table.workers() and self.local is not None:
            return await self.local.provision(spec)
        if spec.min_instances <= 0 or self._skip(spec.function_name):
            return 0
        shard, epoch = self._stamp(spec.function_name)
        self._asked[spec.key] = asked = Asked.sent(self._asked.get(spec.key), time.monotonic())
        ok = False
        try:
            need = Need(spec.function_name, spec.memory_mb * spec.min_instances, code=spec.code_dir.name)
            choice = self.table.choose(spec.key, need, spec.concurrency)
            if choice.worker is None:
                raise NoCapacity(choice.reason)
            started = await self._order_provision(choice.worker, spec, shard, epoch)
            ok = True
        finally:
            self._asked[spec.key] = asked.answered(ok, time.monotonic())
        if self.local is not None:  # it may have kept them before any cluster worker joined: not twice
            await self.local.provision(replace(spec, min_instances=0, layer_dir=None))  # (no layer zygote for it)
        return started

    async def _order_provision(self, worker: str, spec: SandboxSpec, shard: str, epoch: int) -> int:
        body = wire.encode_order(wire.Order(shard, epoch, "", spec), b"")
        try:
            r = await self._client.post(self._addresses[worker] + "/v1/agent/provision", content=body, timeout=60.0)
        except httpx.HTTPError as exc:
            raise WorkerLost(worker, f"the provisioning order could not be delivered: {exc!r}") from exc
        if r.status_code != 200:
            wire.raise_error(r.json(), worker)
        return int(r.json()["started"])

    async def _reconcile(self) -> None:
        """Start again the provisioned functions of this scheduler's shards that no live worker
        keeps, and release duplicates (mist/core/provisioning.py); the orders run as tasks."""
        if self.provisioned is None or not self.table.workers():
            return
        specs = {s.key: s for s in self.provisioned() if self._owns(s.function_name)}
        self._asked = {k: a for k, a in self._asked.items() if k in specs}
        plan = reconcile({k: s.min_instances for k, s in specs.items()}, self._held, self._asked, time.monotonic(),
                         self._provisioning)
        for key in plan.provision:
            self._spawn(self._reprovision(specs[key]))
        for key, worker in plan.release:
            self._spawn(self._release(specs[key], worker))

    def _owns(self, function_name: str) -> bool:
        try:
            self._stamp(function_name)
        except MistError:
            return False
        return True

    def _spawn(self, order) -> None:
        task = asyncio.create_task(order)
        self._orders.add(task)
        task.add_done_callback(self._orders.discard)

    async def _reprovision(self, spec: SandboxSpec) -> None:
        try:
            started = await self.provision(spec)
        except MistError as exc:
            log.warning("cluster: %s:%s has no live worker keeping its %d provisioned instances, and they could "
                        "not be started again yet (%s); retrying", *spec.key, spec.min_instances, exc.message)
            return
        self._counts["reprovisioned"] += 1
        log.info("cluster: %s:%s had no live worker keeping its provisioned instances: %d started again",
                 *spec.key, started)

    async def _release(self, spec: SandboxSpec, worker: str) -> None:
        """`worker` stops keeping `spec`'s provisioned instances (another keeps enough): they
        become ordinary warm instances, reaped when idle."""
        try:
            await self._order_provision(worker, replace(spec, min_instances=0), *self._stamp(spec.function_name))
        except MistError as exc:
            log.warning("cluster: could not tell worker %s to stop provisioning %s:%s (%s)", worker, *spec.key,
                        exc.message)
            return
        self._counts["provisions_released"] += 1

    # -- what workers tell the control plane (mist/cluster/controlapi.py) -------------------
    async def register(self, body: dict[str, Any]) -> dict[str, Any]:
        info = WorkerInfo(str(body["id"]), str(body["address"]).rstrip("/"), Capacity(**body["capacity"]),
                          warm_from_json(body.get("warm") or {}))
        record = await asyncio.to_thread(self.members.register, info)
        log.info("cluster: worker %s joined from %s (incarnation %d)", info.id, info.address, record.incarnation)
        return {"incarnation": record.incarnation, "interval_s": self.policy.interval_s,
                "lost_after_s": self.policy.timeout_s, "floors": self.floors}

    async def heartbeat(self, worker: str, body: dict[str, Any]) -> dict[str, Any]:
        beat = Heartbeat(Load(**body["load"]), tuple(InstanceReport(**i) for i in body.get("instances", ())),
                         warm_from_json(body.get("warm") or {}))
        incarnation = int(body["incarnation"])
        accepted = await asyncio.to_thread(self.members.heartbeat, worker, incarnation, beat)
        if accepted:
            self._bill(worker, incarnation, body.get("spans") or ())
        return {"accepted": accepted, "floors": self.floors}

    def _bill(self, worker: str, incarnation: int, spans: Any) -> None:
        """Provisioned time the worker reports, each span once (a heartbeat whose reply was lost
        is sent again with the same spans)."""
        seen = self._spans_seen.get((worker, incarnation), 0)
        for s in spans:
            seq = int(s.pop("seq"))
            if seq <= seen:
                continue
            seen = seq
            if self.on_provisioned is not None:
                self.on_provisioned(ProvisionedSpan(**s))
        self._spans_seen[(worker, incarnation)] = seen

    async def drain(self, worker: str) -> bool:
        return await asyncio.to_thread(self.members.set_draining, worker, True)

    async def leave(self, worker: str, incarnation: int) -> bool:
        return await asyncio.to_thread(self.members.leave, worker, incarnation)

    def statistics(self) -> SchedulerStatistics:
        c, t, o = self._counts, self.table.statistics(), self.owner
        oc = o.counts if o is not None else Counter()
        return SchedulerStatistics(
            workers=len(self.table.workers()), healthy=len(self.table.healthy()),
            shards_held=len(self.owner.stamps if self.owner is not None else self._stamps), remote_invocations=c["remote"], local_invocations=c["local"],
            workers_lost=c["workers_lost"], calls_lost=c["calls_lost"], refused_connections=c["refused"],
            stale_epochs=c["stale"], warm_calls=t.warm, new_instances=t.new, queued_calls=t.queued,
            unplaced_calls=t.refused, forwarded_in=c["forwarded_in"],
            forwarded_out=self.router.counts["forwarded_out"] if self.router is not None else 0,
            placed_by_shard=dict(self._by_shard) if self.owner is not None else None,
            map_version=o.follower.version if o is not None else 0, map_changes=oc["map_changes"],
            shard_splits=oc["splits"], shard_merges=oc["merges"],
            leases_acquired=oc["acquired"], leases_released=oc["released"],
            reprovisioned=c["reprovisioned"], provisions_released=c["provisions_released"])


class _Refused(Exception):
    """The worker refused the connection: the order was not delivered."""
