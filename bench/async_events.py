"""Asynchronous invocations: events per second end to end, and the 202's latency, next to the
synchronous invocation rate measured in the same run.

    /work/main/.venv/bin/python bench/async_events.py [--duration 10] [--connections 32] [--concurrency 8]

One `mist up` (own data dir, free port), one no-op function (`hello`, concurrency 8 by default).
  1. sync:  wrk -c N POST /v1/functions/hello/invocations for D s (wrk_post.lua): req/s, latency.
  2. async: the same with `X-Mist-Invocation-Type: Event`: the 202 rate and the 202's latency
     (p50/p99: the time to store the event durably, SQLite synchronous=FULL, group committed).
     Then the end-to-end rate: events accepted / time from the first request until the
     dispatcher has run every one (EventService and Dispatcher counts in /v1/statistics).
The peer is mist's own synchronous rate: an event costs the same invocation plus its storage
(enqueue, lease, outcome: three transactions' share).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import BENCH_DIR, MistServer, Report, arg_parser, client, deploy, invoke, run_wrk, statistics


def event_script(directory: Path) -> Path:
    """wrk_post.lua plus the Event header."""
    text = (BENCH_DIR / "wrk_post.lua").read_text()
    marker = 'wrk.headers["Content-Type"] = "application/json"'
    assert marker in text, "bench/wrk_post.lua changed: update event_script()"
    script = directory / "wrk_event.lua"
    script.write_text(text.replace(marker, marker + '\nwrk.headers["X-Mist-Invocation-Type"] = "Event"'))
    return script


def counts(c) -> tuple[int, int]:
    """(events accepted, events finished) so far."""
    s = statistics(c)
    d = s.get("Dispatcher", {})
    return s.get("EventService", {}).get("accepted", 0), d.get("succeeded", 0) + d.get("failed", 0)


def main() -> None:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per side (default 10)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--concurrency", type=int, default=8, help="the function's concurrency (default 8)")
    args = p.parse_args()
    report = Report("async events: end-to-end rate and 202 latency vs synchronous invocations")
    url_path = "/v1/functions/hello/invocations"
    with MistServer(["--s3-port", "0", *args.mist_arg]) as server, client(server.url) as c, \
            tempfile.TemporaryDirectory() as tmp:  # fmt: skip
        deploy(c, "hello", config={"concurrency": args.concurrency})
        for _ in range(50):
            assert invoke(c, "hello", {"warm": True}).status_code == 200
        sync = run_wrk(server.url + url_path, connections=args.connections, duration_s=args.duration)
        before_accepted, before_done = counts(c)
        started = time.monotonic()
        events = run_wrk(server.url + url_path, connections=args.connections, duration_s=args.duration,
                         script=event_script(Path(tmp)))  # fmt: skip
        submitted_s = time.monotonic() - started
        accepted, done = counts(c)
        backlog = accepted - done
        while done < accepted:
            if time.monotonic() - started > submitted_s + 600:
                raise RuntimeError(f"{accepted - done} events still not run after 10 minutes")
            time.sleep(0.05)
            accepted, done = counts(c)
        drained_s = time.monotonic() - started
        n = accepted - before_accepted
        stats = statistics(c)
        errors = sum(events["errors"].values())

    e2e = n / drained_s
    report.row("synchronous invocations (wrk, 200s)", f"{sync['requests_per_s']:,.0f} req/s",
               f"latency p50 {sync['latency_us']['p50'] / 1000:.2f} / p99 {sync['latency_us']['p99'] / 1000:.2f} ms")
    report.row("async: events accepted (202s)", f"{events['requests_per_s']:,.0f} events/s",
               f"{n:,} events in {submitted_s:.1f} s; {errors} wrk errors")
    report.row("async: 202 latency (event stored, fsynced)",
               f"p50 {events['latency_us']['p50'] / 1000:.2f} ms", f"p99 {events['latency_us']['p99'] / 1000:.2f} ms")
    report.row("async: end to end (accepted and run)", f"{e2e:,.0f} events/s",
               f"all {n:,} run {drained_s:.1f} s after the first; backlog when sending stopped: {backlog:,}")
    report.row("async end to end / sync rate", f"{e2e / sync['requests_per_s']:.2f}x", "same run, same function")
    report.check("async events/s end to end", e2e, "info: the synchronous rate is the ceiling", None)
    report.data = {"sync": sync, "events": events, "events_accepted": n, "drained_s": drained_s,
                   "backlog_at_end_of_sending": backlog, "statistics": stats}  # fmt: skip
    report.notes.append(f"function: hello (returns a constant), concurrency {args.concurrency}; "
                        f"wrk -t1 -c{args.connections} -d{args.duration:g}s; the async rate shares 2 CPUs with wrk")  # fmt: skip
    report.print(as_json=args.json)


if __name__ == "__main__":
    main()
