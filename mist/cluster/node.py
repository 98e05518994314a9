"""`mist worker --join URL`: one machine's worker agent process.

Start order: data dir lock -> the agent's listening socket (a busy port fails first) -> the
Worker (zygote, a crashed predecessor's sandboxes removed, prewarm pool) -> the agent's HTTP
API -> joining the cluster (retried until the control plane answers). "worker ... ready" is
printed once the API accepts requests. SIGTERM/SIGINT: drain (the control plane sends nothing
new), wait for the calls in flight, leave the cluster, stop the API, kill every sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import uvicorn

from mist.cluster import wire
from mist.cluster.agentclient import AGENT_KEEPALIVE_S
from mist.cluster.agent import Agent, AgentConfig, default_capacity
from mist.cluster.codecache import CodeCache
from mist.errors import MistError
from mist.server import StartupError, _listen, _lock_data_dir, run_main
from mist.worker import Worker, WorkerConfig

log = logging.getLogger("mist.agent")


@dataclass
class NodeOptions:
    join: str  # the control plane's cluster API URL
    token: str
    listen: str = "0.0.0.0:7071"
    advertise: str | None = None  # the URL the control plane reaches this agent at
    data_dir: Path = Path(".mist-worker")
    worker_id: str | None = None
    memory_budget_mb: int | None = None
    cpus: float | None = None
    slots: int | None = None
    prewarm: int | None = None
    drain_timeout_s: float = 30.0
    egress_deny: tuple[str, ...] = ()  # networks no function may reach (besides the cluster's own hosts)
    sandbox_network: str | None = None


def cluster_hosts(*urls: str) -> tuple[str, ...]:
    """The IPv4 addresses (/32) of the control plane and of this agent, which functions with
    egress must not reach (the cluster API and the agents' APIs are for mist alone)."""
    out = []
    for url in urls:
        host = urlsplit(url).hostname
        if not host:
            continue
        try:
            address = ipaddress.ip_address(socket.gethostbyname(host))
        except (OSError, ValueError):
            continue
        if address.version == 4 and not address.is_unspecified:
            out.append(f"{address}/32")
    return tuple(dict.fromkeys(out))


def _address(opts: NodeOptions, bound: tuple[str, int]) -> str:
    if opts.advertise:
        return opts.advertise.rstrip("/")
    host, port = bound[:2]
    if host in ("0.0.0.0", "::"):
        raise StartupError(f"--listen {opts.listen} does not say how the control plane reaches this worker: "
                           "pass --advertise http://ADDRESS:PORT (an address of this machine the control plane can reach)")
    return f"http://{host}:{port}"


async def serve_node(opts: NodeOptions) -> None:
    if len(opts.token) < 16:
        raise StartupError("the cluster token must be at least 16 characters: pass the control plane's "
                           "--cluster-token with --token or MIST_CLUSTER_TOKEN")
    data_dir = opts.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    lock_fd = _lock_data_dir(data_dir)
    host, _, port = opts.listen.rpartition(":")
    if not host or not port.isdigit():
        os.close(lock_fd)
        raise StartupError(f"--listen must be HOST:PORT, got {opts.listen!r}")
    sock = _listen(host.strip("[]"), int(port), "--listen")
    address = _address(opts, sock.getsockname())
    cfg = WorkerConfig(data_dir=data_dir, memory_budget_mb=opts.memory_budget_mb,
                       egress_deny=(*opts.egress_deny, *cluster_hosts(*opts.join.split(","), address)),
                       sandbox_network=opts.sandbox_network)
    if opts.prewarm is not None:
        cfg.prewarm = opts.prewarm
    try:
        cfg.validate()
    except MistError as exc:
        raise StartupError(exc.message) from None
    worker = Worker(cfg)
    client = httpx.AsyncClient(headers={"Authorization": wire.bearer(opts.token)})
    worker_id = opts.worker_id or f"{socket.gethostname()}@{address.split('://', 1)[-1]}"
    agent_cfg = AgentConfig(worker_id, address, opts.join, opts.token,
                            default_capacity(cfg.memory_budget_mb or 0, opts.cpus, opts.slots), opts.drain_timeout_s)
    membership: asyncio.Task | None = None
    try:
        await worker.start()
        agent = Agent(worker, agent_cfg, client, CodeCache(data_dir, client, opts.join))
        server = uvicorn.Server(uvicorn.Config(agent.app, log_level="warning", access_log=False, lifespan="off",
                                               http="httptools", timeout_graceful_shutdown=5,
                                               timeout_keep_alive=AGENT_KEEPALIVE_S))
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # ours, below
        stopping: list[asyncio.Task] = []

        async def shutdown() -> None:
            await agent.drain_and_leave()
            server.should_exit = True

        def on_signal(sig: signal.Signals) -> None:
            log.info("received %s; draining, then leaving the cluster", sig.name)
            if stopping:
                server.should_exit = server.force_exit = True  # a second signal: now
            else:
                stopping.append(asyncio.create_task(shutdown()))

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        refused: list[str] = []
        if server.started:
            membership = asyncio.create_task(agent.run_membership())

            def ended(task: asyncio.Task) -> None:
                if not task.cancelled() and isinstance(task.exception(), MistError):
                    refused.append(task.exception().message)  # type: ignore[union-attr]
                    server.should_exit = True

            membership.add_done_callback(ended)
            print(f"worker {worker_id} ready at {address}, joining {opts.join}  (data in {data_dir})", flush=True)
        await serving
        if refused:
            raise StartupError(refused[0])
    finally:
        if membership is not None:
            membership.cancel()
            await asyncio.gather(membership, return_exceptions=True)
        await worker.stop()
        await client.aclose()
        sock.close()
        os.close(lock_fd)
        log.info("worker stopped")


def run(opts: NodeOptions) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    run_main(serve_node(opts), "mist worker")
