"""The zygote: a single-threaded fork server that turns spawn requests into sandboxes.

Started once per Worker as `python -I -S -c <bootstrap> ...` (see `spawner.py`). It imports the
runtime and the common stdlib modules, compiles the seccomp filters, becomes the child
subreaper, then serves the Worker over a SOCK_SEQPACKET control socket, one JSON message per
packet:

    Worker -> zygote   {"op": "spawn", "id", "uid", "cgroups", "rlimits", "tmp_mb", "network",
                        "prefault", "layer_dir"}
                       + SCM_RIGHTS [channel socket, output pipe]   (the zygote closes its copies)
                       {"op": "learn", "id"}
                       {"op": "configure", "layers": {...}}          the zygote tree's settings
                       {"op": "prepare_layer", "layer_dir"}          start that layer's zygote now
    zygote -> Worker   {"op": "hello", "pid"}                        once, when ready
                       {"op": "spawned", "id", "pid"} + SCM_RIGHTS [pidfd of the sandbox]
                       {"op": "spawn_failed", "id", "error"}
                       {"op": "exit", "id", "pid", "status"}         status as from waitpid
                       {"op": "learned", "kb"}
                       {"op": "layers", "zygotes": [...], counters}  the zygote tree changed

A spawn with a `layer_dir` is served by the zygote tree (`zygotetree.py`): a child of that
layer's zygote, which has imported the layer's packages, checked from outside before it is
given the channel; it falls back to the ordinary fork below whenever the tree cannot serve it.

The sandbox's pid 1 is reparented to the zygote (subreaper), which reaps it and reports its
exit status, so the Worker can tell a crash from a kill. EOF on the control socket: the zygote
kills every sandbox it started and exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback

# Pre-imported so sandboxes start with them loaded (shared copy-on-write with the zygote);
# asyncio first, without loading ssl (mist/worker/lazyssl.py).
from mist.worker import lazyssl

lazyssl.import_asyncio()

import base64  # noqa: F401, E402
import collections  # noqa: F401
import concurrent.futures  # noqa: F401
import copy  # noqa: F401
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import enum  # noqa: F401
import functools  # noqa: F401
import hashlib  # noqa: F401
import hmac  # noqa: F401
import itertools  # noqa: F401
import logging  # noqa: F401
import math  # noqa: F401
import random  # noqa: F401
import re  # noqa: F401
import string  # noqa: F401
import typing  # noqa: F401
import urllib.parse  # noqa: F401
import uuid  # noqa: F401

from mist.worker import isolation, protocol, runtime, seccomp
from mist.worker.protocol import recv_control, send_control
from mist.worker import syscalls as sc

_PID = struct.Struct("!i")
SPAWN_TIMEOUT_S = 10.0  # an intermediate that has not forked the sandbox's pid 1 by then failed


@dataclasses.dataclass(slots=True)
class _Pending:
    sid: str
    intermediate: int  # its pid
    deadline: float


class _LazyTree:
    """The zygote tree (zygotetree.LayerTree), imported when the first function with a
    dependency layer needs it: its modules (and pathlib, which they use) would otherwise be
    mapped by every sandbox forked from this zygote, whether or not any function has a layer.
    Until then it holds the Worker's settings and answers as an empty tree."""

    def __init__(self, zygote: "Zygote") -> None:
        self._zygote = zygote
        self._settings: dict = {}
        self._tree = None

    @property
    def tree(self):  # the LayerTree, imported and made now if need be
        if self._tree is None:
            zygotetree = isolation.import_late("mist.worker.zygotetree", self._zygote.host)
            self._tree = zygotetree.LayerTree(self._zygote)  # type: ignore[attr-defined]
            self._tree.configure(self._settings)
        return self._tree

    def configure(self, settings: dict) -> None:
        self._settings = settings
        if self._tree is not None:
            self._tree.configure(settings)

    def accepts(self, req: dict) -> bool:
        return bool(req.get("layer_dir") and self._settings.get("enabled")) and self.tree.accepts(req)

    def spawn(self, req: dict, fds: list[int]) -> None:
        self.tree.spawn(req, fds)

    def prepare(self, key: str) -> None:
        if self._settings.get("enabled"):
            self.tree.prepare(key)

    def is_child(self, sid: str) -> bool:
        return self._tree is not None and self._tree.is_child(sid)

    def learn(self, sid: str) -> None:
        self.tree.learn(sid)

    def forget(self, sid: str) -> None:
        if self._tree is not None:
            self._tree.forget(sid)

    def exited(self, pid: int, status: int) -> bool:
        return self._tree is not None and self._tree.exited(pid, status)

    def owns(self, fd: int) -> bool:
        return self._tree is not None and self._tree.owns(fd)

    def readable(self, fd: int) -> None:
        self.tree.readable(fd)

    def timeout_ms(self) -> int:
        return -1 if self._tree is None else self._tree.timeout_ms()

    def tick(self) -> None:
        if self._tree is not None:
            self._tree.tick()

    def shutdown(self) -> None:
        if self._tree is not None:
            self._tree.shutdown()


