"""A layer zygote: a fork server that has imported one dependency layer's packages (stdlib only).

The zygote (`zygotetree.LayerTree`) forks it and, while it is still root, builds it like a
sandbox (`isolation.enter(pid_ns=False)`, `build_generic` with the layer at /opt/python,
`lock_down_layer_zygote`): its own cgroups, mount, ipc, uts and network namespaces, a
read-only root, its own unprivileged host uid, no capability, NO_NEW_PRIVS and the layer
seccomp filter. Only then does `serve` import the layer's top-level packages (tenant-chosen
code: from here on nothing in this process is trusted) and serve the zygote:

    zygote -> layer zygote   {"op": "refill"}                 make the next standby child
                             {"op": "touched", "ranges"}      pages a cold start un-shares
    layer zygote -> zygote   {"op": "ready", "imported", "skipped"}   once, after the imports
                             {"op": "standby", "pid"}          a child waits for its identity
                             {"op": "standby_failed", "error"}

A standby child is made ahead of need (off the cold start's critical path): an intermediate
forked from here unshares new user, mount, pid, ipc, uts and network namespaces
(`isolation.unshare_layer_child`, unprivileged) and forks the child, pid 1 of them, then
exits; the child closes everything it inherited, sets its hostname, mounts its own /proc and
/tmp, empties its capability bounding set, copies up front the pages a cold start un-shares
(once the zygote learned them) and listens on an abstract socket of its own network namespace,
where nothing else lives (`_child_main`). The zygote makes it a sandbox from outside, checking
it before it hands over anything that will carry tenant data: see `layerchild.py`. From there
on it is a sandbox like any other (READY, the code attached by the Worker, ASSIGN,
`runtime.main`).
"""

from __future__ import annotations

import fcntl
import gc
import keyword
import os
import select
import signal
import socket
import struct
import sys
import traceback
from pathlib import Path

from mist.worker import isolation, protocol, runtime
from mist.worker import syscalls as sc
from mist.worker.protocol import recv_control, send_control

BOOT_ADDRESS = b"\0mist-boot"  # in a child's own network namespace: only the zygote listens there
_PID = struct.Struct("!i")
_NOT_IMPORTED = {"bin", "doc", "docs", "example", "examples", "test", "tests", "testing", "benchmarks",
                 "setup", "conftest", "__pycache__"}
_IMPORT_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "TZ": ":UTC", "HOME": "/tmp",
               "PYTHONPATH": "/opt/python"}


# -- what to import ------------------------------------------------------------------------------

def top_level_names(layer_dir: str | os.PathLike) -> list[str]:
    """The importable top-level names a layer provides, sorted: from each distribution's
    top_level.txt, else its RECORD; for files no distribution claims, the directory itself.
    Private (`_x`), test and documentation names are left out (their packages import them)."""
    root = Path(layer_dir)
    names: set[str] = set()
    claimed = False
    for info in sorted(root.glob("*.dist-info")) + sorted(root.glob("*.egg-info")):
        claimed = True
        top = info / "top_level.txt"
        if top.is_file():
            names.update(line.strip().replace("/", ".").split(".")[0] for line in _lines(top))
            continue
        for line in _lines(info / "RECORD"):
            names.update(_record_name(line.split(",")[0]))
    if not claimed:
        for entry in root.iterdir():
            names.update(_entry_name(entry))
    return sorted(n for n in names if _importable(n))


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def _record_name(path: str) -> list[str]:
    first, sep, _ = path.partition("/")
    if first.startswith("..") or first.endswith((".dist-info", ".data", ".egg-info")):
        return []
    return [first] if sep else [_module_name(first)]


def _entry_name(entry: Path) -> list[str]:
    if entry.is_dir():
        return [entry.name] if (entry / "__init__.py").exists() else []
    return [_module_name(entry.name)]


def _module_name(filename: str) -> str:
    if filename.endswith((".py", ".so", ".pyc")):
        return filename.split(".")[0]
    return ""


