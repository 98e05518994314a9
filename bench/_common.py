"""Shared pieces of mist's benchmarks: server start/stop, deploy, percentiles, result tables.

Every benchmark starts its own `mist up` (own data dir, free port) and stops it with SIGTERM.
Run them with the project's venv interpreter (never the pyenv `python3` shim, +100 ms/start):

    /work/main/.venv/bin/python bench/cold_start.py
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:  # `import mist` from bench/ without an installed package
    sys.path.append(str(REPO))
_MIST_SCRIPT = Path(sys.executable).parent / "mist"  # the venv's console script


def mist_command() -> list[str]:
    """`mist`, or the same CLI through the interpreter when the console script is not installed."""
    if _MIST_SCRIPT.exists():
        return [str(_MIST_SCRIPT)]
    return [sys.executable, "-c", "import sys; sys.argv[0] = 'mist'; from mist.cli.main import app; app()"]
REAL_PYTHON = os.path.realpath(sys.executable)  # the venv's interpreter (scripts/setup chose it), not its symlink

HELLO_SOURCE = 'def handler(event, context):\n    return {"hello": "world"}\n'
HELLO_RESULT = {"hello": "world"}


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values_ms: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values_ms),
        "p50": percentile(values_ms, 50),
        "p90": percentile(values_ms, 90),
        "p99": percentile(values_ms, 99),
        "min": min(values_ms) if values_ms else float("nan"),
        "max": max(values_ms) if values_ms else float("nan"),
        "mean": sum(values_ms) / len(values_ms) if values_ms else float("nan"),
    }


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, object]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_binary": REAL_PYTHON,
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "loadavg_at_start": os.getloadavg(),
    }


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, path: str = "/") -> None:
    """Wait until something answers HTTP at url (any status)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            httpx.get(url + path, timeout=1.0)
            return
        except httpx.HTTPError as exc:
            last = exc
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered at {url} within {timeout:.0f} s ({last})")


