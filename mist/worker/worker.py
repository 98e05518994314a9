"""Worker: runs invocations in isolated sandboxes, keeping warm instances and a prewarmed pool.

    worker = Worker(WorkerConfig(data_dir=...))
    await worker.start()          zygote up, a crashed predecessor's leftovers removed, pool filling
    await worker.invoke(spec, invocation_id, payload) -> InvokeResult
    await worker.retire(name, keep_version=None)
    worker.on_provisioned = f      f(ProvisionedSpan): provisioned instances' time, for billing
    await worker.restart(name, revision)   every instance replaced (the function's secrets changed)
    worker.statistics()           frozen WorkerStatistics
    await worker.stop()           every sandbox and the zygote killed, every cgroup removed

An invocation takes a free slot of a warm instance of spec.key in O(1) (per-function free
lists kept up to date on acquire and release; the most recently released instance first, so
the others can idle out). Only without a free slot does `policy.place` decide: a new instance
(a prewarmed sandbox assigned the function, else the full fork path), evicting prewarmed
sandboxes and least-recently-used idle instances when the memory budget demands, or a wait in
the function's bounded FIFO queue (NoCapacity when full, or when nothing frees up within the
function's timeout). A freed slot is handed to the first waiter directly; waiters decide
again only when the budget, the pool or the set of instances changed. Function errors come back as InvokeResult(ok=False); only
PlatformError is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mist import writeburst
from mist.core import autoscale, flow, keepalive
from mist.core.cpusplit import cpu_list
from mist.errors import MistError, NoCapacity, SandboxFailed
from mist.models import split_id
from mist.worker import isolation, policy
from mist.worker.cgroups import CgroupTree, pids_limit
from mist.worker.codetrees import CodeTrees
from mist.worker.config import WorkerConfig
from mist.worker.lifecycle import State
from mist.worker.network import NetworkStatistics, SandboxNetwork
from mist.worker.sandbox import Sandbox
from mist.worker.spawner import Spawner, SpawnerStatistics, kill_stale_zygote, layer_settings
from mist.worker.types import InvokeResult, ProvisionedSpan, SandboxSpec
from mist.worker.uids import UidRange

log = logging.getLogger("mist.worker")


@dataclass(frozen=True)
class FunctionStatistics:
    name: str
    version: int
    instances: int
    busy: int
    idle: int
    initializing: int
    in_flight: int
    waiting: int
    memory_mb: int
    desired: int = 0  # the autoscaler's last target (instances)
    panicking: bool = False
    scale_reason: str = ""  # what decided `desired` (autoscale.Reason)
    keepalive_s: float | None = None  # the keep-alive policy's decision for the current idle
    prewarm_delay_s: float | None = None  # period (None while busy or not decided yet)
    provisioned: int = 0  # of `instances`, those kept as its provisioned ones (at most min_instances)


@dataclass(frozen=True)
class WorkerStatistics:
    functions: tuple[FunctionStatistics, ...]
    instances: int
    prewarmed: int
    prewarm_target: int
    prewarm_starting: int
    memory_budget_mb: int
    memory_reserved_mb: int
    invocations: int
    cold_starts: int
    pool_cold_starts: int
    timeouts: int
    out_of_memory: int
    crashes: int
    sandboxes_started: int
    sandboxes_failed: int
    reclaimed: int
    waiting: int
    zygote_pid: int | None
    last_cold_start: dict[str, float] = field(default_factory=dict)  # InvokeResult.init_steps of the
    # latest cold start, plus "invoke" (its first invocation, in the sandbox) and "total"
    spawner: SpawnerStatistics | None = None  # the zygote and the zygote tree (layer zygotes)
    network: NetworkStatistics | None = None  # the network of sandboxes with egress
    code_trees: int = 0  # function versions whose code is cloned ahead (mist/worker/codetrees.py)
    code_trees_used: int = 0  # cold starts that found their code cloned ahead


COALESCE_IDLE_S = 1.0  # idle gaps shorter than this do not count as idle periods (see _Demand)


class _Demand:
    """One function version's demand as the autoscaler and the keep-alive policy see it.

    `count` is the invocations inside Worker.invoke (executing + queued); its time integral is
    accumulated on every change (a few float operations on the warm path) and handed to the
    MetricWindow once per tick as that interval's average, which keeps the windows' integrals
    exact at tick times without a MetricWindow record per invocation.

    Keep-alive: the policy hears of an arrival when the count leaves 0, and of an idle period
    when it has stayed 0 for COALESCE_IDLE_S (delivered late, with the time it began as `now`:
    the policies are pure, so the decision is the one they would have made then). Shorter gaps
    between back-to-back calls are not idle periods: no keep-alive decision acts on a gap that
    short, and a policy call per request would cost ~50 us each on the warm path. What an
    arrival teaches the policy is learned after the invocation's answer has left
    (`Worker._learn`): ~0.1 ms of the policy's Python, more on a machine that was idle, is
    not the caller's to wait for.
    """

    __slots__ = ("spec", "aspec", "count", "area", "since", "flushed_at", "window", "state", "idle_since",
                 "idle_pending", "idle_window", "decision", "target")

    def __init__(self, spec: SandboxSpec, aspec: autoscale.AutoscalerSpec, now: float) -> None:
        self.spec = spec
        self.aspec = aspec
        self.count = 0
        self.area = 0.0
        self.since = now
        self.flushed_at = now
        self.window = autoscale.MetricWindow.for_spec(aspec)
        self.state = autoscale.AutoscalerState()
        self.idle_since: float | None = None  # when count last dropped to 0
        self.idle_pending = False  # idle, and the policy has not been told yet
        self.idle_window: autoscale.IdleWindow | None = None  # the policy's decision for this idle period
        self.decision: autoscale.Decision | None = None
        self.target = 0


@dataclass(frozen=True)
class ScaleTick:
    started: int  # instances the tick started (in the background)
    reclaimed: int  # idle instances it killed


class _Slots:
    """One function's warm path: its instances with a free slot and its queued invocations."""

    __slots__ = ("ready", "starting", "waiters")

    def __init__(self) -> None:
        self.ready: dict[str, Sandbox] = {}  # loaded, a free slot; popitem(): the last released
        self.starting: dict[str, Sandbox] = {}  # still initializing, a free slot (concurrency > 1)
        self.waiters: deque[asyncio.Future] = deque()  # FIFO


_TIMED_OUT = object()


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(_TIMED_OUT)


