"""How an invocation reaches its shard's owner: the forwarding both a scheduler and a gateway use,
and the gateway's side of it (`mist up --role gateway`: no shard, no placement, no sandbox).

    view = ShardView(maps, directory, OwnerSettings(holder, "", ttl_s=5))   follows; owns nothing
    router = ShardRouter(view, AgentClient(token))
    await router.invoke(spec, invocation_id, payload)      -> the owner's POST /v1/cluster/place

A scheduler's `ShardOwner` (mist/cluster/owners.py) and a gateway's `ShardView` answer the same
`where(function)`: `Here` (only an owner: it holds the lease, it places) or `There` (the owner's
cluster API), waiting up to two TTLs while a shard moves or fails over. `ShardView` borrows
`ShardOwner.where` itself, so the waiting and NotShardOwner rules are one piece of code; what it
needs of its object (`here`, `follower`, `addresses`, `holder`, `settings`, `clock`) is what
`ShardView` has. `ShardRouter.invoke` follows redirects: on NotShardOwner (the owner's map and
ours differ) it polls the map and asks again; an owner it cannot connect to is avoided until the
map names another; at most FORWARDS tries.

`GatewayRouter` is what a gateway's InvocationService and FunctionService call where a
single machine calls its Worker: invocations are forwarded; deploys, secret changes and
provisioned instances are left to the shards' owners, which follow every change themselves
(mist/control/changes.py) and send them to their workers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mist.cluster import wire
from mist.cluster.agentclient import AgentClient, Broken, Unreachable
from mist.cluster.directory import SchedulerDirectory
from mist.cluster.owners import Here, OwnerSettings, ShardOwner, There
from mist.cluster.shardmap import ShardMapFollower, ShardMapStore
from mist.core.sharding import ShardMap
from mist.errors import CoordinationUnavailable, MistError, NotShardOwner, WorkerLost
from mist.worker.types import InvokeResult, SandboxSpec

log = logging.getLogger("mist.cluster")

FORWARDS = 4  # forwards of one call to its shard's owner (map changes, an owner gone)


class ShardView:
    """A follower's knowledge of the shards: the map (polled) and the live schedulers' cluster
    APIs (the directory). It holds no lease and never reports itself, so the shard manager never
    gives it a shard. `step()` is blocking (run it in a thread), every fourth of the TTL."""

    def __init__(self, maps: ShardMapStore, directory: SchedulerDirectory, settings: OwnerSettings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.directory, self.clock = settings, directory, clock
        self.holder = settings.holder
        self.follower: ShardMapFollower[ShardMap] = ShardMapFollower(maps, lambda s: ShardMap.from_json(s.body, s.version))
        self.addresses: dict[str, str] = {}  # live scheduler -> its cluster API

    def step(self) -> None:
        self.follower.poll()
        self.addresses = {r.holder: r.address for r in self.directory.live(self.settings.ttl_s)}

    def here(self, function: str) -> None:
        return None  # a follower places nothing

    where = ShardOwner.where  # the owner's rules exactly (see the module docstring)


class ShardRouter:
    """Sends invocations to their shard's owner, following the map (`view`: a ShardOwner or a
    ShardView). `owned` places a call the view says is `Here` (a scheduler's own shards)."""

    def __init__(self, view: ShardOwner | ShardView, agents: AgentClient) -> None:
        self.view, self.agents = view, agents
        self.counts: Counter[str] = Counter()

    async def invoke(self, spec: SandboxSpec, invocation_id: str, payload: bytes,
                     owned: Callable[[Here, SandboxSpec, str, bytes], Awaitable[InvokeResult]] | None = None,
                     ) -> InvokeResult:
        avoid: set[str] = set()
        for _ in range(FORWARDS):
            where = await self.view.where(spec.function_name, avoid=frozenset(avoid))
            if isinstance(where, Here):
                assert owned is not None, "only a shard owner's view answers Here"
                return await owned(where, spec, invocation_id, payload)
            try:
                return await self.forward(where, spec, invocation_id, payload)
            except NotShardOwner:  # its map was newer than ours (or ours newer than its): read it again
                self.counts["redirects"] += 1
                await asyncio.to_thread(self.view.follower.poll)
            except Unreachable:  # killed or stopped: wait until the map gives its shards to another
                avoid.add(where.owner)
        raise CoordinationUnavailable(f"the shard of {spec.function_name} kept moving while its invocation was "
                                      "forwarded; retry shortly")

    async def forward(self, there: There, spec: SandboxSpec, invocation_id: str, payload: bytes) -> InvokeResult:
        body = wire.encode_order(wire.Order("", 0, invocation_id, spec), payload)
        post = asyncio.ensure_future(self.agents.post(there.address, "/v1/cluster/place", body, spec.timeout_s + 60.0))
        try:
            while not (await asyncio.wait({post}, timeout=self.view.settings.step_s))[0]:
                if there.owner not in self.view.addresses:  # paused or cut off: it stopped reporting for a TTL
                    raise WorkerLost(f"scheduler {there.owner}", "it stopped reporting while placing the invocation")
            status, data = post.result()
        except Broken as exc:
            raise WorkerLost(f"scheduler {there.owner}", f"the connection to {there.address} broke: {exc}") from exc
        finally:
            post.cancel()
        self.counts["forwarded_out"] += 1
        if status == 200:
            result = wire.decode_result(data)
            if spec.redactor is not None:
                spec.redactor.result(result)
            return result
        err = json.loads(data).get("error") or {}
        if err.get("code") == NotShardOwner.code:
            raise NotShardOwner(str(err.get("message")))
        wire.raise_error({"error": err}, f"(through scheduler {there.owner})")
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class RouterOptions:
    db: str  # the cluster's PostgreSQL (the shard map and the scheduler directory)
    token: str  # the cluster token: the schedulers' cluster API asks for it
    lease_ttl_s: float = 5.0  # the schedulers' --shard-lease-ttl: a directory row older than it is gone


@dataclass(frozen=True)
class RouterStatistics:
    schedulers: int  # live schedulers known
    map_version: int
    forwarded_out: int
    redirects: int  # NotShardOwner answers followed


class GatewayRouter:
    """A gateway's stand-in for the Worker: every invocation goes to its shard's owner."""

    def __init__(self, view: ShardView, token: str, engine: Any | None = None) -> None:
        self.view = view
        self.router = ShardRouter(view, AgentClient(token))
        self._engine = engine
        self._task: asyncio.Task | None = None

    @classmethod
    async def start(cls, opts: RouterOptions) -> GatewayRouter:
        from mist.cluster.directory import PgSchedulerDirectory
        from mist.cluster.pg import connect
        from mist.cluster.sqlshardmap import PgShardMapStore

        engine = await asyncio.to_thread(connect, opts.db)
        holder = f"gateway:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        view = ShardView(PgShardMapStore(engine=engine), PgSchedulerDirectory(engine=engine),
                         OwnerSettings(holder, "", ttl_s=opts.lease_ttl_s))
        self = cls(view, opts.token, engine)
        await asyncio.to_thread(view.step)
        self._task = asyncio.create_task(self._follow())
        return self

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.view.settings.step_s)
            try:
                await asyncio.to_thread(self.view.step)
            except MistError as exc:
                log.warning("cluster: %s", exc.message)
            except Exception:  # a bug must not stop the loop that keeps the routes fresh
                log.exception("cluster: following the shard map failed")

    async def invoke(self, spec: SandboxSpec, invocation_id: str, payload: bytes) -> InvokeResult:
        return await self.router.invoke(spec, invocation_id, payload)

    async def retire(self, function_name: str, keep_version: int | None = None) -> None:
        """The owner retires old instances on its workers when it follows the change."""

    async def restart(self, function_name: str, revision: int) -> None:
        """The owner restarts the instances when it follows the secrets change."""

    async def provision(self, spec: SandboxSpec) -> int:
        return 0  # the owner places provisioned instances when it follows the change

    def statistics(self) -> RouterStatistics:
        c = self.router.counts
        return RouterStatistics(len(self.view.addresses), self.view.follower.version, c["forwarded_out"],
                                c["redirects"])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.router.agents.close()
        if self._engine is not None:
            self._engine.dispose()
