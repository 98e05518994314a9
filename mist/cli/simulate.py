"""`mist simulate`: replay an invocation trace through keep-alive policies, offline."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from mist.cli import output
from mist.cli.output import say
from mist.errors import InvalidRequest
from mist.sim import load_azure2019, resolve, simulate as run
from mist.sim.policies import names
from mist.sim.synthetic import generate

DEFAULT_POLICIES = ("fixed:10", "fixed:60", "hybrid-histogram", "mist")

HELP = f"""Replay an Azure Functions 2019 trace through keep-alive policies: cold starts and idle memory.

PREFIX names the files PREFIXinv.csv, PREFIXrun.csv and PREFIXmem.csv (e.g. data/100_ for
data/100_inv.csv). Arrivals are spread evenly in their minute, each runs the function's average
duration, and wasted memory is loaded-but-idle time x memory, in GB-s; docs/keepalive.md has the
model and the policies. --synthetic SEED replays a synthetic day instead (mist.sim.synthetic:
timers, Poisson, diurnal, bursty and rare functions drawn from the published Azure statistics).

Policies: {", ".join(names())}. Without --policy: {", ".join(DEFAULT_POLICIES)}.

Examples:

  mist simulate --trace data/azure2019-sample/100_
  mist simulate --trace data/100_ --policy mist --policy fixed:10 --oracle
  mist simulate --trace data/100_ --half a --json
  mist simulate --synthetic 1 --functions 400

--json prints {{"policy", "functions", "invocations", "cold_pct", "p75_function_cold_pct", "wasted_gb_s"}}
for each policy (a list when there are several).

Exit status: 0 done; 2 bad input (unknown policy, missing or unreadable trace, neither or both of
--trace and --synthetic)."""


@output.handle_errors
def simulate(
    trace: Annotated[
        str | None, typer.Option("--trace", metavar="PREFIX", help="Trace file prefix: PREFIXinv.csv, PREFIXrun.csv, PREFIXmem.csv.")
    ] = None,
    policies: Annotated[
        list[str] | None, typer.Option("--policy", "-p", metavar="NAME", help="A policy to replay; repeat for several.")
    ] = None,
    oracle: Annotated[bool, typer.Option("--oracle", help="Also replay the clairvoyant oracle (policy name oracle).")] = False,
    half: Annotated[
        str | None, typer.Option("--half", metavar="a|b", help="Only the functions whose hash falls in half a or b.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    synthetic: Annotated[
        int | None, typer.Option("--synthetic", metavar="SEED", help="Replay a synthetic trace drawn with this seed.")
    ] = None,
    functions: Annotated[int, typer.Option("--functions", help="Functions in a --synthetic trace.")] = 400,
) -> None:
    if (trace is None) == (synthetic is None):
        raise InvalidRequest("give either --trace PREFIX or --synthetic SEED (not both)")
    chosen = list(policies or DEFAULT_POLICIES)
    if oracle and "oracle" not in chosen:
        chosen.append("oracle")
    resolved = [resolve(name) for name in chosen]  # fail on a bad name before loading anything
    data = load_azure2019(trace) if trace is not None else generate(synthetic, functions)
    if half is not None:
        data = data.half(half)
    for reason, count in data.skipped.items():
        say(f"skipped {output.plural(count, 'function')}: {reason}", err=True)
    results = []
    for policy in resolved:
        started = time.perf_counter()
        results.append((run(data, policy), time.perf_counter() - started))
    if as_json:
        summaries = [result.summary() for result, _ in results]
        output.print_json(summaries[0] if len(summaries) == 1 else summaries)
        return
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in ("POLICY", "FUNCTIONS", "INVOCATIONS", "COLD", "COLD %", "P75 FN COLD %", "WASTED GB-S", "TOOK"):
        table.add_column(column, justify="left" if column == "POLICY" else "right", no_wrap=True)
    for result, took in results:
        table.add_row(
            result.policy, f"{len(result.functions):,}", f"{result.invocations:,}", f"{result.cold:,}",
            f"{result.cold_pct:.3f}", f"{result.p75_function_cold_pct:.1f}", f"{result.wasted_gb_s:,.0f}", f"{took:.1f} s",
        )
    output.print_table(table)
