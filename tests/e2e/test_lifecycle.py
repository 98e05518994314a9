"""`mist up` starts, stops cleanly (no orphan sandboxes, no cgroups left) and keeps state across restarts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, start_server

pytestmark = pytest.mark.sandbox


def descendants(root_pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def cgroups_of(pids: set[int]) -> set[str]:
    dirs = set()
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                _, ctrls, path = line.split(":", 2)
                for ctrl in ctrls.split(","):
                    if ctrl in ("memory", "pids", "cpu", "cpuset") and "/mist/" in path:
                        dirs.add(f"/sys/fs/cgroup/{ctrl}{path}")
        except OSError:
            continue
    return dirs


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_leaves_no_sandbox_process_or_cgroup_and_restart_keeps_everything(tmp_path):
    data = tmp_path / "data"
    s = start_server(data)
    try:
        assert s.cli("deploy", "hello", str(REPO / "examples" / "hello")).returncode == 0
        assert s.cli("deploy", "warm", str(REPO / "examples" / "hello"), "--min-instances", "1").returncode == 0
        with s.client() as c:
            assert c.get("/healthz").status_code == 200
            r = c.post("/v1/functions/hello/invocations", content=b'{"name": "before"}')
            assert r.status_code == 200
            inv = r.headers["x-mist-invocation-id"]
        sandboxes = descendants(s.proc.pid)
        dirs = cgroups_of(sandboxes)
        assert sandboxes and dirs, "a warm instance should be running in its own cgroups"
    finally:
        code = s.stop()
    assert code == 0
    assert not [p for p in sandboxes if alive(p)], "sandbox processes outlived mist"
    assert not [d for d in dirs if os.path.isdir(d)], "cgroups were left behind"

    s2 = start_server(data)
    try:
        with s2.client() as c:
            rec = c.get(f"/v1/invocations/{inv}")
            assert rec.status_code == 200 and rec.json()["status"] == "succeeded"
            assert c.get("/v1/functions/hello").json()["latest_version"] == 1
            again = c.post("/v1/functions/hello/invocations", content=b'{"name": "after"}')
            assert again.status_code == 200 and again.json()["hello"] == "after"
            # --min-instances: loaded again at start, before any request, so the first call is warm
            warm = c.post("/v1/functions/warm/invocations", content=b"{}")
            assert warm.status_code == 200 and warm.headers["x-mist-cold-start"] == "false"
    finally:
        assert s2.stop() == 0


def test_a_second_mist_on_the_same_data_dir_or_port_is_refused_clearly(tmp_path):
    import subprocess

    from tests.e2e.conftest import MIST

    s = start_server(tmp_path / "data")
    try:
        r = subprocess.run([MIST, "up", "--data-dir", str(tmp_path / "data"), "--port", "0"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "already running" in r.stderr
        port = s.url.rsplit(":", 1)[1]
        r = subprocess.run([MIST, "up", "--data-dir", str(tmp_path / "other"), "--port", port],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and f"cannot listen on 127.0.0.1:{port}" in r.stderr
    finally:
        s.stop()
