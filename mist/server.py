"""`mist up`: the whole platform in one process tree (gateway + control plane + worker).

Roles (`ServerOptions.role`, docs/cluster.md "Roles"): `all` is everything below; `gateway`
skips the embedded worker and the cluster API and hands invocations to a GatewayRouter (every
one forwarded to its shard's owner); `scheduler` binds no public port and starts no dispatcher,
triggers or S3 (events and triggers enter through gateways), serves the cluster API and runs
until a signal. Both keep the state, the change feed, functions, secrets and the meter.

Start order: data dir lock -> the secrets key (docs/secrets.md) -> listening socket (so a busy
port fails before anything starts) -> price plans (a bad plans file fails here) -> the state
(mist/control/state.py: SQLite in the data dir, or the cluster's PostgreSQL with --db) ->
worker (zygote, stale-sandbox cleanup, prewarm pool) -> record writer -> usage ledger (journal
segments a crash left are imported) -> secrets (opened into memory) -> tenants and keys (the first
start makes the admin key) -> provisioned instances ->
event dispatcher (events left running by a crash are due again at once) -> S3 endpoint (its own
port; uploads cut off by a crash are removed) -> with --db, the change feed (other processes'
changes followed, docs/cluster.md) -> HTTP server. "S3 endpoint at URL" and then
"mist is ready at URL" are printed only once each server accepts requests, and /healthz answers
200 from then on. SIGINT/SIGTERM stop the HTTP and S3 servers, stop the dispatcher (running attempts
get 5 s, other leases are handed back), write pending records, kill every sandbox and remove
every cgroup (the provisioned instances' last span is metered), write the usage ledger out, in
that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import uvicorn

from mist.cluster.plane import ClusterOptions, ClusterPlane
from mist.cluster.router import GatewayRouter, RouterOptions
from mist.control.admission import Admission, tenant_limits
from mist.control.batching import SerialWriter
from mist.control.changes import ChangeFeed
from mist.control.dispatcher import Dispatcher, DispatcherConfig
from mist.control.events import EventService
from mist.control.functions import FunctionService
from mist.control.invocations import InvocationService
from mist.control.layers import BuildJail, LayerStore
from mist.control.queues import QueueService
from mist.control.records import InvocationLog
from mist.control.redislimits import RedisRateLimiter
from mist.control.redispermits import RedisPermits
from mist.control.state import BOOTSTRAP_LOCK, open_state
from mist.control.triggers import (
    SqlTriggerStore,
    TriggerManager,
    dead_letter_queue,
    invoker,
)
from mist.errors import MistError
from mist.gateway.app import build_app
from mist.gateway.cpusplit import LoopCpuSplit
from mist.gateway.services import Services
from mist.gateway.transport import HttpToolsProtocol
from mist.metering import plans
from mist.metering.journal import Journal
from mist.metering.ledger import Ledger
from mist.metering.meter import Meter
from mist.metering.service import BillingService
from mist.s3 import ObjectStore, S3Server
from mist.secrets import SecretService, SqlSecretStore, load_keyring
from mist.tenancy import discovery
from mist.tenancy.audit import AuditLog
from mist.tenancy.service import Tenancy
from mist.triggers.connectors.spec import Tuning, process_instance

USAGE_REFRESH_S = 2.0  # cluster mode: how often each process reads the tenants' month-to-date spend again
from mist.tenancy.store import SqlTenantStore
from mist.cluster.scheduler import Scheduler
from mist.worker import Worker, WorkerConfig

log = logging.getLogger("mist")


class StartupError(MistError):
    code = "StartupError"


@dataclass
class ServerOptions:
    data_dir: Path = Path(".mist")
    host: str = "127.0.0.1"
    port: int = 8080
    keepalive_s: float | None = None  # a fixed idle keep-alive; None: the keep-alive policy decides
    prewarm: int | None = None  # pre-built sandboxes kept ready; None: the worker's default
    keepalive_policy: str | None = None  # mist (default), hybrid-histogram or fixed:MINUTES
    memory_budget_mb: int | None = None  # None: 75 % of the machine's memory
    s3_port: int = 9000  # the S3-compatible endpoint (docs/s3.md); 0: not served
    sandbox_network: str | None = None  # the sandboxes' egress network; None: derived (docs/network.md)
    egress_deny: tuple[str, ...] = ()  # networks no function may reach
    max_inflight: int | None = None  # executions at once on this machine; past it, fair queuing by tenant
    limits_redis: str | None = None  # redis://... : rate and concurrency limits shared by the gateways of a cluster
    trigger_brokers: tuple[str, ...] = ()  # HOST[:PORT] of brokers non-default tenants' queue triggers may read
    plans: Path | None = None  # price plans (docs/billing.md); None: DATA_DIR/plans.toml, else the defaults
    usage_fsync: bool = False  # also msync usage before answering (survives a power cut, not only a crash)
    cpu_split: bool = True  # a busy event loop gets a CPU apart from the sandboxes (mist/core/cpusplit.py)
    secrets_key_file: Path | None = None  # None: MIST_SECRETS_KEY, else DATA/secrets.key (docs/secrets.md)
    secrets_old_key_files: tuple[Path, ...] = ()  # keys being rotated out: what they sealed is sealed again
    db_url: str | None = None  # postgresql+psycopg://... : state shared by a cluster (docs/cluster.md); None: SQLite
    event_lease_s: float | None = None  # async events' lease (another process takes one over once it runs out)
    cluster: ClusterOptions | None = None  # accept worker agents (docs/cluster.md); None: this machine alone
    embedded_worker: bool = True  # False (with cluster): no sandboxes here, invocations only on worker agents
    role: str = "all"  # all, gateway (public API, forwards to owners: needs `route`) or scheduler (cluster API)
    route: RouterOptions | None = None  # role gateway: how it finds the shards' owners

    @property
    def serves_api(self) -> bool:
        """The public API and what enters through it besides HTTP: the event dispatcher, triggers, S3."""
        return self.role in ("all", "gateway")


def _lock_data_dir(data_dir: Path) -> int:
    fd = os.open(data_dir / "mist.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(
            f"another mist is already running with data dir {data_dir}; stop it first or pass another --data-dir"
        ) from None
    return fd


def _listen(host: str, port: int, flag: str = "--port") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot listen on {host}:{port} ({exc.strerror}); is another mist running? pass {flag} to choose another"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _stats(*components: object) -> Callable[[], dict[str, object]]:
    def collect() -> dict[str, object]:
        out: dict[str, object] = {}
        for c in components:
            s = c.statistics()  # type: ignore[attr-defined]
            out[type(c).__name__] = asdict(s) if is_dataclass(s) else s
        return out

    return collect


async def serve(opts: ServerOptions, *, on_ready: Callable[[str], None] | None = None) -> None:
    if opts.role not in ("all", "gateway", "scheduler") or (opts.role == "gateway") != (opts.route is not None) \
            or (opts.role == "scheduler" and opts.cluster is None):
        raise StartupError(f"role {opts.role!r} with route={opts.route is not None} and cluster="
                           f"{opts.cluster is not None}: a gateway needs its route to the schedulers and no other "
                           "role has one, a scheduler needs the cluster API (mist up --role checks this)")
    data_dir = opts.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)  # mist.db, keys, other tenants' code: nobody's but mist's (and root's)
    lock_fd = _lock_data_dir(data_dir)
    try:  # first: MIST_SECRETS_KEY leaves the environment before any process is started
        keyring = load_keyring(data_dir, key_file=opts.secrets_key_file, old_key_files=opts.secrets_old_key_files,
                               shared=opts.db_url is not None)
    except MistError as exc:
        os.close(lock_fd)
        raise StartupError(exc.message) from None
    sock = _listen(opts.host, opts.port) if opts.serves_api else None  # a scheduler: the cluster API only
    s3_sock = _listen(opts.host, opts.s3_port, "--s3-port") if opts.s3_port and opts.serves_api else None
    url = ""
    if sock is not None:
        host, port = sock.getsockname()[:2]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    uploads = data_dir / "uploads"
    uploads.mkdir(exist_ok=True)
    for stale in uploads.iterdir():
        stale.unlink(missing_ok=True)

    try:
        billing_config = plans.find(data_dir, opts.plans)
        state = open_state(data_dir, opts.db_url)  # SQLite in the data dir, or the cluster's PostgreSQL
    except MistError as exc:
        raise StartupError(exc.message) from None
    store = state.store
    worker_cfg = WorkerConfig(data_dir=data_dir)
    if opts.keepalive_s is not None:
        worker_cfg.keepalive_s = opts.keepalive_s
    if opts.prewarm is not None:
        worker_cfg.prewarm = opts.prewarm
        worker_cfg.prewarm_max = max(worker_cfg.prewarm_max, opts.prewarm)
    if opts.keepalive_policy is not None:
        worker_cfg.keepalive_policy = opts.keepalive_policy
    if opts.memory_budget_mb is not None:
        worker_cfg.memory_budget_mb = opts.memory_budget_mb
    worker_cfg.sandbox_network = opts.sandbox_network
    worker_cfg.egress_deny = opts.egress_deny
    worker_cfg.validate()
    worker = Worker(worker_cfg)
    # pip runs tenants' packages' build code: jailed, as its own uid (mist/control/buildjail.py)
    build_jail = BuildJail(worker_cfg.build_uid, f"mist_build_{worker_cfg.instance_tag}",
                           deny=tuple(opts.egress_deny))
    writer = SerialWriter()  # every database write of the process, one at a time (control/batching.py)
    records = InvocationLog(store, writer=writer)
    dispatcher: Dispatcher | None = None
    objects: ObjectStore | None = None
    s3_server: S3Server | None = None
    triggers: TriggerManager | None = None
    tenant_store = SqlTenantStore(store.writes)
    tenancy = Tenancy(tenant_store)
    audit = AuditLog(tenant_store, writer)
    registered = False
    cpu_split: asyncio.Task[None] | None = None
    meter: Meter | None = None
    shared_limits: tuple[RedisRateLimiter, RedisPermits] | None = None
    plane: ClusterPlane | None = None
    gateway: GatewayRouter | None = None
    try:
        await tenancy.start()
        with state.exclusive(BOOTSTRAP_LOCK):  # a cluster's processes starting at once make one admin key
            new_admin_key = await tenancy.bootstrap(data_dir, shared=state.shared)
        await audit.start()
        if opts.embedded_worker:
            await worker.start()
        # the Worker's role (invoke, retire, provision, restart): the embedded worker, or the
        # cluster's scheduler, which uses the embedded worker until a worker agent joins
        runner: Worker | Scheduler | GatewayRouter = worker
        if opts.route is not None:  # role gateway: every invocation goes to its shard's owner
            gateway = await GatewayRouter.start(opts.route)
            runner = gateway
        if opts.cluster is not None:
            plane = await ClusterPlane.start(opts.cluster, data_dir, worker if opts.embedded_worker else None,
                                             blobs=state.blobs)
            runner = plane.scheduler
            print(f"cluster API at {plane.url} (mist worker --join {plane.url})", flush=True)
        await records.start()
        journal = Journal(data_dir / "usage-journal", fsync=opts.usage_fsync)
        meter = Meter(Ledger(store, journal, writer), store, billing_config,
                      refresh_s=USAGE_REFRESH_S if state.shared else None)  # caps see the others' spend
        await meter.start()
        worker.on_provisioned = meter.provisioned
        if plane is not None:
            plane.scheduler.on_provisioned = meter.provisioned  # the worker agents' provisioned time
        secrets = SecretService(SqlSecretStore(store.writes), keyring, writer=writer)
        await secrets.start()
        functions = FunctionService(
            data_dir, store, LayerStore(data_dir / "layers", jail=build_jail), runner.retire,
            provision=runner.provision,
            secrets=secrets, restart=runner.restart, blobs=state.blobs,
            runs_code=opts.route is None,  # a gateway forwards invocations: their code is the workers' to fetch
        )
        limits_of = tenant_limits(tenancy)
        if opts.limits_redis:  # the gateways of a cluster share rate and concurrency limits
            shared_limits = (RedisRateLimiter(opts.limits_redis), RedisPermits(opts.limits_redis))
        admission = Admission(limits_of, node_limit=opts.max_inflight,
                              rates=shared_limits[0] if shared_limits else None,
                              permits=shared_limits[1] if shared_limits else None)
        worker.tenant_weight = lambda t: limits_of(t).weight  # tenants share the CPU by weight
        if plane is not None:  # it starts again the provisioned instances of a lost worker
            plane.scheduler.provisioned = functions.provisioned
        functions.add_check(admission.check_config)
        functions.on_change(admission.function_changed)
        if state.shared:
            await functions.follow()  # the baseline later changes are compared with (just before reading it)
        for summary in await functions.list():
            admission.function_changed(summary.name, summary.latest)
        await functions.provision_all()  # min instances are warm before the first request
        invocations = InvocationService(functions, runner, records, admission=admission, meter=meter)
        events = EventService(functions, store, store, writer)
        # recover: the data dir lock proves no other dispatcher holds these events' leases; with a
        # shared database other live processes may, so only leases run out are taken (claims do that)
        dispatcher = Dispatcher(store, store, events, functions, invocations, writer,
                                _dispatcher_config(opts.event_lease_s), recover=not state.shared)
        if opts.serves_api:  # asynchronous invocations enter where requests do (a scheduler only places)
            await dispatcher.start()
        if s3_sock is not None:
            objects = ObjectStore(data_dir, f"sqlite:///{data_dir / 's3.db'}")
            s3_server = S3Server(objects, s3_sock)
        s3_stats = [s3_server] if s3_server is not None else []
        services = Services(functions, invocations, records, uploads, tenancy,
                            _stats(worker, records, events, dispatcher, *s3_stats),
                            events=events, queues=QueueService(store, events, functions, writer), objects=objects,
                            audit=audit, admission=admission, billing=BillingService(meter, store))  # fmt: skip
        if s3_server is not None:
            await s3_server.start()
            print(f"S3 endpoint at {s3_server.url}", flush=True)
        triggers = TriggerManager(
            SqlTriggerStore(store.writes), enqueue=events.enqueue, invoke=invoker(functions, invocations),
            dead_letter=dead_letter_queue(services.queues), function_exists=functions.get,
            outbox=objects.outbox if objects is not None else None, brokers=opts.trigger_brokers,
            instance=process_instance(worker_cfg.instance_tag[:8]),  # stable per data dir, distinct per process
            tuning=Tuning(visibility_timeout_s=opts.event_lease_s) if opts.event_lease_s else None,
        )
        if opts.serves_api:  # each trigger's events enter where requests do
            await triggers.start()
            services.triggers = triggers
        if state.changes is not None:
            await _follow(state.changes, functions, tenancy, secrets, triggers if opts.serves_api else None, meter)
        cluster_stats = [plane.scheduler] if plane is not None else [gateway] if gateway is not None else []
        services.statistics = _stats(worker, records, events, dispatcher, *s3_stats, triggers, audit, admission,
                                     meter, meter.ledger, secrets, *cluster_stats)
        if plane is not None:  # also on its cluster API: a --role scheduler has no public API
            plane.process_statistics = services.statistics
        if sock is None:  # role scheduler: the cluster API (and its /healthz) is all it serves
            assert plane is not None
            _print_admin_key(new_admin_key, data_dir, found=False)
            await _until_signalled(lambda: (on_ready or _print_scheduler_ready)(plane.url))
            return
        app = build_app(services)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            http=HttpToolsProtocol,  # httptools, each response in one write (mist/gateway/transport.py)
            proxy_headers=False,  # mist up is the edge; X-Forwarded-* are not trusted
            server_header=False,  # no `server: uvicorn`: the stack behind the API is not advertised
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        # uvicorn restores the handlers it found and re-raises the signal it caught once it has
        # shut down; with these in place that re-raise is a no-op, so the cleanup below runs
        # and `mist up` exits 0 after SIGTERM/Ctrl-C instead of dying before its sandboxes do.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _note_signal)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            # what start-up made (modules, the app, caches) lives as long as the server: frozen,
            # full collections stop walking it again (they took 25-160 ms during start-up)
            gc.collect()
            gc.freeze()
            # a young-generation collection every 10,000 net allocations instead of 700: under
            # load it ran every few invocations and each walked the same in-flight objects
            # (~6% of the gateway's CPU per invocation under wrk -c64, docs/benchmarks.md);
            # what dies young is freed by reference counting either way
            gc.set_threshold(10_000, 10, 10)
            if opts.cpu_split and opts.embedded_worker:
                cpu_split = asyncio.create_task(LoopCpuSplit(worker).run(), name="mist-cpu-split")
            discovery.register(url, data_dir)  # the CLI finds this server's admin key by its URL
            registered = True
            _print_admin_key(new_admin_key, data_dir)
            if on_ready:
                on_ready(url)
            else:
                print(f"mist is ready at {url}  (data in {data_dir}; Ctrl-C to stop)", flush=True)
        await serving
    finally:
        if cpu_split is not None:  # every CPU for everyone again
            cpu_split.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cpu_split
        if registered:
            discovery.unregister(url, data_dir)
        if state.changes is not None:
            await state.changes.stop()
        if triggers is not None:
            await triggers.stop()
        if s3_server is not None:
            await s3_server.stop()
        if objects is not None:
            objects.close()
        if s3_sock is not None:
            s3_sock.close()
        if dispatcher is not None:
            await dispatcher.stop()
        await records.stop()
        if plane is not None:
            await plane.stop()
        if gateway is not None:
            await gateway.stop()
        await worker.stop()
        await audit.stop()
        await tenancy.stop()
        build_jail.close()
        if meter is not None:
            await meter.stop()
        for shared in shared_limits or ():
            await shared.close()
        writer.close()
        state.close()
        if sock is not None:
            sock.close()
        os.close(lock_fd)
        log.info("mist stopped")


def _dispatcher_config(lease_s: float | None) -> DispatcherConfig:
    config = DispatcherConfig()
    if lease_s is not None:
        config.lease_s = lease_s
        config.heartbeat_s = min(config.heartbeat_s, lease_s / 3)
    return config


async def _until_signalled(ready: Callable[[], None]) -> None:
    """A process serving no public API (role scheduler) runs until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ready()
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("received a stop signal; stopping")


