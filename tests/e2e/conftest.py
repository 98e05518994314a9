"""A real `mist up` (real sandboxes, SQLite, uvicorn) started as a subprocess, driven over HTTP and the CLI."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mist.testing.worker import remove_worker_leftovers

MIST = str(Path(sys.executable).parent / "mist")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    data_dir: Path
    proc: subprocess.Popen
    url: str
    log: Path
    s3_url: str | None = None  # the S3 endpoint, when started with --s3-port

    def cli(self, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {**os.environ, "MIST_URL": self.url, "NO_COLOR": "1", "COLUMNS": "200"}
        return subprocess.run(
            [MIST, *args], capture_output=True, text=True, env=env, input=input, timeout=timeout, cwd=REPO
        )

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header of the server's admin key."""
        return {"Authorization": f"Bearer {self.admin_key}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, headers=self.auth)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.proc.returncode < 0:  # killed by the test (SIGKILL): nothing of it cleaned up
            remove_cgroups_of(self.data_dir)
        return self.proc.returncode


def remove_cgroups_of(data_dir: Path) -> None:
    """Remove the cgroups a `mist up` killed with SIGKILL left behind: its sandboxes die with it,
    their empty groups stay until a `mist up` starts on the same data dir again, which a test
    that kills a process for good never does. Only while no `mist up` holds the data dir (a test
    that restarted one there leaves the cleaning to it)."""
    lock = data_dir / "mist.lock"
    if not lock.exists():
        return
    fd = os.open(lock, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        remove_worker_leftovers(data_dir)
    finally:
        os.close(fd)


def start_server(data_dir: Path, *extra: str) -> Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "server.log"
    s3 = [] if "--s3-port" in extra else ["--s3-port", "0"]  # S3 off unless asked for: no fixed port to collide on
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [MIST, "up", "--data-dir", str(data_dir), "--port", "0", *s3, *extra],
            stdout=subprocess.PIPE, stderr=out, cwd=REPO,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    s3_url = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            break
        announced = re.search(r"S3 endpoint at (http://\S+)", line)
        s3_url = announced.group(1) if announced else s3_url
        m = re.search(r"mist is ready at (http://\S+)", line) or re.search(  # --role scheduler: its cluster API
            r"mist scheduler is ready: cluster API at (http://\S+)", line)
        if m:
            return Server(data_dir, proc, m.group(1), log, s3_url)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    raise AssertionError(f"mist up did not become ready:\n{log.read_text()}")


@pytest.fixture(autouse=True)
def _no_fixed_s3_port(monkeypatch):
    """`mist up` run directly by a test serves no S3 endpoint (default port 9000) unless it asks."""
    monkeypatch.setenv("MIST_S3_PORT", "0")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("mist") / "data")
    yield s
    s.stop()


def shared_secrets_key(root: Path) -> Path:
    """A secrets key file (32 random bytes, 0600) for every process of a test cluster."""
    key_file = root / "secrets.key"
    key_file.write_bytes(os.urandom(32))
    key_file.chmod(0o600)
    return key_file


def write_function(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root
