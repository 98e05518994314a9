"""Cold start through HTTP, mist vs. a one-shot bwrap sandbox, side by side in one run.

mist: deploy `hello` once; then for each sample create a new version (PATCH with a changed env;
same code), wait 100-200 ms (sparse), and time ONE request on a keep-alive connection:
`POST /v1/functions/hello/invocations?version=N`, request out -> response in. The first call of
a new version needs a new sandbox; only answers with `X-Mist-Cold-Start: true` count (a warm
answer is discarded and the sample retried).

Peer: `bwrap --unshare-all --die-with-parent --ro-bind /usr /usr ... <real python> -I -S
runner.py main.handler`, spawned fresh per request: event on stdin, result on stdout; timed
from spawn to the result read and the process reaped.

Also in the same loop, for the analysis (same gaps, same connection kind):
  - mist sparse warm: a second request to the same version, after a gap (the HTTP + dispatch
    part of a cold start, without the sandbox work);
  - loopback HTTP floor, sparse: one request to a raw-socket HTTP server after a gap (what any
    HTTP request after an idle gap costs here, client included).

Targets: mist p50 <= 5 ms, p99 <= 15 ms, and >= 8x faster (p50) than the bwrap runner.
"""

from __future__ import annotations

import json
import random
import subprocess
import tempfile
import time
from pathlib import Path

from _common import (
    BENCH_DIR,
    HELLO_RESULT,
    HELLO_SOURCE,
    REAL_PYTHON,
    MistServer,
    Report,
    arg_parser,
    client,
    deploy,
    fmt_ms,
    invoke,
    patch,
    start_floor,
    statistics,
    summary,
)

PY_PREFIX = str(Path(REAL_PYTHON).parent.parent)  # /root/.pyenv/versions/3.11.7


def bwrap_cmd(task_dir: Path) -> list[str]:
    return [
        "bwrap", "--unshare-all", "--die-with-parent",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
        "--ro-bind", PY_PREFIX, PY_PREFIX,  # the interpreter tree (libpython, stdlib)
        "--ro-bind", str(task_dir), "/var/task",
        "--ro-bind", str(BENCH_DIR / "peers" / "bwrap_runner.py"), "/var/runtime/runner.py",
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        "--chdir", "/var/task", "--clearenv",
        REAL_PYTHON, "-I", "-S", "/var/runtime/runner.py", "main.handler",
    ]  # fmt: skip


def bwrap_once(cmd: list[str], event: bytes) -> float:
    t0 = time.perf_counter_ns()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(event)
    t1 = time.perf_counter_ns()
    if p.returncode != 0 or json.loads(out) != HELLO_RESULT:
        raise RuntimeError(f"bwrap runner failed ({p.returncode}): {out!r} {err.decode()[-2000:]}")
    return (t1 - t0) / 1e6


