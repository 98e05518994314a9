"""Cold start through HTTP, mist vs. a one-shot bwrap sandbox, side by side in one run.

mist: deploy `hello` once; then for each sample create a new version (PATCH with a changed env;
same code), wait 100-200 ms (sparse), and time ONE request on a keep-alive connection:
`POST /v1/functions/hello/invocations?version=N`, request out -> response in. The first call of
a new version needs a new sandbox; only answers with `X-Mist-Cold-Start: true` count (a warm
answer is discarded and the sample retried). The samples alternate between two clients: the
thinnest there is (`_common.RawHTTP`: one socket, the request prebuilt, the answer read to its
Content-Length), whose figures the targets use, and httpx, shown beside it. After an idle gap
httpx itself takes 1-3 ms on this machine (the floor rows show it), which would be timed as
mist's.

Peer: `bwrap --unshare-all --die-with-parent --ro-bind /usr /usr ... <real python> -I -S
runner.py main.handler`, spawned fresh per request: event on stdin, result on stdout; timed
from spawn to the result read and the process reaped.

Also in the same loop, for the analysis (same gaps, same client as the sample; the last two
rows with the raw client's samples only):
  - mist sparse warm: a second request to the same version, after a gap (the HTTP + dispatch
    part of a cold start, without the sandbox work);
  - loopback HTTP floor, sparse: one request to a raw-socket HTTP server after a gap (what any
    HTTP request after an idle gap costs here, client included);
  - the machine: reading one byte of each of 1,000 pages after a gap, and back to back (what a
    path's memory footprint costs after idle on this machine; `PageTouch`).

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
    RawHTTP,
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

PY_PREFIX = str(Path(REAL_PYTHON).parent.parent)  # /usr (Debian's python3.11), or e.g. /root/.pyenv/versions/3.11.7


def bwrap_cmd(task_dir: Path) -> list[str]:
    return [
        "bwrap", "--unshare-all", "--die-with-parent",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
        *([] if PY_PREFIX == "/usr" else ["--ro-bind", PY_PREFIX, PY_PREFIX]),  # the interpreter tree
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


class PageTouch:
    """Read one byte of each of `n` pages of a buffer: what it costs to come back to memory
    after an idle gap. On some VMs (this one: nested virtualization) the first access to each
    page after ~100 ms idle costs 1-3 us however recently it was used before, so a request's
    latency after a gap grows with the number of distinct pages its path touches."""

    def __init__(self, n: int) -> None:
        import mmap

        self.n = n
        self.buf = mmap.mmap(-1, n * 4096)
        self.view = memoryview(self.buf)
        self.offsets = range(0, n * 4096, 4096)
        for i in self.offsets:
            self.view[i] = 1

    def touch(self) -> float:
        view, total = self.view, 0
        t0 = time.perf_counter_ns()
        for i in self.offsets:
            total += view[i]
        return (time.perf_counter_ns() - t0) / 1e6


def main() -> None:
    ap = arg_parser(__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=100, help="cold starts per side (default 100)")
    ap.add_argument("--gap-ms", type=float, nargs=2, default=(100, 200), help="random gap before each sample")
    ap.add_argument("--others", type=int, default=0, metavar="N",
                    help="first deploy N other functions and invoke each once, so that the cold starts "
                         "happen beside N warm idle instances (default 0)")
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
        with MistServer(args.mist_arg) as srv, client(srv.url) as c, client(floor.url) as cfl, \
                RawHTTP(srv.url) as raw, RawHTTP(floor.url) as raw_floor:
            for k in range(args.others):  # warm idle instances of other functions beside the samples
                deploy(c, f"other-{k}")
                r = invoke(c, f"other-{k}", event)
                assert r.status_code == 200, (r.status_code, r.text)
            deploy(c, "hello")
            r = invoke(c, "hello", event)  # the first, throw-away cold start of version 1
            assert r.status_code == 200 and r.json() == HELLO_RESULT, (r.status_code, r.text)

            # per client: cold starts, sparse warm calls, the floor after a gap
            ms: dict[str, dict[str, list[float]]] = {k: {"cold": [], "warm": [], "floor": []} for k in ("raw", "httpx")}
            bwrap_ms: list[float] = []
            pages = PageTouch(1000)
            pages_hot = [pages.touch() for _ in range(50)]
            pages_ms: list[float] = []
            cfl.post("/", content=event_bytes)
            raw_floor.send(raw_floor.request("/", event_bytes))
            inv_ids: list[str] = []
            discarded = 0
            i = 0

            def call(kind: str, version: int) -> tuple[float, int, dict[str, str], bytes]:
                path = f"/v1/functions/hello/invocations?version={version}"
                if kind == "raw":
                    return raw.send(raw.request(path, event_bytes))
                t0 = time.perf_counter_ns()
                r = invoke(c, "hello", event, version=version)
                t1 = time.perf_counter_ns()
                return (t1 - t0) / 1e6, r.status_code, dict(r.headers), r.content

            def floor_call(kind: str) -> float:
                if kind == "raw":
                    return raw_floor.send(raw_floor.request("/", event_bytes))[0]
                t0 = time.perf_counter_ns()
                cfl.post("/", content=event_bytes)
                return (time.perf_counter_ns() - t0) / 1e6

            while min(len(ms["raw"]["cold"]), len(ms["httpx"]["cold"])) < args.n:
                i += 1
                kind = "raw" if i % 2 else "httpx"
                if len(ms[kind]["cold"]) >= args.n:
                    continue
                if discarded > args.n:
                    raise RuntimeError(f"{discarded} answers after a new version were not cold starts")
                fv = patch(c, "hello", {"env": {"BENCH_SAMPLE": str(i)}})
                time.sleep(random.uniform(*args.gap_ms) / 1000)
                took, status, headers, body = call(kind, fv["version"])
                if status != 200 or json.loads(body) != HELLO_RESULT:
                    raise RuntimeError(f"invoke answered {status}: {body[:2000]!r}")
                if headers.get("x-mist-cold-start") != "true" or headers.get("x-mist-version") != str(fv["version"]):
                    discarded += 1
                    continue
                ms[kind]["cold"].append(took)
                inv_ids.append(headers.get("x-mist-invocation-id", ""))
                # the same version again after a gap: warm, sparse
                time.sleep(random.uniform(*args.gap_ms) / 1000)
                took, status, headers, _ = call(kind, fv["version"])
                if status == 200 and headers.get("x-mist-cold-start") == "false":
                    ms[kind]["warm"].append(took)
                # the peer, interleaved so both sides see the same machine state
                if kind == "raw":
                    time.sleep(random.uniform(*args.gap_ms) / 1000)
                    bwrap_ms.append(bwrap_once(cmd, event_bytes))
                # the HTTP floor after a gap
                time.sleep(random.uniform(*args.gap_ms) / 1000)
                ms[kind]["floor"].append(floor_call(kind))
                # what this machine charges for memory after a gap
                if kind == "raw":
                    time.sleep(random.uniform(*args.gap_ms) / 1000)
                    pages_ms.append(pages.touch())

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

    m, b, w, f = summary(ms["raw"]["cold"]), summary(bwrap_ms), summary(ms["raw"]["warm"]), summary(ms["raw"]["floor"])
    mh, wh, fh = summary(ms["httpx"]["cold"]), summary(ms["httpx"]["warm"]), summary(ms["httpx"]["floor"])
    rep.data = {"mist_ms": m, "bwrap_ms": b, "discarded_warm_answers": discarded,
                "mist_record_init_ms": summary(init_ms) if init_ms else None,
                "mist_record_duration_ms": summary(dur_ms) if dur_ms else None,
                "mist_sparse_warm_ms": w, "floor_sparse_ms": f,
                "httpx": {"mist_ms": mh, "mist_sparse_warm_ms": wh, "floor_sparse_ms": fh},
                "bwrap_command": " ".join(cmd), "samples_mist": ms["raw"]["cold"], "samples_mist_httpx": ms["httpx"]["cold"],
                "samples_bwrap": bwrap_ms}  # fmt: skip
    rep.row("mist cold start via HTTP", fmt_ms(m), f"n={m['n']}, min {m['min']:.3f}, max {m['max']:.3f}; raw-socket client")
    rep.row("bwrap one-shot runner", fmt_ms(b), f"n={b['n']}, min {b['min']:.3f}, max {b['max']:.3f}")
    if init_ms:
        s = summary(init_ms)
        rep.row("  mist record init_ms", f"p50 {s['p50']:.3f} / p99 {s['p99']:.3f} ms", "(handler import, in the sandbox)")
    rep.row("  mist sparse warm (same gaps)", fmt_ms(w), f"=> cold-start share p50 {m['p50'] - w['p50']:.3f} ms")
    rep.row("loopback HTTP floor, sparse", fmt_ms(f), "raw-socket server, same gaps and client")
    rep.row("speed-up p50 (bwrap / mist)", f"{b['p50'] / m['p50']:.1f}x", f"p99: {b['p99'] / m['p99']:.1f}x")
    pg, ph = summary(pages_ms), summary(pages_hot)
    rep.row("the machine: 1,000 pages read after a gap", fmt_ms(pg), f"back to back p50 {ph['p50']:.3f} ms (same process)")
    rep.data.update({"pages_1000_after_gap_ms": pg, "pages_1000_back_to_back_ms": ph})
    rep.row("with httpx as the client (info):", "", "the other half of the samples")
    rep.row("  mist cold start via HTTP, httpx", fmt_ms(mh), f"n={mh['n']}")
    rep.row("  mist sparse warm, httpx", fmt_ms(wh), "")
    rep.row("  loopback HTTP floor, sparse, httpx", fmt_ms(fh), f"=> httpx's own share p50 {fh['p50'] - f['p50']:.3f} ms")
    rep.check("mist p50 ms", m["p50"], "<= 5", m["p50"] <= 5)
    rep.check("mist p99 ms", m["p99"], "<= 15", m["p99"] <= 15)
    rep.check("bwrap p50 / mist p50", b["p50"] / m["p50"], ">= 8x", b["p50"] / m["p50"] >= 8)
    rep.data["worker_statistics"] = stats
    if args.others:
        rep.notes.append(f"beside {args.others} warm idle instances of other functions "
                         f"({stats.get('instances', '?')} instances at the end)")
    if "pool_cold_starts" in stats and "cold_starts" in stats:
        rep.notes.append(f"worker: {stats['cold_starts']} cold starts in this run, {stats['pool_cold_starts']} of them "
                         "served by a pre-built pool sandbox")
    if discarded:
        rep.notes.append(f"{discarded} first answers of a new version were not cold starts; discarded and retried")
    rep.print(args.json)


if __name__ == "__main__":
    main()
