"""`mist simulate-shards`: the shard manager's policy on a simulated cluster, offline."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from mist.cli import output
from mist.core.shardmanager import ManagerConfig
from mist.sim.shards import Scenario, simulate

HELP = """Simulate the sharded scheduler: owners, Zipf-popular functions, shifting popularity.

The shard manager's own policy (mist.core.shardmanager) runs every --round-s simulated seconds
on the load of the round before; docs/sharding.md has the model. Per simulated hour: the most
loaded owner / mean owner over the rounds (p50, p99, worst, and rounds above 1.3), load-balancing
moves and the load they carried (churn, in cluster loads), splits, merges, functions cut in
parts, shards, and the policy's wall time per round.

--owner-rate N adds the aggregate the design sustains if one owner schedules N requests/s: the
cluster saturates when its most loaded owner does, so owners x N / (p99 most loaded / mean).

Examples:

  mist simulate-shards                                  # 1,000 owners, 100,000 functions, 4 hours
  mist simulate-shards --hours 1 --owners 100 --functions 10000
  mist simulate-shards --static --hours 1               # the same load with no shard manager
  mist simulate-shards --hours 2 --owner-rate 20000 --json

--json prints one object per hour (a list).

Exit status: 0 done; 2 bad input."""


@output.handle_errors
def simulate_shards(
    owners: Annotated[int, typer.Option(help="Scheduler owners.")] = 1000,
    functions: Annotated[int, typer.Option(help="Functions.")] = 100_000,
    zipf: Annotated[float, typer.Option(help="Zipf exponent of popularity.")] = 1.0,
    hours: Annotated[float, typer.Option(help="Simulated hours.")] = 4.0,
    round_s: Annotated[float, typer.Option("--round-s", help="Seconds between manager rounds.")] = 5.0,
    rotate_every_s: Annotated[float, typer.Option("--rotate-every-s", help="Seconds between rotations of the hot set (0: none).")] = 1800.0,
    rotate_top: Annotated[int, typer.Option(help="Ranks dealt anew at each rotation.")] = 1000,
    rotate_ramp_s: Annotated[float, typer.Option("--rotate-ramp-s", help="Seconds a rotation takes to fade in.")] = 300.0,
    flash_every_s: Annotated[float, typer.Option("--flash-every-s", help="Mean seconds between flash crowds (0: none).")] = 1200.0,
    flash_share: Annotated[float, typer.Option(help="A flash crowd's share of the total rate at its peak.")] = 0.05,
    fail_every_s: Annotated[float, typer.Option("--fail-every-s", help="Mean seconds between owner losses (0: none).")] = 1800.0,
    static: Annotated[bool, typer.Option("--static", help="No shard manager: the initial map stays.")] = False,
    no_parts: Annotated[bool, typer.Option("--no-parts", help="Never cut a hot function into parts.")] = False,
    trigger: Annotated[float, typer.Option(help="The manager moves shards when the most loaded owner is above this x mean ...")] = ManagerConfig().trigger,
    goal: Annotated[float, typer.Option(help="... until it is at most this x mean.")] = ManagerConfig().goal,
    owner_rate: Annotated[float | None, typer.Option("--owner-rate", metavar="N", help="Requests/s one owner schedules.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    scenario = Scenario(
        owners=owners, functions=functions, zipf=zipf, hours=hours, round_s=round_s, rotate_every_s=rotate_every_s,
        rotate_top=rotate_top, rotate_ramp_s=rotate_ramp_s, flash_every_s=flash_every_s, flash_share=flash_share,
        fail_every_s=fail_every_s, manager=not static, seed=seed,
        config=ManagerConfig(trigger=trigger, goal=goal, **({"max_parts": 1} if no_parts else {})))
    hours_out = simulate(scenario, timer=time.perf_counter)
    rows = []
    for h in hours_out:
        row = h.summary()
        if owner_rate is not None:
            row["sustained_rate"] = owners * owner_rate / h.p99_imbalance
        rows.append(row)
    if as_json:
        output.print_json(rows)
        return
    table = output.table("HOUR", "P50", "P99", "WORST", ">1.3", "MOVES", "CHURN", "ORPHANS", "SPLITS", "MERGES",
                         "CUT FNS", "SHARDS", "ROUND MS", *(["SUSTAINED REQ/S"] if owner_rate is not None else []))
    for row in rows:
        table.add_row(
            str(row["hour"]), f"{row['p50_imbalance']:.2f}", f"{row['p99_imbalance']:.2f}",
            f"{row['worst_imbalance']:.2f}", f"{row['rounds_over_1_3']}/{row['rounds']}", f"{row['moves']:,}",
            f"{row['churn']:.2f}", f"{row['orphans']:,}", f"{row['splits']:,}", f"{row['merges']:,}",
            f"{row['cut_functions']:,}", f"{row['shards']:,}", f"{row['manager_s'] * 1000:.0f}",
            *([f"{row['sustained_rate']:,.0f}"] if owner_rate is not None else []))
    output.print_table(table)
