"""One sandbox as the Worker sees it: a process, its channel, its output pipe, its cgroups.

Contract (methods in the order they are used; see lifecycle.py for the states):

    sb = await Sandbox.spawn(...)   SPAWNING. The zygote forked it; it builds its generic root.
    await sb.wait_ready(t)          -> PREWARMED (pool only). SandboxFailed if setup failed.
    sb.assign(spec, ...)            -> INITIALIZING. Sends ASSIGN (in one write with the first
                                    INVOKE when one follows at once); the caller resized the
                                    cgroup and attached the code (isolation.attach_code).
    await sb.invoke(id, event, ...) one invocation: INVOKE out, LOG*/INIT/RESULT back. The first
                                    invocation after assign is the cold one and carries the init
                                    phase's logs and init_ms. Returns an InvokeResult for success
                                    and for every function error: the handler's exception, the init
                                    error, a timeout (the sandbox is killed), an OOM kill or a crash
                                    (the sandbox is dead). Raises SandboxFailed only when the host
                                    failed to build the sandbox.
    sb.kill()                       SIGKILL to pid 1 of its pid namespace: everything inside dies.
    await sb.wait_exit(t)           the wait status reported by the zygote (None if unknown).
    sb.close()                      releases fds; the Worker then removes the cgroups.

Event ordering on one sandbox: READY before INIT; INIT before the first RESULT; every LOG of an
invocation before its RESULT; OS-level output (fd 1/2 of C code and subprocesses) on the output
pipe is drained before a RESULT is handled, so it lands in the right invocation when exactly
one is in flight. Once dead (EOF on the channel), every pending invocation ends with the
classified exit (OOM, crash, or the timeout that caused the kill).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

from mist import writeburst
from mist.errors import FunctionCrashed, FunctionError, FunctionOutOfMemory, FunctionTimeout, SandboxFailed
from mist.models import split_id
from mist.worker import protocol
from mist.worker.cgroups import SandboxCgroups
from mist.worker.lifecycle import Event, State, transition
from mist.worker.spawner import Spawner
from mist.worker.types import InvokeResult, LogLine, SandboxSpec

log = logging.getLogger("mist.worker")
_BUSY, _IDLE = State.BUSY, State.IDLE


class _Call:
    """One invocation in flight on a sandbox."""

    __slots__ = ("cid", "future", "cold", "timeout_s", "started_wall", "deadline", "logs", "dropped")

    def __init__(self, cid: str, future: asyncio.Future, cold: bool, timeout_s: float, started_wall: float,
                 deadline: float) -> None:
        self.cid = cid  # the call's id on the channel (invocation ids are the caller's and may repeat)
        self.future = future
        self.cold = cold
        self.timeout_s = timeout_s
        self.started_wall = started_wall
        self.deadline = deadline  # loop time; the sandbox is killed if no RESULT came by then
        self.logs: list[LogLine] = []
        self.dropped = 0


def describe_exit(status: int | None) -> str:
    """'exit status 3' / 'signal: segmentation fault' (Lambda's wording) from a wait status."""
    if status is None:
        return "the sandbox exited"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = (signal.strsignal(sig) or f"signal {sig}").lower()
        return f"signal: {name}"
    if os.WIFEXITED(status):
        return f"exit status {os.WEXITSTATUS(status)}"
    return f"wait status {status}"


def classify_exit(status: int | None, oom_killed: bool, memory_mb: int) -> FunctionError:
    """The function error a dead sandbox is reported as (pure)."""
    if oom_killed:
        return FunctionOutOfMemory(memory_mb)
    return FunctionCrashed(describe_exit(status))


class _Channel(asyncio.Protocol):
    def __init__(self, sandbox: "Sandbox") -> None:
        self.sandbox = sandbox
        self.decoder = protocol.FrameDecoder()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except protocol.ProtocolError as exc:
            log.warning("sandbox %s broke the protocol (%s); killing it", self.sandbox.id, exc)
            self.sandbox.kill()
            return
        for frame in frames:
            self.sandbox._on_frame(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.sandbox._on_eof()


class Sandbox:
    def __init__(self, sid: str, uid: int, cgroups: SandboxCgroups, spawner: Spawner,
                 *, network: bool, max_log_lines: int, clock=time.monotonic) -> None:
        self.id = sid
        self.uid = uid
        self.cgroups = cgroups
        self.network = network
        self.spawner = spawner
        self.state = State.SPAWNING
        self.spec: SandboxSpec | None = None
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.calls: dict[str, _Call] = {}
        self.slots = 0  # invocations the Worker placed here and has not released yet
        self.key: tuple[str, int] | None = None  # spec.key once assigned
        self.concurrency = 1  # spec.concurrency once assigned
        self.last_used = clock()
        self.retiring = False
        self.failure: str | None = None
        self.killed_for_timeout = False
        self.killed_by_worker = False  # stop(): invocations in flight are cut short
        self._clock = clock
        self._max_log_lines = max_log_lines
        self._loop = asyncio.get_running_loop()
        self._channel: _Channel | None = None
        self._out_fd: int | None = None
        self._out_partial = b""
        self._ready: asyncio.Future = self._loop.create_future()
        self._init: asyncio.Future = self._loop.create_future()
        self._dead: asyncio.Future = self._loop.create_future()
        self._init_logs: list[LogLine] = []
        self._cold_cid: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._call_ids = itertools.count(1)
        self._init_ms = 0.0
        self._assign_sent = 0.0
        self.attach_ms = 0.0  # the Worker attaching the code, before ASSIGN
        self._held = b""  # ASSIGN, until the first INVOKE (or the next turn of the loop); INVOKE frames
        # until the end of the turn (mist/writeburst.py)
        self._burst = writeburst.for_loop(self._loop)
        self.init_steps: dict[str, float] | None = None
        self.build_steps: dict[str, float] | None = None  # the sandbox's own steps before READY
        self.on_dead: Callable[[Sandbox], None] | None = None
        self.net_slot: object | None = None  # its network.Slot (egress only)

    # -- building -------------------------------------------------------------------------------
    @classmethod
    async def spawn(cls, sid: str, uid: int, cgroups: SandboxCgroups, spawner: Spawner, *,
                    network: bool, tmp_mb: int, rlimits: dict, max_log_lines: int,
                    prefault: str = "none", layer_dir: str | None = None,
                    netns: str | None = None, dns: str | None = None,
                    clock=time.monotonic) -> "Sandbox":
        sb = cls(sid, uid, cgroups, spawner, network=network, max_log_lines=max_log_lines, clock=clock)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            _, protocol_ = await sb._loop.create_unix_connection(lambda: _Channel(sb), sock=parent)
            sb._channel = protocol_
            sb._out_fd = out_r
            sb._loop.add_reader(out_r, sb._on_output)
            request = {"id": sid, "uid": uid, "cgroups": cgroups.tasks_files, "rlimits": rlimits,
                       "tmp_mb": tmp_mb, "network": network, "prefault": prefault,
                       "layer_dir": layer_dir, "netns": netns, "dns": dns, "t0": time.perf_counter()}
            sb.pid, sb.pidfd = await spawner.spawn(request, [child.fileno(), out_w])
        except BaseException:
            sb.close()
            raise
        finally:
            child.close()
            os.close(out_w)
        return sb

    async def wait_ready(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except asyncio.TimeoutError:
            self.kill()
            raise SandboxFailed(f"sandbox {self.id} was not built within {timeout:.1f} s") from None
        self.state = transition(self.state, Event.READY)

    def assign(self, spec: SandboxSpec, log_stream: str) -> None:
        self.state = transition(self.state, Event.ASSIGN)
        self.spec = spec
        self.key = spec.key
        self.concurrency = spec.concurrency
        tenant, name = split_id(spec.function_name)
        header = {
            "function_name": name, "tenant": tenant, "version": spec.version, "handler": spec.handler,
            "memory_mb": spec.memory_mb, "timeout_s": spec.timeout_s, "concurrency": spec.concurrency,
            "env": [list(kv) for kv in spec.env], "code_dir": str(spec.code_dir),
            "layer_dir": str(spec.layer_dir) if spec.layer_dir else None,
            "log_stream": log_stream, "instance_id": self.id,
        }
        self._assign_sent = time.perf_counter()
        # Sent with the first INVOKE if it follows in this turn of the event loop: one write, so
        # the sandbox cannot wake on ASSIGN alone, take the CPU from the Worker before it sent
        # the INVOKE, and then have to sleep again until it comes.
        self._held = protocol.encode(protocol.ASSIGN, header)
        self._loop.call_soon(self.flush)

    # -- invoking -------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Invocations placed on this sandbox (acquired, not yet released)."""
        return self.slots

    @property
    def alive(self) -> bool:
        return self.state is not State.DEAD

    def acquire(self) -> None:
        """Count one more invocation on this sandbox (the caller then awaits `invoke`, then
        calls `release`)."""
        state = self.state
        if state is _BUSY or state is _IDLE:  # the warm path; the same as the ACQUIRE transition
            self.state = _BUSY
        else:
            self.state = transition(state, Event.ACQUIRE)
        self.slots += 1

    def release(self) -> None:
        """One invocation placed here ended; the last one makes the sandbox IDLE."""
        self.slots -= 1
        if self.slots <= 0:
            self.slots = 0
            if self.state is _BUSY:
                self.state = _IDLE  # the DRAIN transition
                self.last_used = self._clock()

    async def provisioned(self, timeout_s: float) -> bool:
        """Wait for the init phase of a sandbox assigned without an invocation (a provisioned
        instance): its first invocation is then warm, as on Lambda. False if init did not end
        in time or the sandbox died."""
        try:
            await asyncio.wait_for(asyncio.shield(self._init), timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            return False
        if self._cold_cid is None:
            self._cold_cid = ""  # no invocation will be reported as this instance's cold start
            for line in self._init_logs:
                log.info("sandbox %s init [%s] %s", self.id, line.stream, self._masked(line.text))
            self._init_logs = []
        return self.alive

    async def invoke(self, rid: str, payload: bytes, *, init_timeout_s: float) -> InvokeResult:
        spec = self.spec
        assert spec is not None
        cid = str(next(self._call_ids))
        cold = self._cold_cid is None
        if cold:
            self._cold_cid = cid
        loop = self._loop
        timeout_s = spec.timeout_s
        limit = timeout_s if self._init.done() else init_timeout_s + timeout_s
        call = _Call(cid, loop.create_future(), cold, timeout_s, time.time(), loop.time() + limit)
        self.calls[cid] = call
        if not self.alive:
            self._finish_dead(call)
        else:
            self._watch(call.deadline)
            self._send(protocol.encode_invoke(cid, rid, int(timeout_s * 1000), payload))
        try:
            kind, frame = await call.future
        finally:
            del self.calls[cid]
        if cold:
            self.spawner.cold_start_done(self.id)  # a layer zygote may learn from it
        if kind == "result" and not call.dropped:
            h = frame.header
            if h.get("ok") is True:  # the warm path
                try:
                    return InvokeResult(
                        True, frame.payload, None, cold, self._init_ms if cold else 0.0, float(h["d"]),
                        int(h["m"]), float(h["s"]), float(h["e"]), self.id, call.logs,
                        self.init_steps if cold else None,
                    )
                except (KeyError, TypeError, ValueError):
                    pass  # malformed: reported below
        return await self._result(call, kind, frame)

    async def _result(self, call: _Call, kind: str, frame: protocol.Frame | None) -> InvokeResult:
        if call.dropped:
            call.logs.append(LogLine(time.time(), "platform", f"{call.dropped} more log lines were dropped"))
        spec = self.spec
        assert spec is not None
        if kind == "result":
            assert frame is not None
            h = frame.header
            try:
                ok = bool(h["ok"])
                failure = None if ok else {"errorType": str(h["error"]["errorType"]),
                                         "errorMessage": str(h["error"]["errorMessage"]),
                                         "stackTrace": list(h["error"].get("stackTrace") or [])}
                return InvokeResult(
                    ok=ok, payload=frame.payload if ok else b"null", error=failure,
                    cold_start=call.cold, init_ms=self._init_ms if call.cold else 0.0,
                    duration_ms=float(h["d"]), max_memory_used_mb=int(h["m"]), started_at=float(h["s"]),
                    ended_at=float(h["e"]), instance_id=self.id, logs=call.logs,
                    init_steps=self.init_steps if call.cold else None,
                )
            except (KeyError, TypeError, ValueError, AttributeError):
                log.warning("sandbox %s sent a malformed result %r; killing it", self.id, h)
                self.kill()
                kind = "malformed"
        if kind == "failed":
            raise SandboxFailed(f"sandbox {self.id} failed to load the function: {self.failure}")
        now = time.time()
        if kind == "timeout":
            error: FunctionError = FunctionTimeout(call.timeout_s)
        elif kind == "malformed":
            error = FunctionCrashed("the runtime sent a malformed result")
        else:
            status = await self.spawner.exit_status(self.id, 2.0)
            error = classify_exit(status, self.cgroups.oom_killed(), spec.memory_mb)
            if self.killed_for_timeout:
                error = FunctionCrashed("signal: killed (another invocation on this instance timed out)")
            elif self.killed_by_worker and isinstance(error, FunctionCrashed):
                error = FunctionCrashed("signal: killed (the worker stopped this instance)")
        return InvokeResult(
            ok=False, error=error.to_lambda(), cold_start=call.cold,
            init_ms=self._init_ms if call.cold else 0.0,
            duration_ms=(now - call.started_wall) * 1000,
            max_memory_used_mb=self.cgroups.max_usage_mb() or spec.memory_mb,
            started_at=call.started_wall, ended_at=now, instance_id=self.id, logs=call.logs,
            init_steps=self.init_steps if call.cold else None,
        )

    # -- timeouts: one timer per sandbox, armed at the earliest deadline of its calls ----------
    def _watch(self, deadline: float) -> None:
        """Make sure the timer fires by `deadline` (warm calls with later deadlines than the
        armed one cost nothing: the timer re-arms itself when it fires)."""
        if self._timer is None or deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer = None
        due = self._timer_at
        expired: list[_Call] = []
        later = None
        for call in self.calls.values():
            if call.future.done():
                continue
            if call.deadline <= due:
                expired.append(call)
            elif later is None or call.deadline < later:
                later = call.deadline
        if expired:
            self._drain_output()
            self.killed_for_timeout = True
            for call in expired:
                call.future.set_result(("timeout", None))
            self.kill()
        elif later is not None:
            self._watch(later)

    def _finish_dead(self, call: _Call) -> None:
        if not call.future.done():
            call.future.set_result(("failed" if self.failure else "dead", None))

    # -- frames from the sandbox ----------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        """Write now, or, while other invocations are in flight, at the end of the turn with
        the other writes (mist/writeburst.py); after what is held (ASSIGN), in one write."""
        if not self._burst.busy(1):
            held, self._held = self._held, b""
            self._write(held + data if held else data)  # a cold start: ASSIGN and the INVOKE in one write
        elif self._held:
            self._held += data  # already due to go at the next turn
        else:
            self._held = data
            self._burst.hold(self)

    def flush(self) -> None:
        """Write what is held (ASSIGN, INVOKE frames of this turn)."""
        data, self._held = self._held, b""
        if data:
            self._write(data)

    def _write(self, data: bytes) -> None:
        transport = self._channel.transport if self._channel is not None else None
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _on_frame(self, frame: protocol.Frame) -> None:
        kind = frame.kind
        if kind == protocol.LOG:
            self._on_log(frame.header.get("id") or "", frame.header.get("s", "stdout"),
                         frame.header.get("t") or time.time(), frame.payload.decode("utf-8", "replace"))
        elif kind == protocol.RESULT:
            if frame.header.get("o", True):  # the runtime saw OS-level output waiting in the pipe
                self._drain_output()
            call = self.calls.get(frame.header.get("id"))
            if call is not None and not call.future.done():
                call.future.set_result(("result", frame))
        elif kind == protocol.INIT:
            self._init_ms = float(frame.header.get("init_ms") or 0.0)
            self._record_steps(frame.header)
            if not self._init.done():
                self._init.set_result(frame.header)
            if self.state is State.INITIALIZING:
                self.state = transition(self.state, Event.INIT_DONE)
            cold = self.calls.get(self._cold_cid) if self._cold_cid is not None else None
            if cold is not None:
                cold.logs[:0] = self._init_logs
                self._init_logs = []
                cold.deadline = self._loop.time() + cold.timeout_s  # the init phase had its own limit
                self._watch(cold.deadline)
        elif kind == protocol.READY:
            steps = frame.header.get("steps")
            self.build_steps = dict(steps, prefaulted_kb=frame.header.get("prefaulted_kb")) \
                if isinstance(steps, dict) else None
            if not self._ready.done():
                self._ready.set_result(frame.header)
        elif kind == protocol.FAILED:
            self.failure = str(frame.header.get("error"))
            log.error("sandbox %s setup failed:\n%s", self.id, self.failure)
            if not self._ready.done():
                self._ready.set_exception(SandboxFailed(f"sandbox {self.id} setup failed: {self.failure}"))
                self._ready.exception()  # retrieved: nobody may be waiting
            for call in self.calls.values():
                self._finish_dead(call)

    def _record_steps(self, header: dict) -> None:
        """The cold start's breakdown: the Worker attaching the code, how long the ASSIGN took
        to be read (a pool sandbox waking up; on the full path, the whole build), the sandbox's
        steps and the total from ASSIGN to INIT."""
        now = time.perf_counter()
        try:
            t0 = float(header.get("t0") or 0.0)
            steps = {str(k): float(v) for k, v in (header.get("steps") or {}).items()}
        except (TypeError, ValueError, AttributeError):
            return
        waited = (t0 - self._assign_sent) * 1000 if t0 else 0.0
        self.init_steps = {"attach": self.attach_ms, "assign_read": round(waited, 3), **steps,
                           "assign_to_init": round((now - self._assign_sent) * 1000, 3)}
        faults = header.get("page_faults")
        if isinstance(faults, int):
            self.init_steps["page_faults"] = float(faults)

    def _masked(self, text: str) -> str:
        """Output of the function for mist's own log: its secret values masked."""
        redactor = self.spec.redactor if self.spec is not None else None
        return redactor.text(text) if redactor is not None else text

    def _on_log(self, cid: str, stream: str, ts: float, text: str) -> None:
        """cid "" = not attributed by the runtime, "?" = OS-level output from the pipe."""
        call = self.calls.get(cid) if cid not in ("", "?") else None
        if call is None and cid in ("", "?") and self.spec is not None and not self._init.done():
            self._init_logs.append(LogLine(ts, stream, text))
            return
        if call is None and len(self.calls) == 1:
            call = next(iter(self.calls.values()))
        if call is None:
            log.info("sandbox %s [%s] %s", self.id, stream, self._masked(text))
        elif len(call.logs) >= self._max_log_lines:
            call.dropped += 1
        else:
            call.logs.append(LogLine(ts, stream, text))

    def _on_output(self) -> None:
        self._drain_output()

    def _drain_output(self) -> None:
        fd = self._out_fd
        if fd is None:
            return
        chunks = []
        eof = False
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError as exc:
                eof = exc.errno != errno.EINTR
                break
            if not data:
                eof = True
                break
            chunks.append(data)
        if chunks:
            lines = (self._out_partial + b"".join(chunks)).split(b"\n")
            self._out_partial = lines.pop()
            if len(self._out_partial) > 65536:
                lines.append(self._out_partial)
                self._out_partial = b""
            now = time.time()
            for line in lines:
                self._on_log("?", "stdout", now, line.decode("utf-8", "replace"))
        if eof:
            self._close_output()

    def _close_output(self) -> None:
        if self._out_fd is not None:
            self._loop.remove_reader(self._out_fd)
            os.close(self._out_fd)
            self._out_fd = None

    def _on_eof(self) -> None:
        self._drain_output()
        self.state = transition(self.state, Event.DIE)
        if not self._dead.done():
            self._dead.set_result(None)
        if not self._ready.done():
            self._ready.set_exception(SandboxFailed(f"sandbox {self.id} exited during setup: {self.failure or ''}"))
            self._ready.exception()
        for call in list(self.calls.values()):
            self._finish_dead(call)
        if self.on_dead is not None:
            self.on_dead(self)

    # -- ending ---------------------------------------------------------------------------------
    def kill(self) -> None:
        self.state = transition(self.state, Event.DIE)
        try:
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            elif self.pid is not None:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def wait_exit(self, timeout: float) -> int | None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._dead), timeout)
        return await self.spawner.exit_status(self.id, timeout)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._channel is not None and self._channel.transport is not None:
            self._channel.transport.close()
        self._close_output()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
