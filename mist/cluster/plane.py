"""`mist up --cluster-listen`: the control plane accepts worker agents (`mist worker --join`).

`ClusterPlane.start` picks the coordination stores (PostgreSQL with `--cluster-db`, else
in-memory ones on the real clock: one control plane, state lost at restart, which workers
survive by registering again), starts the Scheduler (shard leases, membership watch) and
serves the cluster API on its own socket. `mist/server.py` then hands the Scheduler to the
InvocationService and the FunctionService in place of the embedded Worker, which the Scheduler
keeps using while no worker has joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import uvicorn

from mist.cluster.controlapi import build_cluster_app
from mist.cluster.membership import HealthPolicy
from mist.cluster.scheduler import Scheduler, SchedulerSettings
from mist.errors import InvalidRequest
from mist.testing.cluster import MemoryLeaseStore, MemoryMembership


@dataclass(frozen=True)
class ClusterOptions:
    listen: str  # HOST:PORT of the cluster API
    token: str
    db: str | None = None  # postgresql+psycopg://... for membership and leases; None: in memory
    worker_timeout_s: float = 10.0  # silent this long, a worker is lost (heartbeats every fifth of it)
    shards: int = 16
    lease_ttl_s: float = 5.0
    advertise: str | None = None  # the cluster API's URL for the other schedulers (default: http://LISTEN)
    balance_s: float = 30.0  # how often the shard manager evens the schedulers' load; 0: never

    @property
    def url(self) -> str:
        return (self.advertise or f"http://{self.listen}").rstrip("/")

    def validate(self) -> ClusterOptions:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidRequest(f"--cluster-listen must be HOST:PORT, got {self.listen!r}")
        if len(self.token) < 16:
            raise InvalidRequest("--cluster-token must be at least 16 characters (workers present it, and "
                                 "the control plane presents it to them); generate one with `openssl rand -hex 24`")
        if self.lease_ttl_s < 0.5:
            raise InvalidRequest(f"--shard-lease-ttl must be >= 0.5 s, got {self.lease_ttl_s}")
        if self.balance_s < 0:
            raise InvalidRequest(f"--shard-balance must be >= 0 s (0: never), got {self.balance_s}")
        if self.db and not self.advertise and self.listen.rpartition(":")[0].strip("[]") in ("0.0.0.0", "::", ""):
            raise InvalidRequest(f"--cluster-listen {self.listen} is no address the other schedulers can reach: "
                                 "pass --cluster-advertise http://THIS-HOST:PORT")
        if self.worker_timeout_s < 1:
            raise InvalidRequest(f"--worker-timeout must be >= 1 s, got {self.worker_timeout_s}")
        return self

    @property
    def policy(self) -> HealthPolicy:
        t = self.worker_timeout_s
        return HealthPolicy(interval_s=t / 5, late_after_s=t / 2, timeout_s=t)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def memory_stores(timeout_s: float) -> tuple[MemoryMembership, MemoryLeaseStore]:
    """Membership and leases in this process, on the real clock (no --cluster-db). Epochs start
    at the wall clock in microseconds: workers keep the epochs they have seen across a restart
    of the control plane, so its new epochs must be above every one the old process granted
    (it grants far fewer than one per microsecond)."""
    members = MemoryMembership(_utcnow, timeout_s=timeout_s)  # type: ignore[arg-type]
    leases = MemoryLeaseStore(_utcnow, first_epoch=time.time_ns() // 1000)  # type: ignore[arg-type]
    return members, leases


class ClusterPlane:
    def __init__(self, scheduler: Scheduler, server: uvicorn.Server, sock: socket.socket, url: str,
                 engine: Any | None) -> None:
        self.scheduler = scheduler
        self.url = url
        self._server = server
        self._sock = sock
        self._engine = engine
        self.process_statistics: Callable[[], dict[str, Any]] | None = None  # the process's components
        self._serving: asyncio.Task | None = None

    @classmethod
    async def start(cls, opts: ClusterOptions, data_dir: Path, local: Any, blobs: Any | None = None) -> ClusterPlane:
        from mist.server import StartupError, _listen

        try:
            opts.validate()
        except InvalidRequest as exc:
            raise StartupError(exc.message) from None
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per order otherwise
        host, _, port = opts.listen.rpartition(":")
        sock = _listen(host.strip("[]"), int(port), "--cluster-listen")
        bound_host, bound_port = sock.getsockname()[:2]
        url = opts.url if opts.advertise or int(port) else f"http://{bound_host}:{bound_port}"
        holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        engine, owner = None, None
        if opts.db:
            from mist.cluster.directory import PgSchedulerDirectory
            from mist.cluster.owners import OwnerSettings, ShardOwner
            from mist.cluster.pg import connect
            from mist.cluster.sqlleases import PgLeaseStore
            from mist.cluster.sqlmembership import PgMembership
            from mist.cluster.sqlshardmap import PgShardMapStore

            engine = await asyncio.to_thread(connect, opts.db)
            members: Any = PgMembership(engine=engine, timeout_s=opts.worker_timeout_s)
            leases: Any = PgLeaseStore(engine=engine)
            owner = ShardOwner(leases, PgShardMapStore(engine=engine), PgSchedulerDirectory(engine=engine),
                               OwnerSettings(holder, url, opts.shards, opts.lease_ttl_s, opts.balance_s))
        else:
            members, leases = memory_stores(opts.worker_timeout_s)
        scheduler = Scheduler(members, leases, SchedulerSettings(opts.token, holder, opts.policy, opts.shards,
                                                                 opts.lease_ttl_s), local=local, owner=owner)
        await scheduler.start()
        made: list[ClusterPlane] = []  # the app answers statistics once the plane exists
        app = build_cluster_app(scheduler, opts.token, data_dir / "code", data_dir / "layers",
                                data_dir / "cluster-archives", blobs,
                                statistics=lambda: made[0].served_statistics())
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                               http="httptools", timeout_graceful_shutdown=2))
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # signals are the main server's
        plane = cls(scheduler, server, sock, f"http://{bound_host}:{bound_port}", engine)
        made.append(plane)
        plane._serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not plane._serving.done():
            await asyncio.sleep(0.01)
        return plane

    def statistics(self) -> dict[str, Any]:
        return asdict(self.scheduler.statistics())

    def served_statistics(self) -> dict[str, Any]:
        """What `GET /v1/cluster/statistics` answers: every component of this process (set by
        mist/server.py once they run), else the scheduler's alone."""
        if self.process_statistics is not None:
            return self.process_statistics()
        return {"Scheduler": self.statistics()}

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._serving is not None:
            await asyncio.gather(self._serving, return_exceptions=True)
        await self.scheduler.stop()
        self._sock.close()
        if self._engine is not None:
            self._engine.dispose()