class Zygote:
    def __init__(self, ctrl: socket.socket, host: isolation.HostLayout) -> None:
        self.ctrl = ctrl
        self.host = host
        self.children: dict[int, str] = {}  # pid of a sandbox's pid 1 -> sandbox id
        # Pages of this process that a cold start un-shares (learned from a sandbox after its
        # first invocation); pool sandboxes copy just these up front ("touched" prefault).
        self.touched: list[tuple[int, int]] | None = None
        self.poller = select.poll()
        self.pending: dict[int, _Pending] = {}  # pid pipe -> a plain spawn whose pid 1 is not known yet
        self.tree = _LazyTree(self)

    def learn(self, sid: str) -> None:
        """Record which of our writable pages sandbox `sid` has its own copy of by now."""
        if self.tree.is_child(sid):
            self.tree.learn(sid)  # it un-shares its layer zygote's pages, not ours
            return
        pid = next((p for p, s in self.children.items() if s == sid), None)
        if pid is None or self.touched is not None:
            return
        try:
            touched = sc.exclusive_pages(pid, sc.writable_private_mappings())
        except OSError:
            return
        size = sum(length for _, length in touched)
        if size >= 64 * sc.PAGE:  # else the sandbox was gone already (a zombie has no pages)
            self.touched = touched
            send_control(self.ctrl, {"op": "learned", "kb": size // 1024})

    # -- the fork path ------------------------------------------------------------------------
    def spawn(self, req: dict, fds: list[int]) -> None:
        if req.get("layer_dir") and self.tree.accepts(req):
            self.tree.spawn(req, fds)
        else:
            self.spawn_plain(req, fds)

    def spawn_plain(self, req: dict, fds: list[int]) -> None:
        """Fork the intermediate and return at once: it enters the sandbox's cgroups and
        namespaces and forks the sandbox's pid 1 while we serve the next request (a burst of
        spawns runs its intermediates side by side instead of one after the other). Its pid
        pipe is polled; `_pid_ready` answers the Worker."""
        sid = req["id"]
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            send_control(self.ctrl, {"op": "spawn_failed", "id": sid, "error": "expected 2 fds"})
            return
        chan, out = fds
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(r)
            self._intermediate(req, chan, out, w)  # never returns
        os.close(w)
        os.close(chan)
        os.close(out)
        self.pending[r] = _Pending(sid, pid, time.monotonic() + SPAWN_TIMEOUT_S)
        self.poller.register(r, select.POLLIN)

    def _pid_ready(self, r: int) -> None:
        """The intermediate wrote the sandbox's pid (or exited without): answer the Worker."""
        p = self.pending.pop(r)
        self.poller.unregister(r)
        try:
            data = os.read(r, _PID.size)
        except OSError:
            data = b""
        os.close(r)
        inner = _PID.unpack(data)[0] if len(data) == _PID.size else None
        self._spawned(p, inner)

    def _spawned(self, p: _Pending, inner: int | None) -> None:
        sid = p.sid
        if inner is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.intermediate, signal.SIGKILL)
            send_control(self.ctrl, {"op": "spawn_failed", "id": sid, "error": "sandbox setup failed"})
            return
        self.children[inner] = sid
        try:
            pidfd = os.pidfd_open(inner)
        except OSError:  # already gone: its exit is reported by the next reap
            send_control(self.ctrl, {"op": "spawned", "id": sid, "pid": inner})
            return
        try:
            send_control(self.ctrl, {"op": "spawned", "id": sid, "pid": inner}, [pidfd])
        finally:
            os.close(pidfd)

    def expire_pending(self) -> None:
        """Spawns whose intermediate did not report within SPAWN_TIMEOUT_S fail."""
        now = time.monotonic()
        for r in [r for r, p in self.pending.items() if p.deadline <= now]:
            p = self.pending.pop(r)
            self.poller.unregister(r)
            os.close(r)
            self._spawned(p, None)

    def _intermediate(self, req: dict, chan: int, out: int, pidpipe: int) -> None:
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            devnull = os.open("/dev/null", os.O_RDONLY)
            # Move every fd above 10 first so the dup2s below cannot clobber one another.
            devnull, out, chan, pidpipe = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (devnull, out, chan, pidpipe))
            for target, fd in ((0, devnull), (1, out), (2, out), (3, chan), (4, pidpipe)):
                os.dup2(fd, target)
            os.closerange(5, 65536)
            os.setsid()  # no controlling terminal: a Ctrl-C meant for mist never reaches a sandbox
            isolation.enter(req)
            inner = os.fork()
            if inner:
                os.write(4, _PID.pack(inner))
                os._exit(0)
            os.close(4)
            self._sandbox_main(req)
        except BaseException:  # noqa: BLE001 - reported on the channel, then exit
            _report_failure(3, traceback.format_exc())
        os._exit(70)

    def _sandbox_main(self, req: dict) -> None:
        sock = socket.socket(fileno=3)
        sock.set_inheritable(False)
        build = runtime.Steps()
        try:
            isolation.build_generic(req, self.host)
            build.mark("build_generic")
            isolation.lock_down(req, self.host, build.mark)
        except BaseException:  # noqa: BLE001
            _report_failure(3, traceback.format_exc())
            os._exit(71)
        prefault = req.get("prefault")
        copied = 0
        if prefault == "all":
            copied = sc.populate_writable_memory()
        elif prefault == "touched" and self.touched:
            copied = sc.populate_ranges(self.touched)
        build.mark("prefault")
        sock.sendall(protocol.encode(protocol.READY, {"pid": os.getpid(), "steps": build.durations(),
                                                      "prefaulted_kb": copied // 1024}))
        runtime.main(sock, isolation.function_finish(self.host))
        os._exit(0)

    # -- reaping and serving ------------------------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            sid = self.children.pop(pid, None)
            if sid is None:
                self.tree.exited(pid, status)
                continue
            self.tree.forget(sid)
            send_control(self.ctrl, {"op": "exit", "id": sid, "pid": pid, "status": status})

    def shutdown(self) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.children.clear()
        self.tree.shutdown()

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        send_control(self.ctrl, {"op": "hello", "pid": os.getpid()})
        poller = self.poller
        poller.register(self.ctrl, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        tree = self.tree
        while True:
            timeout = tree.timeout_ms()
            if self.pending:
                timeout = 1000 if timeout is None or timeout < 0 else min(timeout, 1000)
            for fd, _events in poller.poll(timeout):
                if fd in self.pending:
                    self._pid_ready(fd)
                    continue
                if fd == wake_r:
                    try:
                        while os.read(wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                if tree.owns(fd):
                    tree.readable(fd)
                    continue
                if fd != self.ctrl.fileno():
                    continue
                message, fds = recv_control(self.ctrl)
                if message is None:
                    self.shutdown()
                    return
                op = message.get("op")
                if op == "spawn":
                    self.spawn(message, fds)
                elif op == "learn":
                    self.learn(message.get("id"))
                elif op == "configure":
                    tree.configure(message.get("layers") or {})
                elif op == "prepare_layer":
                    tree.prepare(str(message.get("layer_dir") or ""))
                else:
                    for f in fds:
                        os.close(f)
            self.reap()
            tree.tick()
            if self.pending:
                self.expire_pending()


def _report_failure(fd: int, text: str) -> None:
    try:
        os.write(fd, protocol.encode(protocol.FAILED, {"error": text}))
    except OSError:
        pass


def main(ctrl_fd: int, root_dir: str) -> None:
    ctrl = socket.socket(fileno=ctrl_fd)
    ctrl.set_inheritable(False)
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    host = isolation.HostLayout.probe(root_dir)
    without, with_network, host.seccomp_layer = seccomp.compile_in_child()
    host.seccomp = {False: without, True: with_network}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the Worker stops us by closing the socket
    # Sandboxes (forked from here: they inherit it) run as SCHED_BATCH: same CPU share, but a
    # sandbox woken by its next invocation does not preempt the gateway in the middle of its
    # write; it runs when the gateway waits or on the other CPU (docs/sandbox.md, "Scheduling").
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    runtime.warm_up()
    isolation.warm_up(host)
    isolation.prepare_zygote(host)
    gc.collect()
    gc.freeze()  # keep the collector from touching (and un-sharing) the zygote's objects in children
    Zygote(ctrl, host).serve()


if __name__ == "__main__":  # pragma: no cover - started by spawner.py
    main(int(sys.argv[1]), sys.argv[2])