def children_of(pid: int) -> set[int]:
    """pid and all its descendants (from /proc/*/stat)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        # the comm field may hold spaces and parens: split after the last ')'
        rest = stat[stat.rfind(")") + 2 :].split()
        parent[int(d)] = int(rest[1])
    out = {pid}
    changed = True
    while changed:
        changed = False
        for child, ppid in parent.items():
            if ppid in out and child not in out:
                out.add(child)
                changed = True
    return out


class MistServer:
    """`mist up --data-dir <tmp> --port <free>` as a subprocess; SIGTERM on exit."""

    def __init__(self, extra_args: Iterable[str] = (), ready_timeout: float = 120.0) -> None:
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.proc_rc: int | None = None
        self.url = ""
        self.data_dir = Path()
        self.log_path = Path()

    def start(self) -> MistServer:
        self.data_dir = Path(tempfile.mkdtemp(prefix="mist-bench-"))
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")
        port = free_port()
        s3 = [] if any(a.startswith("--s3-port") for a in self.extra_args) else ["--s3-port", "0"]  # no fixed port
        cmd = [*mist_command(), "up", "--data-dir", str(self.data_dir / "data"), "--port", str(port), *s3,
               *self.extra_args]
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, cwd=str(REPO))  # fmt: skip
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            m = re.search(r"mist is ready at (http://\S+)", text) or re.search(  # --role scheduler: its cluster API
                r"mist scheduler is ready: cluster API at (http://\S+)", text)
            if m:
                self.url = m.group(1)
                return self
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"`{' '.join(cmd)}` exited with {self.proc_rc}:\n{tail}")
            time.sleep(0.02)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"mist did not print 'mist is ready at' within {self.ready_timeout:.0f} s:\n{tail}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        rc = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(30)
            except subprocess.TimeoutExpired:
                print(f"mist (pid {self.proc.pid}) did not stop within 30 s of SIGTERM; killing it", file=sys.stderr)
                self.proc.kill()
                rc = self.proc.wait()
        elif self.proc is not None:
            rc = self.proc.returncode
        if self.proc is not None:
            self._log.close()
            if rc == 0:
                self.log_path.unlink(missing_ok=True)
            else:
                print(f"mist exited with {rc}; its output is in {self.log_path}", file=sys.stderr)
        if self.data_dir != Path() and self.data_dir.exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.proc = None
        self.proc_rc = rc
        return rc

    def __enter__(self) -> MistServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def auth_headers(url: str) -> dict[str, str]:
    """The admin key of the `mist up` at `url` (its data dir's admin.key, found as the CLI finds it)."""
    from mist.tenancy.discovery import api_key_for

    key = api_key_for(url)
    return {"Authorization": f"Bearer {key}"} if key else {}


def client(url: str, timeout: float = 60.0) -> httpx.Client:
    """One keep-alive connection (max_connections=1) to url, with the server's admin key."""
    return httpx.Client(
        base_url=url,
        timeout=timeout,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        headers=auth_headers(url),
    )


class Peer:
    """A peer server subprocess (functions-framework or the floor server)."""

    def __init__(self, cmd: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=self._err,
                                     stderr=subprocess.STDOUT, cwd=str(BENCH_DIR.parent))  # fmt: skip
        try:
            wait_http(self.url, timeout=60)
        except RuntimeError as exc:
            self.stop()
            self._err.seek(0)
            raise RuntimeError(f"{exc}\n{' '.join(cmd)}:\n{self._err.read()[-3000:].decode(errors='replace')}") from None

    def stop(self) -> None:
        terminate(self.proc, 15)
        self._err.close()


def terminate(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_floor() -> Peer:
    port = free_port()
    return Peer([REAL_PYTHON, "-I", "-S", str(BENCH_DIR / "peers" / "floor_server.py"), str(port)], port)


class RawHTTP:
    """The thinnest HTTP/1.1 client there is, for timing what a server adds: one keep-alive
    socket (TCP_NODELAY), the request written in one send, the answer read up to its
    Content-Length. httpx costs ~0.2 ms per request warm and 1-3 ms after an idle gap
    (measured beside this client: docs/benchmarks.md), which would be timed as the server's."""

    def __init__(self, url: str) -> None:
        from urllib.parse import urlsplit

        u = urlsplit(url)
        self.host = u.hostname or "127.0.0.1"
        self.auth = "".join(f"{k}: {v}\r\n" for k, v in auth_headers(url).items())
        self.sock = socket.create_connection((self.host, u.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, path: str, body: bytes) -> bytes:
        """A POST of `body` to `path`, built once so that timing it costs nothing."""
        return (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n{self.auth}"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip

    def send(self, request: bytes) -> tuple[float, int, dict[str, str], bytes]:
        """(milliseconds from the send to the last byte of the answer, status, headers with
        lower-case names, body)."""
        sock = self.sock
        t0 = time.perf_counter_ns()
        sock.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            rest += chunk
        t1 = time.perf_counter_ns()
        return (t1 - t0) / 1e6, int(lines[0].split()[1]), headers, rest

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawHTTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- mist API


def make_zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


class ApiError(RuntimeError):
    pass


def _check(r: httpx.Response, *ok: int) -> httpx.Response:
    if r.status_code not in ok:
        raise ApiError(f"{r.request.method} {r.request.url.path} -> {r.status_code}: {r.text[:2000]}")
    return r


def deploy(c: httpx.Client, name: str, files: dict[str, str] | None = None, config: dict | None = None) -> dict:
    """POST /v1/functions/{name}/versions (multipart: code zip + config JSON); the FunctionVersion."""
    code = make_zip(files or {"main.py": HELLO_SOURCE})
    r = c.post(
        f"/v1/functions/{name}/versions",
        files={"code": ("code.zip", code, "application/zip")},
        data={"config": json.dumps(config or {})},
    )
    return _check(r, 201).json()


def patch(c: httpx.Client, name: str, config: dict) -> dict:
    """PATCH /v1/functions/{name}: a new version with the same code; the FunctionVersion."""
    return _check(c.patch(f"/v1/functions/{name}", json=config), 201).json()


def invoke(c: httpx.Client, name: str, event: object = None, version: int | None = None) -> httpx.Response:
    params = {"version": str(version)} if version is not None else None
    return c.post(f"/v1/functions/{name}/invocations", content=json.dumps(event).encode(), params=params,
                  headers={"content-type": "application/json"})  # fmt: skip


def statistics(c: httpx.Client) -> dict:
    r = c.get("/v1/statistics")
    return r.json() if r.status_code == 200 else {}


# --------------------------------------------------------------------------- wrk


def run_wrk(url: str, *, connections: int = 64, threads: int = 1, duration_s: float = 10.0,
            script: Path = BENCH_DIR / "wrk_post.lua", env: dict[str, str] | None = None) -> dict:  # fmt: skip
    """Run wrk with the POST script; its JSON summary plus requests_per_s."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed: apt-get install wrk")
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", "--latency", "-s", str(script), url]
    env = dict(os.environ, MIST_AUTHORIZATION=auth_headers(url).get("Authorization", ""), **(env or {}))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60, env=env)
    m = re.search(r"^WRK_JSON (\{.*\})$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    res = json.loads(m.group(1))
    res["requests_per_s"] = res["requests"] / (res["duration_us"] / 1e6)
    res["command"] = " ".join(cmd)
    return res


# --------------------------------------------------------------------------- reporting


@dataclass
class Check:
    name: str
    value: float
    target: str  # e.g. "<= 5 ms"
    ok: bool | None  # None: informational

    @property
    def verdict(self) -> str:
        return "info" if self.ok is None else ("PASS" if self.ok else "MISS")


@dataclass
class Report:
    benchmark: str
    command: str = field(default_factory=lambda: " ".join([sys.executable, *sys.argv]))
    machine: dict = field(default_factory=machine_info)
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (what, figure, peer/limit)
    checks: list[Check] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def row(self, what: str, figure: str, peer: str = "") -> None:
        self.rows.append((what, figure, peer))

    def check(self, name: str, value: float, target: str, ok: bool | None) -> None:
        self.checks.append(Check(name, value, target, ok))

    def print(self, as_json: bool = False) -> None:
        m = self.machine
        print()
        print(f"== {self.benchmark} ==  {m['date_utc']}  kernel {m['kernel']}  Python {m['python']}  "
              f"{m['cpus']} CPUs  ({m['cpu_model']})  load {m['loadavg_at_start'][0]:.2f}")  # fmt: skip
        print(f"   {self.command}")
        if self.rows:
            w0 = max(len(r[0]) for r in self.rows)
            w1 = max(len(r[1]) for r in self.rows)
            for what, fig, peer in self.rows:
                print(f"   {what:<{w0}}  {fig:>{w1}}  {peer}")
        if self.checks:
            print("   targets:")
            w = max(len(c.name) for c in self.checks)
            for c in self.checks:
                print(f"     {c.verdict:4}  {c.name:<{w}}  {c.value:10.3f}   target {c.target}")
        for n in self.notes:
            print(f"   note: {n}")
        if as_json:
            print(json.dumps(self.to_json(), indent=2, default=str))

    def to_json(self) -> dict:
        return {
            "benchmark": self.benchmark,
            "command": self.command,
            "machine": self.machine,
            "rows": [{"what": a, "figure": b, "peer": c} for a, b, c in self.rows],
            "checks": [{"name": c.name, "value": c.value, "target": c.target, "verdict": c.verdict} for c in self.checks],
            "data": self.data,
            "notes": self.notes,
        }


def arg_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="also print the full results as JSON")
    p.add_argument("--mist-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `mist up` (repeatable), e.g. --mist-arg=--prewarm=2")  # fmt: skip
    return p


def fmt_ms(s: dict[str, float]) -> str:
    return f"p50 {s['p50']:.3f} / p99 {s['p99']:.3f} ms"


def smaps(pid: int | None) -> dict[str, int]:
    """Fields of /proc/PID/smaps_rollup in kB (Rss, Pss, Private_Clean, ...)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            k, _, v = line.partition(":")
            parts = v.split()
            if parts and parts[0].isdigit():
                out[k.strip()] = int(parts[0])
    except OSError:
        pass
    return out