MAX_CONCURRENCY = 1000  # the API's limit; RLIMIT_NPROC must leave room for that many threads
_ERROR_COUNTERS = {"Sandbox.Timedout": "timeouts", "Runtime.OutOfMemory": "out_of_memory",
                   "Runtime.ExitError": "crashes"}


class Worker:
    def __init__(self, config: WorkerConfig, *, clock: Callable[[], float] = time.monotonic,
                 keepalive_policy: keepalive.KeepAlivePolicy | None = None,
                 network: SandboxNetwork | None = None, wall: Callable[[], float] = time.time) -> None:
        """`network`: the egress network of sandboxes (default: from the config; tests pass one
        with another upstream resolver). `wall`: the clock of provisioned spans (billing)."""
        self.config = config.validate()
        self._clock = clock
        self._wall = wall  # provisioned spans are reported in wall-clock time
        self.on_provisioned: Callable[[ProvisionedSpan], None] | None = None
        self._spans: dict[tuple[str, int], tuple[SandboxSpec, policy.OpenSpan]] = {}  # billed provisioning
        data_dir = config.data_dir
        self._root_dir = data_dir / "sandbox-root"
        self._spawner = Spawner(config.python, self._root_dir, data_dir / "zygote.pid", layers=layer_settings(config))
        self._cgroups = CgroupTree(config.cgroup_root, config.instance_tag)
        self._uids = UidRange(config.first_uid, config.uid_count)
        self._network = network or SandboxNetwork(config.network_layout, deny=tuple(config.egress_deny),
                                                  prewarm=config.network_prewarm)
        self._trees = CodeTrees()  # code directories cloned ahead of the cold starts that mount them
        self._trees_due: dict[tuple[str, int], str] = {}  # to clone again once the answers are out
        self._all: dict[str, Sandbox] = {}  # every live sandbox, pooled or not
        self._functions: dict[str, Sandbox] = {}  # sandboxes assigned a function
        self._by_key: dict[tuple[str, int], dict[str, Sandbox]] = {}  # the same, by spec.key
        self._pool: list[Sandbox] = []
        self._pool_starting = 0
        self._reserved: dict[str, int] = {}  # sandbox id -> MB held against the budget
        self._slots: dict[tuple[str, int], _Slots] = {}  # the warm path's free slots and waiters
        self._waiting: Counter[tuple[str, int]] = Counter()
        self._starting: Counter[tuple[str, int]] = Counter()  # instances being started, per key
        self._provisioned: dict[str, SandboxSpec] = {}  # function -> spec whose min_instances to keep
        self._demand: dict[tuple[str, int], _Demand] = {}
        self._keepalive = keepalive_policy or self._keepalive_policy(config)
        self._keepalive_state: dict[str, object] = {}  # function name -> the policy's state
        # arrivals not yet told to the policy, in order: (demand, start of the idle period to
        # report first or None, arrival time, idle seconds or None); see _arrival and _learn
        self._lessons: list[tuple[_Demand, float | None, float, float | None]] = []
        self._answered_due = False  # an _answered is scheduled
        self._revisions: dict[str, int] = {}  # function name -> its secrets' revision (restart)
        self._cold_seconds: deque[list[int]] = deque(maxlen=60)  # [second, instance starts], recent
        self._pool_target_at: tuple[int, int] | None = None  # (second, _pool_target() then)
        self._invocations = 0
        self._last_cold_start: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by start()
        self._destroying: dict[str, asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()
        self._refill: asyncio.Task | None = None
        self._refill_timer: asyncio.TimerHandle | None = None
        self._reaper: asyncio.Task | None = None
        self._zygote_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._run = secrets.token_hex(2)
        self._counters: Counter[str] = Counter()
        self._started = False
        self._stopping = False
        # tenants share the CPU by weight (flow.cpu_shares): set by the server from tenant limits
        self.tenant_weight: Callable[[str], int] = lambda _tenant: 1
        self._cpu_shares: dict[str, int] = {}  # sandbox id -> cpu.shares written

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        self._burst = writeburst.for_loop(self._loop)  # counts invocations in flight (mist/writeburst.py)
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self._root_dir.mkdir(mode=0o755, exist_ok=True)
        kill_stale_zygote(cfg.data_dir / "zygote.pid", self._root_dir)
        await self._remove_leftovers()
        await self._network.reclaim()
        self._cgroups.prepare()
        await self._spawner.start()
        self._join_cpuset()
        self._started = True
        self._reaper = asyncio.create_task(self._scale_loop(), name="mist-worker-autoscaler")
        self._schedule_refill()

    async def stop(self) -> None:
        if not self._started or self._stopping:
            return
        self._stopping = True
        if self._refill_timer is not None:
            self._refill_timer.cancel()
        for key in list(self._spans):
            self._account(key)  # provisioned time ends now
        for task in (self._reaper, self._refill):
            if task is not None:
                task.cancel()
        for task in (self._reaper, self._refill):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._notify()
        sandboxes = list(self._all.values())
        for sb in sandboxes:
            sb.killed_by_worker = True
            self._discard(sb)
        await asyncio.gather(*self._destroying.values(), return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._spawner.stop()
        await self._remove_leftovers()
        await self._network.stop()
        self._trees.close()
        self._started = False

    async def _remove_leftovers(self) -> None:
        """Kill what is left in this data dir's cgroups and remove them (a crashed run's, or ours)."""
        for attempt in range(100):
            groups = self._cgroups.leftovers()
            if all([g.remove() for g in groups]) and self._cgroups.remove_parents():
                return
            await asyncio.sleep(0.02 if attempt < 50 else 0.1)
        log.warning("could not remove every cgroup under %s", self._cgroups.parents)

    # -- invoking -------------------------------------------------------------------------------
    async def invoke(self, spec: SandboxSpec, invocation_id: str, payload: bytes) -> InvokeResult:
        """Run one invocation. Function errors are in the result; raises only PlatformError."""
        if not self._started or self._stopping:
            raise NoCapacity("the worker is not running")
        if spec.memory_mb > self.config.memory_budget_mb:
            raise NoCapacity(
                f"{spec.function_name} needs {spec.memory_mb} MB; this worker's budget is "
                f"{self.config.memory_budget_mb} MB", retry_after=60.0)
        started = self._loop.time()
        demand = self._enter(spec)
        burst = self._burst
        burst.calls += 1
        try:
            # The warm path, O(1): the most recently released instance with a free slot, unless
            # earlier invocations of this function are queued (they come first).
            slots = self._slots.get(spec.key)
            if slots is not None and slots.ready and not slots.waiters:
                sb = slots.ready.popitem()[1]
                sb.acquire()
                if sb.slots < sb.concurrency:
                    slots.ready[sb.id] = sb
            else:
                sb = await self._acquire(spec, self._loop.time() + spec.timeout_s)
            try:
                result = await sb.invoke(invocation_id, payload, init_timeout_s=self.config.init_timeout_s)
            finally:
                self._released(sb)
            redactor = sb.spec.redactor  # the instance's: it masks exactly the values it was given
            if redactor is not None:
                redactor.result(result)
        except MistError:
            raise
        except Exception as exc:  # a bug here must still reach the caller as a platform error
            log.exception("invocation %s of %s:%s failed in the worker", invocation_id, *spec.key)
            raise SandboxFailed(f"the worker failed to run the invocation: {exc!r}") from exc
        finally:
            burst.calls -= 1
            self._leave(demand)
        self._invocations += 1
        if result.cold_start:
            self._counters["cold_starts"] += 1
            if result.init_steps:
                self._last_cold_start = {**result.init_steps, "invoke": round(result.duration_ms, 3),
                                         "total": round((self._loop.time() - started) * 1000, 3)}
            if result.ok and not self._spawner.learned_kb and self.config.prefault == "touched" and sb.alive:
                self._spawner.learn(sb.id)  # until the zygote knows the pages a cold start un-shares
        if result.error is not None:
            counter = _ERROR_COUNTERS.get(str(result.error.get("errorType")))
            if counter:
                self._counters[counter] += 1
        return result

    # -- demand, as the autoscaler and the keep-alive policy see it ----------------------------
    def _enter(self, spec: SandboxSpec) -> _Demand:
        now = self._clock()
        d = self._demand.get(spec.key)
        if d is None:
            d = self._demand[spec.key] = _Demand(spec, self._autoscaler_spec(spec), now)
        d.area += d.count * (now - d.since)
        d.since = now
        if d.count == 0:
            self._arrival(d, now)
        d.count += 1
        return d

    def _leave(self, d: _Demand) -> None:
        now = self._clock()
        d.area += d.count * (now - d.since)
        d.since = now
        d.count -= 1
        if d.count == 0:
            d.idle_since = now
            d.idle_pending = True
        if (d.count == 0 and self._lessons) or self._trees_due:
            self._after_answers()

    def _arrival(self, d: _Demand, now: float) -> None:
        """The count leaves 0: note what the keep-alive policy is to learn (the idle period
        that ended, then the arrival), unless the gap was too short to be an idle period (then
        the busy period just goes on). The policy learns it in `_learn`, once the busy period's
        first answer is out: the bookkeeping here is what the autoscaler reads at once."""
        idle_s = None
        report = None
        if d.idle_since is not None:
            idle_s = now - d.idle_since
            if d.idle_pending:
                if idle_s < COALESCE_IDLE_S:
                    d.idle_pending = False
                    d.idle_since = None
                    return
                report = d.idle_since  # its decision would be dropped below: only the state counts
                d.idle_pending = False
        d.idle_since = None
        d.idle_window = None
        self._lessons.append((d, report, now, idle_s))

    def _after_answers(self) -> None:
        """Schedule `_answered` for after this task's step: after the answer (call_soon), once
        per turn however many invocations ended in it."""
        if not self._answered_due:
            self._answered_due = True
            self._loop.call_soon(self._answered)

    def _answered(self) -> None:
        """The work the answers did not wait for: the keep-alive policy learns, and the code of
        the versions whose clone a cold start used is cloned again (mist/worker/codetrees.py;
        an instance started without an invocation, provisioned or by the autoscaler, has its
        code cloned again after the next invocation's answer)."""
        self._answered_due = False
        self._learn()
        due, self._trees_due = self._trees_due, {}
        if self._stopping or not self._started:  # stop() closed the clones: no new ones
            return
        for key, code_dir in due.items():
            self._trees.prepare(key, code_dir)

    def _learn(self) -> None:
        """Tell the keep-alive policy the arrivals noted by `_arrival`, in order. Runs after
        the answers (`_answered`) and before anything reads the policy's state."""
        lessons, self._lessons = self._lessons, []
        for d, idle_since, now, idle_s in lessons:
            spec, state = self._policy_state(d)
            if idle_since is not None:
                state = self._keepalive.on_idle(spec, state, idle_since)[1]
            self._keepalive_state[d.spec.function_name] = self._keepalive.on_arrival(spec, state, now, idle_s)

    def _policy_state(self, d: _Demand) -> tuple[keepalive.FunctionSpec, object]:
        spec = keepalive.FunctionSpec(d.spec.memory_mb)
        state = self._keepalive_state.get(d.spec.function_name)
        return spec, self._keepalive.initial_state(spec) if state is None else state

    def _report_idle(self, d: _Demand) -> None:
        """Deliver the pending idle period to the keep-alive policy (as of when it began)."""
        assert d.idle_since is not None
        d.idle_pending = False
        if self._lessons:
            self._learn()
        spec, state = self._policy_state(d)
        decision, self._keepalive_state[d.spec.function_name] = self._keepalive.on_idle(spec, state, d.idle_since)
        d.idle_window = autoscale.IdleWindow(d.idle_since, decision.prewarm_delay_s, decision.keepalive_s)

    @staticmethod
    def _keepalive_policy(config: WorkerConfig) -> keepalive.KeepAlivePolicy:
        if config.keepalive_s is not None:
            return keepalive.FixedKeepAlive(config.keepalive_s)
        return keepalive.from_name(config.keepalive_policy)

    def _autoscaler_spec(self, spec: SandboxSpec) -> autoscale.AutoscalerSpec:
        cfg = self.config
        return autoscale.AutoscalerSpec(
            container_concurrency=spec.concurrency, target_utilisation=cfg.target_utilisation,
            stable_window_s=cfg.stable_window_s, panic_window_s=cfg.panic_window_s,
            min_instances=spec.min_instances, max_instances=spec.max_instances,
            tick_interval_s=cfg.autoscale_tick_s,
        )

    async def _acquire(self, spec: SandboxSpec, deadline: float) -> Sandbox:
        """The slow path: a free slot, else `policy.place` decides (start an instance or wait).
        A waiter is woken with a slot handed over (FIFO, one per freed slot) or, when the
        budget or the pool changed, with None to decide again."""
        key = spec.key
        queued = False
        try:
            while True:
                if self._stopping:
                    raise NoCapacity("the worker is stopping")
                slots = self._slots.get(key)
                if slots is None or not slots.waiters:
                    sb = self._take(slots)
                    if sb is not None:
                        return sb
                    decision = self._place(spec)
                    if decision.action == "use":  # not in the free lists (should not happen): use it
                        sb = self._functions[decision.instance_id]  # type: ignore[index]
                        sb.acquire()
                        self._offer(sb)
                        return sb
                    if decision.action == "start":
                        self._evict(decision)
                        return await self._start(spec, decision.from_pool)
                if not queued:
                    if self._waiting[key] >= self.config.queue_limit:
                        raise NoCapacity(
                            f"{spec.function_name}:{spec.version} has {self._waiting[key]} invocations "
                            "waiting already; retry later", queue_full=True)
                    self._waiting[key] += 1
                    queued = True
                remaining = deadline - self._loop.time()
                got = await self._wait(key, remaining) if remaining > 0 else _TIMED_OUT
                if got is _TIMED_OUT:
                    raise NoCapacity(
                        f"no instance of {spec.function_name}:{spec.version} became free within "
                        f"{spec.timeout_s:.2f} seconds", retry_after=min(spec.timeout_s, 5.0))
                if got is not None:
                    return got  # type: ignore[return-value]
        finally:
            if queued:
                self._waiting[key] -= 1
                if self._waiting[key] <= 0:
                    del self._waiting[key]
                    self._drop_slots(key)

    def _take(self, slots: _Slots | None) -> Sandbox | None:
        """A free slot of this function, ready instances before initializing ones."""
        if slots is None:
            return None
        if slots.ready:
            sb = slots.ready.popitem()[1]
        elif slots.starting:
            sb = slots.starting.popitem()[1]
        else:
            return None
        sb.acquire()
        self._offer(sb)
        return sb

    def _offer(self, sb: Sandbox) -> None:
        """File `sb` where the warm path finds it if it has a free slot, else nowhere."""
        slots = self._slots.get(sb.key)
        if slots is None:
            return
        sid = sb.id
        if sb.slots >= sb.concurrency or sb.retiring or sb.failure is not None or not sb.alive:
            slots.ready.pop(sid, None)
            slots.starting.pop(sid, None)
        elif sb.state is State.INITIALIZING:
            slots.starting[sid] = sb
        else:
            slots.starting.pop(sid, None)
            slots.ready[sid] = sb

    async def _wait(self, key: tuple[str, int], timeout: float) -> Sandbox | object | None:
        """Queue for a slot: the Sandbox handed over, None (decide again) or _TIMED_OUT."""
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = _Slots()
        fut = self._loop.create_future()
        slots.waiters.append(fut)
        timer = self._loop.call_later(timeout, _expire, fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and isinstance(fut.result(), Sandbox):
                self._released(fut.result())  # the slot handed over is passed on
            raise
        finally:
            timer.cancel()
            if not fut.done() or fut.cancelled() or fut.result() is _TIMED_OUT:
                with contextlib.suppress(ValueError):
                    slots.waiters.remove(fut)

    def _notify(self) -> None:
        """The budget, the pool or the instances changed: every waiter decides again."""
        if not self._waiting:
            return
        for slots in self._slots.values():
            waiters, slots.waiters = slots.waiters, deque()
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def _drop_slots(self, key: tuple[str, int]) -> None:
        slots = self._slots.get(key)
        if slots is not None and not slots.ready and not slots.starting and not slots.waiters \
                and key not in self._by_key:
            del self._slots[key]

    def _place(self, spec: SandboxSpec) -> policy.Placement:
        """policy.place on this function's instances; the others' views are made only if the
        policy must free budget (a generator: never run otherwise)."""
        key = spec.key
        own = self._by_key.get(key, {})
        return policy.place(
            key, spec.memory_mb, [self._view(sb) for sb in own.values()],
            free_mb=self._free_mb(), pool_size=len(self._pool),
            pool_mb=self.config.prewarm_memory_mb, pool_usable=self._pool_usable(spec),
            max_instances=spec.max_instances, starting=self._starting[key],
            others=(self._view(sb) for sb in self._functions.values() if sb.key != key),
        )

    def _pool_usable(self, spec: SandboxSpec) -> bool:
        """Generic prewarmed sandboxes serve functions without network whose dependencies (if
        any) are not served by a layer zygote (forking from it beats importing them anew)."""
        return not spec.network and not (spec.layer_dir is not None and self.config.zygote_tree)

    def _view(self, sb: Sandbox) -> policy.InstanceView:
        spec = sb.spec
        assert spec is not None
        return policy.InstanceView(sb.id, spec.key, sb.state, sb.in_flight, spec.concurrency,
                                   spec.memory_mb, sb.last_used, sb.retiring)

    def _free_mb(self) -> int:
        """The budget left: instance limits, pool reservations and the layer zygotes' memory
        (the zygote tree evicts those itself beyond layer_zygotes_memory_mb) are taken."""
        layers = self._spawner.layer_zygotes_mb if self.config.zygote_tree else 0.0
        return self.config.memory_budget_mb - sum(self._reserved.values()) - math.ceil(layers)

    def _evict(self, decision: policy.Placement) -> None:
        for _ in range(decision.evict_pool):
            if len(self._pool) > (1 if decision.from_pool else 0):
                self._discard(self._pool.pop(0))
        for sid in decision.evict:
            sb = self._functions.get(sid)
            if sb is not None and sb.in_flight == 0:
                self._discard(sb)

    async def _start(self, spec: SandboxSpec, from_pool: bool) -> Sandbox:
        self._starting[spec.key] += 1
        try:
            return await self._start_instance(spec, from_pool)
        finally:
            self._done_starting(spec.key)

    def _done_starting(self, key: tuple[str, int]) -> None:
        self._starting[key] -= 1
        if self._starting[key] <= 0:
            del self._starting[key]

    async def _start_instance(self, spec: SandboxSpec, from_pool: bool) -> Sandbox:
        self._note_start()
        if from_pool and self._pool and not (self._spawner.alive and self._pool[-1].spawner is self._spawner):
            for stale in list(self._pool):  # built by a zygote that is gone: nobody would report their exit
                self._discard(stale)
        if from_pool and self._pool:
            sb = self._pool.pop()
            self._counters["pool_cold_starts"] += 1  # refilled refill_delay_s after this invocation ends: a fork
            # now would compete for the CPU with the cold start it is replacing
        else:
            sid = self._new_id()
            self._reserved[sid] = spec.memory_mb
            try:
                layer = str(spec.layer_dir) if spec.layer_dir is not None and self.config.zygote_tree else None
                sb = await self._spawn(sid, spec.memory_mb, network=spec.network, layer_dir=layer)
            except BaseException:
                self._reserved.pop(sid, None)
                self._notify()
                raise
            try:
                await sb.wait_ready(self.config.spawn_timeout_s)  # locked down: the code can go in
            except BaseException:
                self._discard(sb)
                raise
        self._reserved[sb.id] = spec.memory_mb
        try:
            if sb.net_slot is not None:
                self._network.apply(sb.net_slot, spec.egress)  # type: ignore[arg-type]
            sb.cgroups.set_memory(spec.memory_mb)
            if spec.concurrency > 1:
                sb.cgroups.set_pids(pids_limit(self.config.pids_max, spec.concurrency))
        except OSError as exc:
            self._discard(sb)
            raise SandboxFailed(f"could not set the memory limit or the network of sandbox {sb.id}: {exc}") from None
        self._attach(sb, spec)
        sb.assign(spec, f"{time.strftime('%Y/%m/%d', time.gmtime())}/[{spec.version}]{sb.id}")
        sb.last_used = self._clock()
        # a spec made before the function's secrets changed (the call was on its way meanwhile):
        # the instance serves that call only, then goes
        if spec.revision < self._revisions.get(spec.function_name, 0):
            sb.retiring = True
        self._functions[sb.id] = sb
        self._by_key.setdefault(spec.key, {})[sb.id] = sb
        slots = self._slots.get(spec.key)
        if slots is None:
            slots = self._slots[spec.key] = _Slots()
        sb.acquire()
        while slots.waiters and sb.slots < sb.concurrency and not sb.retiring:  # concurrency > 1: calls join
            fut = slots.waiters.popleft()
            if not fut.done():
                sb.acquire()
                fut.set_result(sb)
        self._offer(sb)
        return sb

    def _attach(self, sb: Sandbox, spec: SandboxSpec) -> None:
        """Mount the function's code (and layer) in the sandbox, from here: see isolation.attach_code."""
        layer = None if spec.layer_dir is None or self._spawner.has_layer(sb.id) else str(spec.layer_dir)
        code_dir = str(spec.code_dir)
        try:
            if sb.pidfd is None:
                raise OSError("the sandbox is gone")
            t0 = time.perf_counter()
            isolation.attach_code(sb.pidfd, code_dir, layer, self._trees.take(spec.key, code_dir))
            sb.attach_ms = round((time.perf_counter() - t0) * 1000, 3)
            self._trees_due[spec.key] = code_dir  # the next instance's, after the answer (_leave)
        except OSError as exc:
            self._discard(sb)
            raise SandboxFailed(f"could not attach the code of {spec.function_name} to sandbox {sb.id}: {exc}") from None

    def _released(self, sb: Sandbox) -> None:
        """One invocation on `sb` ended: hand its slot to the first waiter of the function, or
        file it as free."""
        if not sb.alive or sb.failure is not None or (sb.retiring and sb.slots <= 1):
            sb.release()
            self._discard(sb)
            self._notify()
        else:
            slots = self._slots.get(sb.key)
            if slots is not None and slots.waiters and not sb.retiring:
                waiters = slots.waiters
                while waiters:
                    fut = waiters.popleft()
                    if not fut.done():
                        fut.set_result(sb)  # the slot changes hands: sb.slots stays
                        return
            sb.release()
            self._offer(sb)
            if self._waiting and sb.slots == 0:
                self._notify()  # waiters of other functions may evict this now idle instance
        if len(self._pool) + self._pool_starting < self._pool_target():
            self._schedule_refill(self.config.refill_delay_s)

    # -- sandboxes ------------------------------------------------------------------------------
    def _new_id(self) -> str:
        return f"s{self._run}-{next(self._ids)}"

    async def _spawn(self, sid: str, memory_mb: int, *, network: bool, pooled: bool = False,
                     layer_dir: str | None = None) -> Sandbox:
        cfg = self.config
        if not self._spawner.alive:
            await self._restart_zygote()
        uid = self._uids.allocate()
        if uid is None:
            raise SandboxFailed(f"all {cfg.uid_count} sandbox uids are in use")
        cgroups = self._cgroups.sandbox(sid)
        slot = None
        try:
            if network:
                slot = await self._network.acquire()
            cgroups.create()
            cgroups.set_limits(memory_mb, cfg.pids_max)
            sb = await asyncio.wait_for(Sandbox.spawn(
                sid, uid, cgroups, self._spawner, network=network, tmp_mb=cfg.tmp_size_mb,
                rlimits={"nofile": cfg.nofile, "nproc": pids_limit(cfg.pids_max, MAX_CONCURRENCY),
                         "fsize": cfg.fsize_mb * 1024 * 1024},
                max_log_lines=cfg.max_log_lines, prefault=cfg.prefault if pooled else "none",
                layer_dir=layer_dir, netns=slot.netns if slot else None,
                dns=self._network.layout.gateway if slot else None, clock=self._clock,
            ), cfg.spawn_timeout_s)
        except BaseException as exc:
            if slot is not None:
                self._network.release(slot)
            self._counters["sandboxes_failed"] += 1
            self._track(self._cleanup(sid, uid, cgroups))
            if isinstance(exc, (SandboxFailed, asyncio.CancelledError)):
                raise
            raise SandboxFailed(f"could not build sandbox {sid}: {exc!r}") from exc
        sb.on_dead = self._on_dead
        sb.net_slot = slot
        self._all[sid] = sb
        self._counters["sandboxes_started"] += 1
        return sb

    async def _restart_zygote(self) -> None:
        """The zygote died (it should not): start a new one. Sandboxes already running keep
        running; their exit statuses are lost (a crash then reads "the sandbox exited")."""
        async with self._zygote_lock:
            if self._spawner.alive or self._stopping:
                return
            log.error("the zygote exited; starting a new one")
            old = self._spawner
            self._spawner = Spawner(self.config.python, self._root_dir, self.config.data_dir / "zygote.pid",
                                    layers=layer_settings(self.config))
            self._track(old.stop())
            await self._spawner.start()
            self._join_cpuset()

    def _on_dead(self, sb: Sandbox) -> None:
        if sb.in_flight == 0:
            self._discard(sb)

    def _discard(self, sb: Sandbox) -> None:
        """Kill a sandbox and clean up after it in the background."""
        sb.kill()
        self._forget_function(sb)
        with contextlib.suppress(ValueError):
            self._pool.remove(sb)
        if sb.id not in self._destroying and sb.id in self._all:
            self._destroying[sb.id] = self._track(self._destroy(sb))
        if not self._stopping:
            self._schedule_refill()

    def _forget_function(self, sb: Sandbox) -> None:
        self._functions.pop(sb.id, None)
        if sb.spec is not None:
            key = sb.spec.key
            slots = self._slots.get(key)
            if slots is not None:
                slots.ready.pop(sb.id, None)
                slots.starting.pop(sb.id, None)
            same = self._by_key.get(key)
            if same is not None:
                same.pop(sb.id, None)
                if not same:
                    del self._by_key[key]
            self._drop_slots(key)
            if key in self._spans:
                self._account(key)

    async def _destroy(self, sb: Sandbox) -> None:
        sb.kill()
        await sb.wait_exit(5.0)
        sb.close()
        if sb.net_slot is not None:
            self._network.release(sb.net_slot)  # type: ignore[arg-type]
            sb.net_slot = None
        await self._cleanup(sb.id, sb.uid, sb.cgroups)
        self._forget_function(sb)
        self._all.pop(sb.id, None)
        self._destroying.pop(sb.id, None)

    async def _cleanup(self, sid: str, uid: int, cgroups) -> None:
        for attempt in range(100):
            if cgroups.remove():
                self._uids.release(uid)
                break
            await asyncio.sleep(0.01 if attempt < 20 else 0.1)
        else:
            log.warning("sandbox %s: cgroups still busy; uid %d not recycled", sid, uid)
        self._spawner.forget(sid)
        self._reserved.pop(sid, None)
        self._notify()

    def _track(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- prewarm pool ---------------------------------------------------------------------------
    def _note_start(self) -> None:
        """Count an instance start (cold start, scale-up or provisioning) for the pool's size."""
        second = int(self._clock())
        if self._cold_seconds and self._cold_seconds[-1][0] == second:
            self._cold_seconds[-1][1] += 1
        else:
            self._cold_seconds.append([second, 1])
        self._pool_target_at = None

    def _pool_target(self) -> int:
        """policy.pool_target over the last minute's starts; asked after every invocation, so
        computed again only when the second or the starts changed."""
        if self.config.prewarm_max == self.config.prewarm:
            return self.config.prewarm
        now = int(self._clock())
        if self._pool_target_at is not None and self._pool_target_at[0] == now:
            return self._pool_target_at[1]
        recent = [n for second, n in self._cold_seconds if now - second < 60]
        target = policy.pool_target(recent, minimum=self.config.prewarm, maximum=self.config.prewarm_max)
        self._pool_target_at = (now, target)
        return target

    def _schedule_refill(self, delay_s: float = 0.0) -> None:
        """Refill the pool now, or in `delay_s` (after an invocation: the fork and the build of
        the new sandbox would otherwise take the CPU from the answer still on its way out)."""
        if self._stopping or not self._started or self.config.prewarm == 0:
            return
        if delay_s > 0:
            if self._refill_timer is None:
                self._refill_timer = self._loop.call_later(delay_s, self._refill_due)
            return
        if self._refill is None or self._refill.done():
            self._refill = asyncio.get_running_loop().create_task(self._fill_pool(), name="mist-worker-prewarm")

    def _refill_due(self) -> None:
        self._refill_timer = None
        self._schedule_refill()

    async def _fill_pool(self) -> None:
        failures = 0
        while not self._stopping:
            n = policy.pool_deficit(
                self._pool_target(), len(self._pool) + self._pool_starting, free_mb=self._free_mb(),
                pool_mb=self.config.prewarm_memory_mb, waiting=sum(self._waiting.values()),
            )
            if n <= 0:
                return
            sid = self._new_id()
            self._reserved[sid] = self.config.prewarm_memory_mb
            self._pool_starting += 1
            try:
                sb = await self._spawn(sid, self.config.prewarm_memory_mb, network=False, pooled=True)
                await sb.wait_ready(self.config.spawn_timeout_s)
            except SandboxFailed as exc:
                failures += 1
                log.error("prewarming a sandbox failed (%d): %s", failures, exc)
                self._reserved.pop(sid, None)
                if sid in self._all:
                    self._discard(self._all[sid])
                if failures >= 3:
                    return
                await asyncio.sleep(0.5 * failures)
                continue
            finally:
                self._pool_starting -= 1
            if sb.alive:
                self._pool.append(sb)
                self._notify()

    # -- keep-alive -----------------------------------------------------------------------------
    async def _scale_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.autoscale_tick_s)
            try:
                self.scale_tick()
            except Exception:  # noqa: BLE001 - a bug here must not stop scaling for good
                log.exception("autoscaler tick failed")
            for spec in list(self._provisioned.values()):
                try:
                    await self._keep_provisioned(spec)
                except MistError as exc:
                    log.warning("could not keep %s:%s provisioned: %s", *spec.key, exc.message)
            self.bill_provisioned()

    def scale_tick(self) -> ScaleTick:
        """One autoscaler tick: for every function version, decide its target instance count
        (`autoscale.scale` on its demand windows, joined with its keep-alive policy's decision
        by `autoscale.keep_alive_plan`) and converge to it: start missing instances in the
        background within the free budget (initialized before traffic, like provisioned ones),
        reclaim idle instances above it (least recently used first). Idle retired instances go
        too. The activator (`_acquire`) still starts instances on demand between ticks."""
        now = self._clock()
        victims = [sb for sb in self._functions.values()
                   if sb.retiring and sb.state is State.IDLE and not sb.in_flight]
        for key in self._by_key.keys() - self._demand.keys():  # never invoked here (provisioned)
            spec = next(iter(self._by_key[key].values())).spec
            if spec is not None:
                self._demand[key] = _Demand(spec, self._autoscaler_spec(spec), now)
        started = 0
        for key, d in list(self._demand.items()):
            if d.idle_pending and d.idle_since is not None and now - d.idle_since >= COALESCE_IDLE_S:
                self._report_idle(d)
            d.area += d.count * (now - d.since)
            d.since = now
            span = now - d.flushed_at
            d.window = autoscale.record(d.window, d.flushed_at, d.area / span if span > 0 else float(d.count))
            d.area, d.flushed_at = 0.0, now
            stable, panic = autoscale.averages(d.window, now)
            live = [sb for sb in self._by_key.get(key, {}).values() if sb.alive and not sb.retiring]
            pending = self._starting.get(key, 0)
            idle_for = now - d.idle_since if d.count == 0 and d.idle_since is not None else 0.0
            after, floor = autoscale.keep_alive_plan(d.idle_window if d.count == 0 else None, now)
            observed = autoscale.Observed(stable, panic, len(live), pending, self._waiting.get(key, 0),
                                          idle_for, after)
            d.decision, d.state = autoscale.scale(d.aspec, observed, d.state, now)
            d.target = autoscale.target_instances(d.aspec, d.decision, floor)
            if d.target > len(live) + pending:
                started += self._scale_up(d.spec, d.target - len(live) - pending)
            elif d.target < len(live):
                idle = [sb for sb in live if sb.state is State.IDLE and sb.in_flight == 0]
                ids = set(policy.reclaimable([self._view(sb) for sb in idle], len(live), d.target, now=now,
                                             min_idle_s=self.config.reclaim_idle_s if d.count else 0.0))
                victims.extend(sb for sb in idle if sb.id in ids)
            prewarm_ahead = (d.idle_window is not None and d.idle_window.prewarm_delay_s > 0
                             and now < d.idle_window.idle_since + d.idle_window.prewarm_delay_s
                             + d.idle_window.keepalive_s)
            if (not live and not pending and d.count == 0 and not prewarm_ahead and not d.idle_pending
                    and idle_for >= d.aspec.stable_window_s):
                del self._demand[key]  # forgotten until its next invocation (the policy state stays)
        for sb in victims:
            self._discard(sb)
        self._counters["reclaimed"] += len(victims)
        self.rebalance_cpu()
        return ScaleTick(started=started, reclaimed=len(victims))

    def rebalance_cpu(self) -> int:
        """Give each instance its cpu.shares so tenants share the CPU by weight whatever their
        number of instances (mist/core/flow.cpu_shares); only changed values are written. How many."""
        live = [(sb.id, split_id(sb.spec.function_name)[0], sb.spec.memory_mb)
                for sb in self._functions.values() if sb.alive and sb.spec is not None]
        weights = {tenant: self.tenant_weight(tenant) for _, tenant, _ in live}
        written = 0
        for sid, shares in flow.cpu_shares(live, weights).items():
            if self._cpu_shares.get(sid) != shares:
                try:
                    self._functions[sid].cgroups.set_cpu_shares(shares)
                except OSError:
                    continue  # the sandbox is going away
                self._cpu_shares[sid] = shares
                written += 1
        for sid in self._cpu_shares.keys() - self._functions.keys():
            del self._cpu_shares[sid]
        return written

    def _scale_up(self, spec: SandboxSpec, n: int) -> int:
        """Start up to n instances of spec in the background, as far as the free budget goes
        (the autoscaler evicts nothing; the activator does when a request needs it)."""
        if not self._started or self._stopping:
            return 0
        free, pool = self._free_mb(), len(self._pool)
        usable = self._pool_usable(spec)
        started = 0
        for _ in range(n):
            from_pool = usable and pool > 0
            need = spec.memory_mb - (self.config.prewarm_memory_mb if from_pool else 0)
            if free < need:
                break
            free -= need
            pool -= from_pool
            self._starting[spec.key] += 1  # now, so the next tick counts it
            self._track(self._prestart(spec, from_pool))
            started += 1
        return started

    async def _prestart(self, spec: SandboxSpec, from_pool: bool) -> None:
        try:
            try:
                sb = await self._start_instance(spec, from_pool and bool(self._pool))
            finally:
                self._done_starting(spec.key)  # counted by _scale_up, so the next tick saw it
            await sb.provisioned(self.config.init_timeout_s)
            self._released(sb)
        except MistError as exc:
            log.warning("autoscaler: could not start an instance of %s:%s: %s", *spec.key, exc.message)

    async def provision(self, spec: SandboxSpec) -> int:
        """Keep spec.min_instances instances of this version loaded at all times (provisioned:
        initialized before any request, so no invocation of theirs is a cold start). Replaces
        the function's previous provisioned version; min_instances 0 stops provisioning.
        Returns how many instances were started now; the reaper keeps the count up later
        (after crashes, or when the memory budget was short)."""
        if self._started and not self._stopping:
            self._trees.prepare(spec.key, str(spec.code_dir))  # its first cold start mounts it sooner
        if spec.layer_dir is not None and self.config.zygote_tree and self._started:
            self._spawner.prepare_layer(str(spec.layer_dir))  # its first cold start is fast too
        if spec.min_instances <= 0:
            self._provisioned.pop(spec.function_name, None)
            self._account_function(spec.function_name)
            return 0
        self._provisioned[spec.function_name] = spec
        self._account_function(spec.function_name)  # a previous version's provisioning ends
        return await self._keep_provisioned(spec)

    async def _keep_provisioned(self, spec: SandboxSpec) -> int:
        if not self._started or self._stopping or self._provisioned.get(spec.function_name) != spec:
            return 0
        live = sum(1 for sb in self._by_key.get(spec.key, {}).values() if sb.alive and not sb.retiring)
        started = 0
        for _ in range(spec.min_instances - live - self._starting[spec.key]):
            usable = bool(self._pool) and self._pool_usable(spec)
            need = spec.memory_mb - (self.config.prewarm_memory_mb if usable else 0)
            if self._free_mb() < need:
                raise NoCapacity(f"{spec.function_name} needs {spec.min_instances} provisioned instances "
                                 f"but the worker's memory budget has room for {live + started}")
            sb = await self._start(spec, from_pool=usable)
            ok = await sb.provisioned(self.config.init_timeout_s)
            self._released(sb)
            if ok:
                started += 1
        self._account(spec.key)
        return started

    def _account(self, key: tuple[str, int]) -> None:
        """Report the provisioned time of a function version up to now (docs/billing.md): its
        ready instances, at most its min_instances, while it is the provisioned version."""
        if self.on_provisioned is None:
            return
        spec = self._provisioned.get(key[0])
        ready = 0
        if spec is not None and spec.key == key and not self._stopping:
            ready = min(spec.min_instances, sum(
                1 for sb in self._by_key.get(key, {}).values()
                if sb.alive and not sb.retiring and sb.state in (State.IDLE, State.BUSY)))  # fmt: skip
        held = self._spans.get(key)
        if held is None and ready == 0:
            return
        billed_spec = held[0] if held is not None else spec
        assert billed_spec is not None
        closed, open_span = policy.accrue(held[1] if held else None, ready, int(self._wall() * 1000))
        if open_span is None:
            del self._spans[key]
        else:
            self._spans[key] = (billed_spec, open_span)
        if closed is not None:
            n, start_ms, end_ms = closed
            self.on_provisioned(ProvisionedSpan(key[0], key[1], billed_spec.tenant, billed_spec.memory_mb, n,
                                                start_ms, end_ms))  # fmt: skip

    def bill_provisioned(self) -> None:
        """Report every provisioned version's time up to now (each autoscaler tick calls this,
        so billed time never waits for the provisioning to end)."""
        for key in list(self._spans):
            self._account(key)

    def stop_provisioning(self) -> list[str]:
        """This worker is leaving, or was cut off (a cluster worker draining, or taken for lost):
        it keeps no provisioned instances any more, and their provisioned time ends now, so the
        time is not billed twice while another worker starts them for the cluster. The
        instances stay as ordinary warm ones for what is in flight. Returns the functions that
        were provisioned here."""
        names = sorted(self._provisioned)
        self._provisioned.clear()
        for name in names:
            self._account_function(name)
        return names

    def _account_function(self, function_name: str) -> None:
        for key in [k for k in self._spans if k[0] == function_name]:
            self._account(key)
    async def restart(self, function_name: str, revision: int) -> None:
        """Replace every instance of `function_name`: its secrets changed, and `revision` is the
        new SandboxSpec.revision. Idle instances are killed now, busy ones when their
        invocations end (those finish with the old values); an instance still starting from an
        older spec serves only the call that started it. Later calls start new instances. The
        function's keep-alive history stays; its provisioned instances are the caller's to
        start again (FunctionService.restart)."""
        self._revisions[function_name] = max(revision, self._revisions.get(function_name, 0))
        self._learn()
        history = self._keepalive_state.get(function_name)
        await self.retire(function_name, None)
        if history is not None:
            self._keepalive_state[function_name] = history

    async def retire(self, function_name: str, keep_version: int | None = None) -> None:
        """Stop serving `function_name` (every version but keep_version): idle instances are
        killed now, busy ones when their invocations end."""
        self._learn()  # what the retired versions' arrivals taught stays in the function's history
        self._trees.drop(function_name, keep_version)
        for key in [k for k in self._trees_due if k[0] == function_name and k[1] != keep_version]:
            del self._trees_due[key]
        kept = self._provisioned.get(function_name)
        if kept is not None and kept.version != keep_version:
            del self._provisioned[function_name]
            self._account_function(function_name)
        for key in [k for k in self._demand if k[0] == function_name and k[1] != keep_version]:
            del self._demand[key]
        if keep_version is None:
            self._keepalive_state.pop(function_name, None)  # deleted: its history goes too
        for sb in list(self._functions.values()):
            spec = sb.spec
            if spec is None or spec.function_name != function_name or spec.version == keep_version:
                continue
            sb.retiring = True
            self._offer(sb)
            if sb.in_flight == 0:
                self._discard(sb)

    # -- statistics -----------------------------------------------------------------------------
    def statistics(self) -> WorkerStatistics:
        by_key: dict[tuple[str, int], list[Sandbox]] = {}
        for sb in self._functions.values():
            if sb.spec is not None and sb.alive:
                by_key.setdefault(sb.spec.key, []).append(sb)
        keys = sorted(set(by_key) | set(self._waiting) | set(self._demand))
        functions = tuple(self._function_statistics(k, by_key.get(k, [])) for k in keys)
        c = self._counters
        return WorkerStatistics(
            functions=functions, instances=sum(f.instances for f in functions),
            prewarmed=len(self._pool), prewarm_target=self._pool_target(),
            prewarm_starting=self._pool_starting, memory_budget_mb=self.config.memory_budget_mb,
            memory_reserved_mb=sum(self._reserved.values()), invocations=self._invocations,
            cold_starts=c["cold_starts"], pool_cold_starts=c["pool_cold_starts"],
            timeouts=c["timeouts"], out_of_memory=c["out_of_memory"], crashes=c["crashes"],
            sandboxes_started=c["sandboxes_started"], sandboxes_failed=c["sandboxes_failed"],
            reclaimed=c["reclaimed"], waiting=sum(self._waiting.values()),
            zygote_pid=self._spawner.pid, last_cold_start=dict(self._last_cold_start),
            spawner=self._spawner.statistics(), network=self._network.statistics(),
            code_trees=len(self._trees), code_trees_used=self._trees.used,
        )

    def _function_statistics(self, key: tuple[str, int], sandboxes: list[Sandbox]) -> FunctionStatistics:
        d = self._demand.get(key)
        window = d.idle_window if d is not None and d.count == 0 else None
        kept = self._provisioned.get(key[0])
        provisioned = 0
        if kept is not None and kept.key == key:
            provisioned = min(kept.min_instances, sum(not sb.retiring for sb in sandboxes))
        return FunctionStatistics(
            name=key[0], version=key[1], instances=len(sandboxes),
            busy=sum(sb.state is State.BUSY for sb in sandboxes),
            idle=sum(sb.state is State.IDLE for sb in sandboxes),
            initializing=sum(sb.state is State.INITIALIZING for sb in sandboxes),
            in_flight=sum(sb.in_flight for sb in sandboxes),
            waiting=self._waiting.get(key, 0),
            memory_mb=sum(sb.spec.memory_mb for sb in sandboxes if sb.spec),
            desired=d.target if d is not None else 0,
            panicking=bool(d is not None and d.decision is not None and d.decision.panicking),
            scale_reason=str(d.decision.reason) if d is not None and d.decision is not None else "",
            keepalive_s=window.keepalive_s if window is not None else None,
            prewarm_delay_s=window.prewarm_delay_s if window is not None else None,
            provisioned=provisioned,
        )

    async def wait_prewarmed(self, timeout: float = 10.0) -> bool:
        """Until the pool holds `prewarm` sandboxes (tests and benchmarks)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self._pool) < self.config.prewarm:
            if asyncio.get_running_loop().time() > deadline:
                return False
            self._schedule_refill()
            await asyncio.sleep(0.005)
        return True

    @property
    def cgroup_parents(self) -> dict[str, os.PathLike]:
        return dict(self._cgroups.parents)

    # -- the sandboxes' CPUs (mist/core/cpusplit.py) ------------------------------------------------
    def _join_cpuset(self) -> None:
        """The zygote, before it forks anything, into the sandboxes' cpuset group: every sandbox
        it forks is then in it too."""
        pid = self._spawner.pid
        if pid is not None:
            try:
                self._cgroups.join_cpuset(pid)
            except OSError as exc:
                log.warning("the sandboxes' CPUs cannot be set (joining %s: %s)", self._cgroups.cpuset, exc)
                self._cgroups.has_cpuset = False

    @property
    def sandbox_cpus_settable(self) -> bool:
        return self._started and self._cgroups.has_cpuset

    def set_sandbox_cpus(self, cpus: frozenset[int]) -> None:
        """Let every sandbox (running or to come) use only `cpus`. OSError if the host refuses."""
        self._cgroups.set_cpus(cpu_list(cpus))
