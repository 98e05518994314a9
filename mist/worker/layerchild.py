"""Making a layer zygote's standby child a sandbox: the zygote's side (root; stdlib only).

    zygote                                        standby child (pid 1 of its namespaces)
    checks it is in the layer zygote's group
    writes /proc/PID/uid_map, gid_map: "k k 1"
    connects to it inside its network namespace   listens there (once it closed all it inherited)
    SO_PEERCRED: the listener is the child
    {"op": "go", "tmp_mb"} + O_PATH handles of    becomes uid k; opens its groups' `tasks` files
      the sandbox's cgroup directories, their       (given to k) and writes 0; sizes /tmp; names
      `tasks` files given to k                      itself in /etc/mist; drops every capability;
                                                    loads the sandbox filter
                                                  {"op": "ready"}
    verify.check_child (everything, from /proc)
    {"op": "run"} + channel, output pipe    -> READY to the Worker: a sandbox like any other

Nothing that will carry tenant data reaches the child before the check; anything that fails
kills the child and leaves the channel and output pipe to the ordinary fork path. Each step's
time is returned ("request": the request's way from the Worker, then one per step).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import time

from mist.worker import isolation, verify
from mist.worker import syscalls as sc
from mist.worker.layerzygote import BOOT_ADDRESS
from mist.worker.protocol import recv_control, send_control

_CRED = struct.Struct("3i")


def adopt(pid: int, req: dict, fds: list[int], *, zygote_pid: int, zygote_tasks: str, cgroup_root: str,
          own_net: int, timeout: float) -> tuple[int, dict[str, float]]:
    """Make standby child `pid` (of the layer zygote `zygote_pid`) sandbox req["id"], as the
    module docstring says. Returns a pidfd of it and the steps' timings in ms; raises (Refused, OSError, TimeoutError...) when refused: the child is then
    killed and `fds` (channel, output pipe) are left untouched for the ordinary path."""
    if len(fds) != 2:
        raise ValueError("expected 2 fds")
    deadline = time.monotonic() + timeout
    t = [time.perf_counter()]
    steps: dict[str, float] = {"request": round((t[0] - float(req.get("t0") or t[0])) * 1000, 3)}

    def mark(step: str) -> None:
        now = time.perf_counter()
        steps[step] = round((now - t[0]) * 1000, 3)
        t[0] = now

    uid = int(req["uid"])
    pidfd = os.pidfd_open(pid)
    conn = None
    try:
        problems = verify.cgroup_problems(verify.read(f"/proc/{pid}/cgroup"), verify.expected_groups(
            [zygote_tasks], cgroup_root))
        if problems:
            raise verify.Refused(f"the standby is not in its layer zygote's group: {problems}")
        userns = os.stat(f"/proc/{pid}/ns/user").st_ino
        isolation.map_identity(pid, uid)  # EPERM unless its own, fresh user namespace
        mark("map")
        if sc.ns_owner(f"/proc/{pid}/ns/net") != userns:
            raise verify.Refused("its network namespace is not its own")
        conn = _connect_in(pid, pidfd, own_net, deadline)  # it listens once it closed what it inherited
        peer = _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))[0]
        if peer != pid:
            raise verify.Refused(f"process {peer} listens in the child's network namespace, not {pid}")
        groups = _cgroup_handles(req["cgroups"], uid)
        try:
            send_control(conn, {"op": "go", "tmp_mb": int(req.get("tmp_mb") or 16)}, groups)
        finally:
            for fd in groups:
                os.close(fd)
        mark("go")
        answer, extra = _recv(conn, pidfd, deadline)
        for fd in extra:
            os.close(fd)
        if answer is None or answer.get("op") != "ready":
            raise verify.Refused(f"it answered {answer!r} instead of getting ready")
        mark("child")
        verify.check_child(pid, pidfd, uid, userns, req["cgroups"], cgroup_root, zygote_pid, zygote_tasks)
        mark("verify")
        send_control(conn, {"op": "run"}, [fds[0], fds[1]])
        for fd in fds:
            os.close(fd)
        mark("run")
        return pidfd, steps
    except BaseException:
        kill(pidfd)
        os.close(pidfd)
        raise
    finally:
        if conn is not None:
            conn.close()


def _connect_in(pid: int, pidfd: int, own_net: int, deadline: float) -> socket.socket:
    """A socket connected to BOOT_ADDRESS inside process `pid`'s network namespace, once
    something listens there (retried until the deadline or the child's exit)."""
    net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        while True:
            sc.setns(net, sc.CLONE_NEWNET)
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
                try:
                    s.connect(BOOT_ADDRESS)
                    return s
                except (ConnectionRefusedError, FileNotFoundError):
                    s.close()
                except OSError:
                    s.close()
                    raise
            finally:
                sc.setns(own_net, sc.CLONE_NEWNET)
            if select.select([pidfd], [], [], 0.001)[0] or time.monotonic() > deadline:
                raise verify.Refused("the child exited or did not listen in time")
    finally:
        os.close(net)


def _wait(sock: socket.socket, pidfd: int, deadline: float, what: str) -> None:
    """Until `sock` is readable; raises when the child exits first or the deadline passes."""
    ready = select.select([sock, pidfd], [], [], max(0.0, deadline - time.monotonic()))[0]
    if sock not in ready:
        raise verify.Refused(f"the child exited before it {what}" if ready else f"the child {what} too late")


def _recv(conn: socket.socket, pidfd: int, deadline: float) -> tuple[dict | None, list[int]]:
    _wait(conn, pidfd, deadline, "answered")
    return recv_control(conn)


def _cgroup_handles(tasks_files: list[str], uid: int) -> list[int]:
    """O_PATH handles of the sandbox's cgroup directories, their `tasks` files given to `uid`:
    the child opens `tasks` itself, with its own credentials, so whatever holds the handle or
    that file can move only processes of that uid (its own) into the group."""
    handles = []
    try:
        for tasks in tasks_files:
            os.chown(tasks, uid, uid)
            handles.append(os.open(os.path.dirname(tasks), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
    except BaseException:
        for fd in handles:
            os.close(fd)
        raise
    return handles


def kill(pidfd: int) -> None:
    """SIGKILL through a pidfd (-1: nothing), whether or not the process is still there."""
    if pidfd >= 0:
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