def _importable(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_") \
        and name not in _NOT_IMPORTED


def import_layer(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """Import each name; returns (imported, {skipped name: why}). Nothing a package does at
    import (raising, even SystemExit) stops the others."""
    imported: list[str] = []
    skipped: dict[str, str] = {}
    for name in names:
        try:
            __import__(name)
        except BaseException as exc:  # noqa: BLE001 - a package that fails is left for the handler
            skipped[name] = f"{type(exc).__name__}: {exc}"[:500]
        else:
            imported.append(name)
    return imported, skipped


# -- the layer zygote ------------------------------------------------------------------------------

class LayerZygote:
    """Runs in the layer zygote once it is locked down (see the module docstring)."""

    def __init__(self, ctrl: socket.socket, host: isolation.HostLayout) -> None:
        self.ctrl = ctrl
        self.host = host
        self.touched: list[tuple[int, int]] = []  # copied by each standby up front (see zygotetree._learn)

    def serve(self, layer_dir: str) -> None:
        sys.path[:] = ["/opt/python", *self.host.stdlib_paths]
        os.environ.clear()
        os.environ.update(_IMPORT_ENV)
        names = top_level_names("/opt/python") if os.path.isdir("/opt/python") else []
        imported, skipped = import_layer(names)
        isolation.preset_environment(self.host)  # what the layer's imports set is dropped
        gc.collect()
        gc.freeze()  # children share the imported objects; the collector must not un-share them
        send_control(self.ctrl, {"op": "ready", "imported": imported, "skipped": skipped})
        self._make_standby()
        while True:
            message, fds = recv_control(self.ctrl)
            for fd in fds:
                os.close(fd)
            if message is None:
                os._exit(0)
            op = message.get("op")
            if op == "refill":
                self._make_standby()
            elif op == "touched":
                self.touched = [(int(start), int(length)) for start, length in message.get("ranges") or ()]
            self._reap()

    def _make_standby(self) -> None:
        pid_r, pid_w = os.pipe()
        inter = os.fork()
        if inter == 0:
            try:
                os.close(pid_r)
                self.ctrl.close()
                isolation.unshare_layer_child()
                child = os.fork()
                if child == 0:
                    _child_main(self.host, self.touched)  # never returns
                os.write(pid_w, _PID.pack(child))
            except BaseException:  # noqa: BLE001 - reported as standby_failed by the parent
                pass
            os._exit(0)
        os.close(pid_w)
        ready, _, _ = select.select([pid_r], [], [], 5.0)
        data = os.read(pid_r, _PID.size) if ready else b""
        os.close(pid_r)
        os.waitpid(inter, 0)
        if len(data) != _PID.size:
            send_control(self.ctrl, {"op": "standby_failed", "error": "the standby child was not created"})
            return
        send_control(self.ctrl, {"op": "standby", "pid": _PID.unpack(data)[0]})

    @staticmethod
    def _reap() -> None:
        """Children the layer's own code may have started at import."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return


def main(ctrl: socket.socket, layer_dir: str, req: dict, host: isolation.HostLayout) -> None:
    """In the layer zygote just forked from the zygote, still root: build it like a sandbox
    (`req`: its uid, cgroups, rlimits, /tmp size), lock it down, then import and serve."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # what its children inherit
        null = fcntl.fcntl(os.open("/dev/null", os.O_RDWR), fcntl.F_DUPFD, 10)
        fd = fcntl.fcntl(ctrl.detach(), fcntl.F_DUPFD, 10)
        for target in (0, 1, 2):
            os.dup2(null, target)
        os.dup2(fd, 3)
        os.closerange(4, 65536)
        ctrl = socket.socket(fileno=3)
        os.setsid()
        isolation.enter(req, pid_ns=False)
        isolation.build_generic(req, host, layer_dir=layer_dir, proc_options="hidepid=invisible")
        isolation.lock_down_layer_zygote(int(req["uid"]), host)
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which resets it
        if os.getppid() == 1:
            os._exit(0)
    except BaseException:  # noqa: BLE001 - reported, then exit
        try:
            send_control(ctrl, {"op": "failed", "error": traceback.format_exc()})
        except OSError:
            pass
        os._exit(70)
    LayerZygote(ctrl, host).serve(layer_dir)
    os._exit(0)


def _child_main(host: isolation.HostLayout, touched: list[tuple[int, int]]) -> None:
    """A standby child, pid 1 of its own namespaces; becomes a sandbox when the zygote connects
    (which it can only once everything inherited is closed here)."""
    try:
        os.closerange(0, 65536)
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (1, 2):
            os.dup2(null, fd)
        isolation.prepare_layer_child(host)
        copied = sc.populate_ranges(touched)  # what the cold start would un-share, copied now
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(BOOT_ADDRESS)
        listener.listen(1)
        boot, _ = listener.accept()  # the zygote, from inside our network namespace
        listener.close()
        build = runtime.Steps()
        go, groups = recv_control(boot, max_fds=3)  # {"op": "go", "tmp_mb"} + our cgroups' directories
        isolation.lock_down_layer_child(int((go or {}).get("tmp_mb") or 16), groups, host, build.mark)
        send_control(boot, {"op": "ready"})
        message, fds = recv_control(boot, max_fds=3)  # {"op": "run"} + channel, output pipe
        boot.close()
        if message is None or message.get("op") != "run" or len(fds) != 2:
            os._exit(72)
        chan, out = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in fds)  # clear of 0-3
        for target, fd in ((1, out), (2, out), (3, chan)):
            os.dup2(fd, target)
        os.closerange(4, 65536)
        sock = socket.socket(fileno=3)
        sock.set_inheritable(False)
    except BaseException:  # noqa: BLE001 - the zygote sees the child go before it is ready
        os._exit(71)
    sock.sendall(protocol.encode(protocol.READY, {"pid": os.getpid(), "steps": build.durations(),
                                                  "prefaulted_kb": copied // 1024}))
    runtime.main(sock, isolation.function_finish(host))
    os._exit(0)
