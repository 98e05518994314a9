"""The sharded scheduler's pure parts: placement decisions/s, routing lookups/s, the shard manager
in simulation, and the aggregate scheduling rate they add up to. No server is started.

1. Placement (`mist.core.placement`): a snapshot of 100 and of 1,000 workers (48 GB free
   each, 5 layer zygotes, 5 more layers, 100 code shas and 30 running functions drawn at
   random from 10,000 functions and 50 layers), then a stream of new instances whose functions
   are Zipf-popular (exponent 1), each `place` + `reserve`, on one core. Repeated `--reps`
   times on fresh snapshots; the median and the best are shown with the snapshot build time
   and the decisions that needed a full scan. Also the cost of a refusal (a full scan by
   construction) on 1,000 workers.
2. Routing (`ShardMap.route`): lookups/s on a map of 16,000 shards (a gateway's hot path).
3. The shard manager in simulation (`mist.sim.shards`, the same policy code): 1,000 owners,
   100,000 Zipf functions, the hot set rotating every 30 min, flash crowds, owners lost.
4. The aggregate: owners x one owner's rate / the most loaded owner's share over the mean.

Targets: >= 100,000 placement decisions/s on one core (1,000 workers); the most loaded owner
<= 1.3x the mean (p50 and p99 of the 5 s rounds, after the first hour).

    .venv/bin/python bench/sharding.py                 # ~5 min (the simulation: 2 h simulated)
    .venv/bin/python bench/sharding.py --hours 4 --json
"""

from __future__ import annotations

import random
import statistics
import time

from _common import Report, arg_parser

from mist.core.placement import Cluster, Need, WorkerReport
from mist.core.sharding import ShardMap
from mist.sim.shards import Scenario, simulate

FUNCTIONS, LAYERS = 10_000, 50


def reports(workers: int, seed: int) -> list[WorkerReport]:
    rng = random.Random(seed)
    out = []
    for w in range(workers):
        zygotes = frozenset(f"L{rng.randrange(LAYERS)}" for _ in range(5))
        layers = zygotes | frozenset(f"L{rng.randrange(LAYERS)}" for _ in range(5))
        code = frozenset(f"code{rng.randrange(FUNCTIONS)}" for _ in range(100))
        running = {f"f{rng.randrange(FUNCTIONS)}": rng.randint(1, 3) for _ in range(30)}
        out.append(WorkerReport(f"w{w:04d}", 48 * 1024, 64 * 1024, 16_000, 500, code=code, layers=layers,
                                zygotes=zygotes, running=running))
    return out


def needs(count: int, seed: int) -> list[Need]:
    rng = random.Random(seed)
    picks = rng.choices(range(FUNCTIONS), [1 / (i + 1) for i in range(FUNCTIONS)], k=count)
    return [Need(f"f{i}", 128 * (1 + i % 4), f"code{i}", None if i % 3 == 0 else f"L{i % LAYERS}", 100) for i in picks]


def bench_placement(workers: int, decisions: int, reps: int) -> dict:
    rates, builds, scans, refusals = [], [], 0, 0
    stream = needs(decisions, seed=2)
    for rep in range(reps):
        snapshot = reports(workers, seed=rep)
        began = time.perf_counter()
        cluster = Cluster(snapshot)
        builds.append(time.perf_counter() - began)
        began = time.perf_counter()
        for need in stream:
            cluster.reserve(cluster.place(need), need)
        rates.append(decisions / (time.perf_counter() - began))
        stats = cluster.statistics()
        scans += stats.scans
        refusals += stats.refusals
    return {"workers": workers, "decisions": decisions, "reps": reps, "median_per_s": statistics.median(rates),
            "best_per_s": max(rates), "build_ms": statistics.median(builds) * 1000,
            "scans": scans / reps, "refusals": refusals / reps}


def bench_refusal(workers: int) -> float:
    cluster = Cluster(reports(workers, seed=0))
    too_big = Need("big", 60 * 1024, "code-big")  # fits no worker's free memory (48 GB), so every one is looked at
    began = time.perf_counter()
    for _ in range(200):
        cluster.place(too_big)
    return (time.perf_counter() - began) / 200


def bench_routing(shards: int, owners: int, lookups: int) -> float:
    smap = ShardMap.uniform(shards, [f"s{i:04d}" for i in range(owners)])
    names = [f"fn-{i:06d}" for i in range(lookups)]
    began = time.perf_counter()
    for name in names:
        smap.route(name)
    return lookups / (time.perf_counter() - began)


def main() -> None:
    p = arg_parser(__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--hours", type=float, default=2.0, help="simulated hours (the first is the warm-up)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    report = Report("sharded scheduler: placement, routing, shard manager")
    placement = [bench_placement(100, 10_000, args.reps), bench_placement(1000, 50_000, args.reps)]
    for r in placement:
        report.row(f"placement decisions/s, {r['workers']} workers (place + reserve, one core)",
                   f"{r['median_per_s']:,.0f}",
                   f"best {r['best_per_s']:,.0f}; snapshot built in {r['build_ms']:.1f} ms; "
                   f"{r['scans']:.0f} of {r['decisions']:,} needed a full scan, {r['refusals']:.0f} refused")
    refusal = bench_refusal(1000)
    report.row("a refusal (full scan), 1,000 workers", f"{refusal * 1e6:,.0f} us", "")
    routing = bench_routing(16_000, 1000, 200_000)
    report.row("gateway route lookups/s, 16,000 shards (BLAKE2b + bisect)", f"{routing:,.0f}", "")
    hours = simulate(Scenario(hours=args.hours, seed=args.seed), timer=time.perf_counter)
    for h in hours:
        report.row(f"simulated hour {h.hour}: most loaded owner / mean, p50 / p99 / worst",
                   f"{h.p50_imbalance:.2f} / {h.p99_imbalance:.2f} / {h.worst_imbalance:.2f}",
                   f"{h.rounds_over_1_3} of {h.rounds} rounds > 1.3; {h.moves:,} moves (churn {h.churn:.2f}), "
                   f"{h.orphans} orphans, {h.splits:,} splits, {h.merges:,} merges, {h.parts_changes:,} cuts "
                   f"({h.cut_functions} functions cut, up to {h.max_parts} parts), {h.shards:,} shards; "
                   f"round {h.manager_s * 1000:.0f} ms (max {h.manager_max_s * 1000:.0f})")
    steady = hours[1:] or hours
    p50 = max(h.p50_imbalance for h in steady)
    p99 = max(h.p99_imbalance for h in steady)
    per_owner = placement[1]["median_per_s"]
    report.row("aggregate, owners x one owner's decisions/s / imbalance",
               f"{1000 * per_owner / p99:,.0f} /s at p99, {1000 * per_owner / p50:,.0f} /s at p50",
               f"1,000 owners x {per_owner:,.0f}/s (placement alone, no I/O)")
    report.row("one owner's rate needed for 1M/s with 1,000 owners", f"{1e6 * p99 / 1000:,.0f} /s at p99", "")
    report.check("placement decisions/s, 1,000 workers", placement[1]["median_per_s"], ">= 100,000",
                 placement[1]["median_per_s"] >= 100_000)
    report.check("most loaded owner / mean, p50 of rounds (after hour 0)", p50, "<= 1.3", p50 <= 1.3)
    report.check("most loaded owner / mean, p99 of rounds (after hour 0)", p99, "<= 1.3", p99 <= 1.3)
    report.data.update(placement=placement, refusal_s=refusal, routing_per_s=routing,
                       hours=[h.summary() for h in hours])
    report.print(args.json)


if __name__ == "__main__":
    main()
