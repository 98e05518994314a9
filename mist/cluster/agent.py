"""The worker agent: a machine's Worker (sandboxes) behind an HTTP API the control plane calls,
and its membership in the cluster (register, heartbeat, drain, leave).

    POST /v1/agent/invoke      an order (mist/cluster/wire.py) -> the result, framed
    POST /v1/agent/provision   keep a version's min_instances warm here
    POST /v1/agent/retire      stop serving a function (every version but one)
    POST /v1/agent/restart     replace a function's instances (its secrets changed)
    GET  /v1/agent/status      the worker's statistics, the fence's floors
    GET  /healthz

Every request must carry `Authorization: Bearer <cluster token>` (401 otherwise): only the
control plane may order anything. Every order carries the shard lease it was sent under and its
epoch; the agent's `Fence` refuses an epoch older than one it has seen or learned from the
heartbeat replies (StaleEpoch, 409), so a scheduler that lost its lease can start nothing here.

Membership (docs/cluster.md): the agent registers through the control plane
(`POST /v1/cluster/workers`), which writes the membership store — worker hosts run tenants'
code and hold no database credentials. It heartbeats every `interval_s` (the control plane
says how often) with its load, warm set and instances; each reply carries the shards' epoch
floors. A refused heartbeat (the cluster took this worker for lost) makes it drop every
instance and register again as a new incarnation. On SIGTERM it drains (takes no new
instance; the control plane sends it nothing new), waits for its calls in flight, and leaves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mist.cluster import wire
from mist.cluster.codecache import CodeCache
from mist.cluster.planes import ControlPlanes
from mist.cluster.leases import Fence
from mist.cluster.membership import Capacity, InstanceReport, Load, Warm, warm_json
from mist.core.provisioning import billable_until
from mist.errors import MistError, SandboxFailed, Unauthenticated
from mist.worker import Worker
from mist.worker.types import ProvisionedSpan, SandboxSpec

log = logging.getLogger("mist.agent")


@dataclass(frozen=True)
class AgentConfig:
    worker_id: str
    address: str  # how the control plane reaches this agent: http://HOST:PORT
    join_url: str  # the control plane's cluster API: http://HOST:PORT (several: comma-separated, mist/cluster/planes.py)
    token: str
    capacity: Capacity
    drain_timeout_s: float = 30.0


class Agent:
    def __init__(self, worker: Worker, config: AgentConfig, client: httpx.AsyncClient, cache: CodeCache) -> None:
        self.worker = worker
        self.config = config
        self.fence = Fence()
        self._client = client
        self._planes = ControlPlanes(config.join_url)
        self._cache = cache
        self._specs: dict[tuple[str, int], SandboxSpec] = {}
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.incarnation = 0
        self.interval_s = 2.0
        self.lost_after_s = 10.0  # the control plane takes a worker silent this long for lost
        self._accepted_ms: int | None = None  # when the last accepted register or heartbeat was sent
        # (before the control plane noted it: so the cut-off below never reaches past its clock)
        self.registered = asyncio.Event()
        self.draining = False
        self._membership: asyncio.Task | None = None
        self._shards: set[str] = set()  # the lease names the control plane sent floors for
        self._spans: list[dict[str, Any]] = []  # provisioned time not yet acknowledged (billing)
        self._span_seq = 0
        worker.on_provisioned = self._provisioned
        self._counts: Counter[str] = Counter()
        self.app = Starlette(routes=[
            Route("/v1/agent/invoke", self._invoke, methods=["POST"]),
            Route("/v1/agent/provision", self._provision, methods=["POST"]),
            Route("/v1/agent/retire", self._retire, methods=["POST"]),
            Route("/v1/agent/restart", self._restart, methods=["POST"]),
            Route("/v1/agent/status", self._status, methods=["GET"]),
            Route("/healthz", lambda _r: Response(b"ok"), methods=["GET"]),
        ])

    # -- orders -------------------------------------------------------------------------------
    def _authorize(self, request: Request) -> None:
        if not wire.token_ok(request.headers.get(wire.TOKEN_HEADER), self.config.token):
            raise Unauthenticated("the cluster token is missing or wrong: only the control plane may send orders")

    async def _spec(self, head: dict[str, Any]) -> SandboxSpec:
        self.fence.check(head["shard"], int(head["epoch"]))  # before anything is fetched or started
        d = head["spec"]
        code_dir = await self._cache.code_dir(d["code"])
        layer_dir = await self._cache.layer_dir(d["layer"]) if d.get("layer") else None
        spec = wire.spec_from_json(d, code_dir, layer_dir)
        self._specs[spec.key] = spec
        return spec

    async def _invoke(self, request: Request) -> Response:
        try:
            self._authorize(request)
            head, payload = wire.unframe(await request.body())
            spec = await self._spec(head)
            self._enter()
            try:
                result = await self.worker.invoke(spec, head["invocation_id"], payload)
            finally:
                self._exit()
        except MistError as exc:
            return self._error(exc)
        except (ValueError, KeyError, TypeError) as exc:
            return self._error(SandboxFailed(f"the order could not be read ({exc!r}): is the control plane "
                                             "the same mist version as this worker?"))
        self._counts["invocations"] += 1
        return Response(wire.encode_result(result), media_type="application/octet-stream")

    async def _provision(self, request: Request) -> Response:
        try:
            self._authorize(request)
            head, _ = wire.unframe(await request.body())
            started = await self.worker.provision(await self._spec(head))
        except MistError as exc:
            return self._error(exc)
        return JSONResponse({"started": started})

    async def _retire(self, request: Request) -> Response:
        return await self._function_order(request, lambda b: self.worker.retire(b["function"], b.get("keep_version")))

    async def _restart(self, request: Request) -> Response:
        return await self._function_order(request, lambda b: self.worker.restart(b["function"], int(b["revision"])))

    async def _function_order(self, request: Request, act) -> Response:
        """An order about a whole function (JSON: function, shard, epoch, ...): fenced, then `act(body)`."""
        try:
            self._authorize(request)
            body = await request.json()
            self.fence.check(body["shard"], int(body["epoch"]))
            await act(body)
        except MistError as exc:
            return self._error(exc)
        return JSONResponse({"done": body["function"]})

    async def _status(self, request: Request) -> Response:
        try:
            self._authorize(request)
        except MistError as exc:
            return self._error(exc)
        stats = self.worker.statistics()
        return JSONResponse({
            "id": self.config.worker_id, "incarnation": self.incarnation, "draining": self.draining,
            "invocations": self._counts["invocations"], "refused": self.fence.statistics().refused,
            "instances": stats.instances, "code_fetched": self._cache.fetched,
            "floors": {name: self.fence.floor(name) for name in self._shards},
        })

    def _error(self, exc: MistError) -> Response:
        if exc.code == "StaleEpoch":
            self._counts["stale"] += 1
            log.warning("%s", exc.message)
        return JSONResponse(wire.error_json(exc), status_code=wire.error_status(exc))

    def _enter(self) -> None:
        self._inflight += 1
        self._idle.clear()

    def _exit(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    # -- membership ---------------------------------------------------------------------------
    def _warm(self) -> Warm:
        spawner = getattr(self.worker.statistics(), "spawner", None)
        zygotes = frozenset(Path(z.layer_dir).parent.name for z in (spawner.layer_zygotes if spawner else ())
                            if z.state == "ready")  # layers/<key>/python: placement prefers these workers
        return Warm(code=self._cache.code(), layers=self._cache.layers(), zygotes=zygotes)

    def _provisioned(self, span: ProvisionedSpan) -> None:
        """The Worker's provisioned time (billed by the control plane's meter): kept until a
        heartbeat that carried it is accepted; each has a number so none is billed twice."""
        self._span_seq += 1
        self._spans.append({"seq": self._span_seq, **asdict(span)})

    def _beat(self) -> dict[str, Any]:
        stats = self.worker.statistics()
        instances = []
        for f in stats.functions:
            spec = self._specs.get((f.name, f.version))
            per = spec.memory_mb if spec else (f.memory_mb // max(1, f.instances))
            for i in range(f.instances):
                instances.append(InstanceReport(f"{f.name}:{f.version}/{i}", f.name, f.version, per,
                                                spec.concurrency if spec else 1, f.in_flight if i == 0 else 0,
                                                i < f.provisioned))
        load = Load(memory_used_mb=stats.memory_reserved_mb, slots_used=stats.instances + stats.prewarmed,
                    inflight=self._inflight)
        return {"incarnation": self.incarnation, "load": asdict(load),
                "instances": [asdict(i) for i in instances], "warm": warm_json(self._warm()),
                "spans": list(self._spans)}

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        # with several control planes, no longer than a heartbeat interval: a paused one accepts
        # connections and never answers, and the next must hear from this worker before it is late
        many = len(self._planes.urls) > 1
        response = await self._planes.request(self._client, "POST", path, json=body,
                                              timeout=min(5.0, max(0.5, self.interval_s)) if many else 5.0)
        if response.status_code == 401:
            raise Unauthenticated(f"the control plane at {self._planes.url} refused this worker's cluster "
                                  "token: give mist worker the control plane's --cluster-token (--token or "
                                  "MIST_CLUSTER_TOKEN)")
        if response.status_code >= 400:
            raise RuntimeError(f"the control plane answered {response.status_code}: {response.text[:300]}")
        return response.json()

    async def register(self) -> None:
        c = self.config
        sent_ms = int(time.time() * 1000)
        reply = await self._post("/v1/cluster/workers", {
            "id": c.worker_id, "address": c.address, "capacity": asdict(c.capacity),
            "warm": warm_json(self._warm()),
        })
        self.incarnation = int(reply["incarnation"])
        self.interval_s = float(reply["interval_s"])
        self.lost_after_s = float(reply.get("lost_after_s", self.lost_after_s))
        self._accepted_ms = sent_ms
        self._learn(reply)
        self.registered.set()
        log.info("joined the cluster at %s as %s (incarnation %d, heartbeat every %.1f s)", c.join_url,
                 c.worker_id, self.incarnation, self.interval_s)

    async def heartbeat(self) -> bool:
        beat = self._beat()
        sent_ms = int(time.time() * 1000)
        reply = await self._post(f"/v1/cluster/workers/{self.config.worker_id}/heartbeat", beat)
        self._learn(reply)
        if reply["accepted"]:
            self._accepted_ms = sent_ms
        if reply["accepted"] and beat["spans"]:
            sent = beat["spans"][-1]["seq"]
            self._spans = [s for s in self._spans if s["seq"] > sent]
        return bool(reply["accepted"])

    def _learn(self, reply: dict[str, Any]) -> None:
        floors = {str(k): int(v) for k, v in (reply.get("floors") or {}).items()}
        self._shards.update(floors)
        self.fence.learn(floors)

    async def run_membership(self) -> None:
        """Register, then heartbeat until cancelled; register again when a heartbeat is refused.
        Raises Unauthenticated if the control plane refuses the token (retrying cannot help)."""
        self._membership = asyncio.current_task()
        while True:
            try:
                await self.register()
            except (httpx.HTTPError, RuntimeError) as exc:
                log.warning("could not join the cluster at %s (%s); retrying", self.config.join_url, exc)
                await asyncio.sleep(1.0)
                continue
            while True:
                await asyncio.sleep(self.interval_s)
                try:
                    accepted = await self.heartbeat()
                except (httpx.HTTPError, RuntimeError) as exc:
                    log.warning("heartbeat failed (%s); retrying", exc)
                    continue
                if not accepted:
                    log.warning("the cluster took this worker for lost (heartbeat refused): dropping its "
                                "instances and joining again as a new incarnation")
                    self._cut_off()
                    await self._drop_instances()
                    break

    def _cut_off(self) -> None:
        """The cluster took this worker for lost: its provisioned instances were started on
        another worker, so it keeps none any more, and of their time not yet billed it reports
        only what came before the cluster could take it for lost (billed once, not twice)."""
        self.worker.stop_provisioning()  # ends the spans now (reported into self._spans)
        if self._accepted_ms is not None:
            self._spans = billable_until(self._spans, self._accepted_ms + int(self.lost_after_s * 1000))

    async def _drop_instances(self) -> None:
        for name in {key[0] for key in self._specs}:
            await self.worker.retire(name, None)
        self._specs.clear()

    async def drain_and_leave(self) -> None:
        """Take nothing new, let calls in flight end (at most drain_timeout_s), leave."""
        self.draining = True
        if not self.registered.is_set():
            return
        # its provisioned instances are started on another worker by their shard's owner (a
        # draining worker's count for nothing): their time ends here, not at the leave, and
        # before the control plane hears of the drain, so never after the other's begins
        if handed := self.worker.stop_provisioning():
            log.info("draining: %d provisioned function(s) handed to the cluster: %s", len(handed), ", ".join(handed))
        path = f"/v1/cluster/workers/{self.config.worker_id}"
        try:
            await self._post(path + "/drain", {"incarnation": self.incarnation})
        except (httpx.HTTPError, RuntimeError) as exc:
            log.warning("could not tell the control plane this worker drains (%s)", exc)
        try:
            await asyncio.wait_for(self._idle.wait(), self.config.drain_timeout_s)
        except asyncio.TimeoutError:
            log.warning("%d calls still running after %.0f s of draining; leaving anyway", self._inflight,
                        self.config.drain_timeout_s)
        if self._membership is not None:  # no heartbeat may follow the leave (it would be refused: rejoin)
            self._membership.cancel()
            await asyncio.gather(self._membership, return_exceptions=True)
        try:
            await self._post(path + "/leave", {"incarnation": self.incarnation})
        except (httpx.HTTPError, RuntimeError) as exc:
            log.warning("could not leave the cluster cleanly (%s); it will take this worker for lost", exc)


def default_capacity(memory_mb: int, cpus: float | None = None, slots: int | None = None) -> Capacity:
    """The machine's: `memory_mb` (the worker's budget), every CPU, a sandbox per 64 MB."""
    cpu = cpus if cpus is not None else float(os.cpu_count() or 1)
    return Capacity(memory_mb=memory_mb, cpu_millis=int(cpu * 1000), slots=slots or max(1, memory_mb // 64))