def main() -> None:
    ap = arg_parser(__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=100, help="cold starts per side (default 100)")
    ap.add_argument("--gap-ms", type=float, nargs=2, default=(100, 200), help="random gap before each sample")
    args = ap.parse_args()
    rep = Report("cold_start")
    event = {"name": "bench"}
    event_bytes = json.dumps(event).encode()

    with tempfile.TemporaryDirectory(prefix="bench-bwrap-") as td:
        task = Path(td)
        (task / "main.py").write_text(HELLO_SOURCE)
        cmd = bwrap_cmd(task)
        for _ in range(3):  # page cache, bwrap binary
            bwrap_once(cmd, event_bytes)

        floor = start_floor()
        with MistServer(args.mist_arg) as srv, client(srv.url) as c, client(floor.url) as cfl:
            deploy(c, "hello")
            r = invoke(c, "hello", event)  # the first, throw-away cold start of version 1
            assert r.status_code == 200 and r.json() == HELLO_RESULT, (r.status_code, r.text)

            mist_ms: list[float] = []
            bwrap_ms: list[float] = []
            warm_ms: list[float] = []
            floor_ms: list[float] = []
            cfl.post("/", content=event_bytes)
            inv_ids: list[str] = []
            discarded = 0
            i = 0
            while len(mist_ms) < args.n:
                i += 1
                if discarded > args.n:
                    raise RuntimeError(f"{discarded} answers after a new version were not cold starts")
                fv = patch(c, "hello", {"env": {"BENCH_SAMPLE": str(i)}})
                time.sleep(random.uniform(*args.gap_ms) / 1000)
                t0 = time.perf_counter_ns()
                r = invoke(c, "hello", event, version=fv["version"])
                t1 = time.perf_counter_ns()
                if r.status_code != 200 or r.json() != HELLO_RESULT:
                    raise RuntimeError(f"invoke answered {r.status_code}: {r.text[:2000]}")
                if r.headers.get("x-mist-cold-start") != "true" or r.headers.get("x-mist-version") != str(fv["version"]):
                    discarded += 1
                    continue
                mist_ms.append((t1 - t0) / 1e6)
                inv_ids.append(r.headers.get("x-mist-invocation-id", ""))
                # the same version again after a gap: warm, sparse
                time.sleep(random.uniform(*args.gap_ms) / 1000)
                t0 = time.perf_counter_ns()
                r = invoke(c, "hello", event, version=fv["version"])
                t1 = time.perf_counter_ns()
                if r.status_code == 200 and r.headers.get("x-mist-cold-start") == "false":
                    warm_ms.append((t1 - t0) / 1e6)
                # the peer, interleaved so both sides see the same machine state
                time.sleep(random.uniform(*args.gap_ms) / 1000)
                bwrap_ms.append(bwrap_once(cmd, event_bytes))
                # the HTTP floor after a gap
                time.sleep(random.uniform(*args.gap_ms) / 1000)
                t0 = time.perf_counter_ns()
                cfl.post("/", content=event_bytes)
                t1 = time.perf_counter_ns()
                floor_ms.append((t1 - t0) / 1e6)

            # mist's own view of the same cold starts (init = handler import, duration = handler run)
            init_ms: list[float] = []
            dur_ms: list[float] = []
            for inv in inv_ids:
                rr = c.get(f"/v1/invocations/{inv}")
                if rr.status_code == 200:
                    rec = rr.json()
                    init_ms.append(float(rec.get("init_ms") or 0.0))
                    dur_ms.append(float(rec.get("duration_ms") or 0.0))
            stats = statistics(c).get("Worker", {})
        floor.stop()

    m, b, w, f = summary(mist_ms), summary(bwrap_ms), summary(warm_ms), summary(floor_ms)
    rep.data = {"mist_ms": m, "bwrap_ms": b, "discarded_warm_answers": discarded,
                "mist_record_init_ms": summary(init_ms) if init_ms else None,
                "mist_record_duration_ms": summary(dur_ms) if dur_ms else None,
                "mist_sparse_warm_ms": w, "floor_sparse_ms": f, "bwrap_command": " ".join(cmd), "samples_mist": mist_ms, "samples_bwrap": bwrap_ms}  # fmt: skip
    rep.row("mist cold start via HTTP", fmt_ms(m), f"n={m['n']}, min {m['min']:.3f}, max {m['max']:.3f}")
    rep.row("bwrap one-shot runner", fmt_ms(b), f"n={b['n']}, min {b['min']:.3f}, max {b['max']:.3f}")
    if init_ms:
        s = summary(init_ms)
        rep.row("  mist record init_ms", f"p50 {s['p50']:.3f} / p99 {s['p99']:.3f} ms", "(handler import, in the sandbox)")
    rep.row("  mist sparse warm (same gaps)", fmt_ms(w), f"=> cold-start share p50 {m['p50'] - w['p50']:.3f} ms")
    rep.row("loopback HTTP floor, sparse", fmt_ms(f), "raw-socket server, same gaps")
    rep.row("speed-up p50 (bwrap / mist)", f"{b['p50'] / m['p50']:.1f}x", f"p99: {b['p99'] / m['p99']:.1f}x")
    rep.check("mist p50 ms", m["p50"], "<= 5", m["p50"] <= 5)
    rep.check("mist p99 ms", m["p99"], "<= 15", m["p99"] <= 15)
    rep.check("bwrap p50 / mist p50", b["p50"] / m["p50"], ">= 8x", b["p50"] / m["p50"] >= 8)
    rep.data["worker_statistics"] = stats
    if "pool_cold_starts" in stats and "cold_starts" in stats:
        rep.notes.append(f"worker: {stats['cold_starts']} cold starts in this run, {stats['pool_cold_starts']} of them "
                         "served by a pre-built pool sandbox")
    if discarded:
        rep.notes.append(f"{discarded} first answers of a new version were not cold starts; discarded and retried")
    rep.print(args.json)


if __name__ == "__main__":
    main()