def _print_admin_key(key: str | None, data_dir: Path, *, found: bool = True) -> None:
    """`found`: this process serves the public API, where the CLI on this machine finds the key."""
    if key is not None:  # the cluster's first process, whatever its role
        how = ("The mist CLI on this machine finds it by itself." if found else
               "This scheduler serves no public API: use it with a gateway (MIST_API_KEY, or copy admin.key "
               "into the gateway's data dir).")
        print(f"Created the admin API key (shown once; also in {data_dir / 'admin.key'}, mode 0600):\n"
              f"  {key}\n{how}", flush=True)


def _print_scheduler_ready(cluster_url: str) -> None:
    print(f"mist scheduler is ready: cluster API at {cluster_url} (no public API: send requests to a gateway; "
          "Ctrl-C to stop)", flush=True)


async def _follow(feed: ChangeFeed, functions: FunctionService, tenancy: Tenancy, secrets: SecretService,
                  triggers: TriggerManager | None, meter: Meter) -> None:
    """What other processes of the cluster change reaches this one's memory (mist/control/changes.py)."""

    async def secrets_changed() -> None:
        for fid in await secrets.follow():
            with contextlib.suppress(MistError):  # a function deleted meanwhile
                await functions.restart(fid)

    feed.on("functions", functions.follow)
    feed.on("tenancy", tenancy.refresh)
    feed.on("secrets", secrets_changed)
    if triggers is not None:
        feed.on("triggers", triggers.follow)
    feed.on("billing", meter.follow)
    await feed.start()


def _note_signal(sig: int, _frame: object) -> None:
    log.info("received %s; stopping", signal.Signals(sig).name)


def run(opts: ServerOptions) -> None:
    """Run until SIGINT/SIGTERM. Exits 1 with a clear message if mist cannot start."""
    run_main(serve(opts), "mist up")


def run_main(main: Coroutine[Any, Any, None], command: str) -> None:
    """Run a server's coroutine on uvloop with mist's logging; a StartupError exits 1 with its message."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    try:
        runner(main)
    except StartupError as exc:
        print(f"{command}: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass
