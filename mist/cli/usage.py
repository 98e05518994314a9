"""`mist usage`, `mist invoice` and `mist billing plans|show|set`: what was used, what it costs,
and each tenant's plan and monthly spend cap (docs/billing.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mist.cli import output
from mist.cli.api import Api
from mist.cli.output import fmt_ts, say

_JSON = typer.Option("--json", help="Print the API's JSON.")
_CSV = typer.Option("--csv", help="Print CSV (one header line, then one line per row).")
_TENANT = typer.Argument(metavar="TENANT", help="The tenant (functions belong to one; the default one is 'default').")

USAGE_HELP = """Usage totals: requests, compute (GB-s) and provisioned instances (GB-s), per
function, UTC day or UTC hour.

The period is [--from, --to): dates (midnight UTC) or ISO date-times; by default the current
month. Every attempt that ran is counted (asynchronous retries too); --records lists the
ledger itself, one record per attempt or provisioned span.

Examples:

  mist usage
  mist usage --tenant acme --by day --from 2026-11-01 --to 2026-12-01
  mist usage --by hour --csv > usage.csv
  mist usage --records --limit 20"""

INVOICE_HELP = """A tenant's invoice for a month (YYYY-MM): line items, the free tier and the total.

The month still running shows its total so far.

Examples:

  mist invoice default 2026-11
  mist invoice acme 2026-11 --csv > invoice.csv"""

BILLING_HELP = """Price plans, and each tenant's plan and monthly spend cap.

Plans come from mist up --plans FILE (or plans.toml in the data dir). A tenant whose month so far
reaches its cap has its invocations refused (HTTP 402) until the month ends or the cap is raised.

Examples:

  mist billing plans
  mist billing show acme
  mist billing set acme --plan pro --cap 250.00"""

PLANS_HELP = """List the price plans (* marks the default plan)."""
SHOW_HELP = """Show tenants' plans, spend caps and month-to-date totals; one tenant's with TENANT."""
SET_HELP = """Set a tenant's plan (--plan default: the default plan) and/or monthly spend cap
(--cap none: the plan's cap, if any).

Examples:

  mist billing set acme --plan pro
  mist billing set acme --cap 100.00
  mist billing set acme --cap none"""


def commands() -> typer.Typer:
    billing = typer.Typer(help=output.help_text(BILLING_HELP), no_args_is_help=True)
    billing.command("plans", help=output.help_text(PLANS_HELP))(plans)
    billing.command("show", help=output.help_text(SHOW_HELP))(show)
    billing.command("set", help=output.help_text(SET_HELP))(set_tenant)
    return billing


def _one_format(as_json: bool, as_csv: bool) -> None:
    if as_json and as_csv:
        output.fail("--json and --csv cannot be used together; pick one")


@output.handle_errors
def usage(
    tenant: Annotated[str | None, typer.Option(metavar="TENANT", help="Only this tenant.")] = None,
    start: Annotated[str | None, typer.Option("--from", metavar="DATE", help="From (included).")] = None,
    end: Annotated[str | None, typer.Option("--to", metavar="DATE", help="To (excluded).")] = None,
    by: Annotated[str, typer.Option(metavar="GROUP", help="function, day or hour.")] = "function",
    records: Annotated[bool, typer.Option("--records", help="List the usage records instead of totals.")] = False,
    limit: Annotated[int, typer.Option(metavar="N", min=1, help="With --records: at most this many.")] = 100,
    as_json: Annotated[bool, _JSON] = False,
    as_csv: Annotated[bool, _CSV] = False,
) -> None:
    _one_format(as_json, as_csv)
    params = {k: v for k, v in (("tenant", tenant), ("from", start), ("to", end), ("by", by)) if v is not None}
    with Api() as api:
        if records:
            _records(api, params, limit, as_json)
            return
        if as_csv:
            typer.echo(api.usage(params, csv=True), nl=False)
            return
        report = api.usage(params)
    if as_json:
        output.print_json(report)
        return
    group = str(report.get("by"))
    table = output.table("TENANT", group.upper(), "REQUESTS", "FAILED", "COLD", "BILLED MS", "GB-S",
                         "PROVISIONED GB-S")  # fmt: skip
    for row in [*report.get("rows", []), {"tenant": "total", group: "", **report.get("total", {})}]:
        table.add_row(str(row.get("tenant")), str(row.get(group)), f"{row.get('requests', 0):,}",
                      f"{row.get('failed', 0):,}", f"{row.get('cold_starts', 0):,}", f"{row.get('billed_ms', 0):,}",
                      str(row.get("gb_s")), str(row.get("provisioned_gb_s")))  # fmt: skip
    output.print_table(table)
    say(f"from {fmt_ts(report.get('from'))} to {fmt_ts(report.get('to'))} (excluded), by {group}", err=True)


def _records(api: Api, params: dict[str, Any], limit: int, as_json: bool) -> None:
    params = {k: v for k, v in params.items() if k != "by"}
    found: list[dict[str, Any]] = []
    after = None
    while len(found) < limit:
        page = api.usage_records({**params, "limit": min(limit - len(found), 10_000),
                                  **({"after": after} if after else {})})  # fmt: skip
        found += page.get("records", [])
        after = page.get("next")
        if not after:
            break
    if as_json:
        output.print_json({"records": found})
        return
    table = output.table("ID", "TENANT", "FUNCTION", "VERSION", "TRIGGER", "STARTED", "BILLED MS", "MEMORY",
                         "GB-S", "OUTCOME")  # fmt: skip
    for r in found:
        table.add_row(str(r.get("id")), str(r.get("tenant")), str(r.get("function")), str(r.get("version")),
                      str(r.get("trigger")), fmt_ts(r.get("started_at")), f"{r.get('billed_ms', 0):,}",
                      f"{r.get('memory_mb')} MB" + (f" x {r['instances']}" if r.get("instances", 1) != 1 else ""),
                      str(r.get("gb_s")), str(r.get("outcome")))  # fmt: skip
    output.print_table(table)


@output.handle_errors
def invoice(
    tenant: Annotated[str, _TENANT],
    month: Annotated[str, typer.Argument(metavar="MONTH", help="The month, YYYY-MM (UTC).")],
    as_json: Annotated[bool, _JSON] = False,
    as_csv: Annotated[bool, _CSV] = False,
) -> None:
    _one_format(as_json, as_csv)
    with Api() as api:
        if as_csv:
            typer.echo(api.invoice(tenant, month, csv=True), nl=False)
            return
        doc = api.invoice(tenant, month)
    if as_json:
        output.print_json(doc)
        return
    currency = doc.get("currency")
    say(f"Invoice  {doc.get('tenant')}  {doc.get('month')}  (plan {doc['plan']['name']}, {currency}; "
        f"{doc.get('status')})", style="bold")  # fmt: skip
    table = output.table("ITEM", "QUANTITY", "UNIT", "UNIT PRICE", "AMOUNT")
    for line in doc.get("lines", []):
        table.add_row(str(line.get("kind")), str(line.get("quantity")), str(line.get("unit")),
                      str(line.get("unit_price")), str(line.get("amount")))  # fmt: skip
    table.add_row("subtotal", "", "", "", str(doc.get("subtotal")))
    table.add_row("free tier", "", "", "", str(doc.get("free_tier")))
    table.add_row("total", "", "", "", f"{doc.get('total')} {currency}")
    output.print_table(table)
    functions = doc.get("by_function") or []
    if functions:
        say("")
        by_fn = output.table("FUNCTION", "REQUESTS", "GB-S", "PROVISIONED GB-S")
        for f in functions:
            by_fn.add_row(str(f.get("function")), f"{f.get('requests', 0):,}", str(f.get("gb_s")),
                          str(f.get("provisioned_gb_s")))  # fmt: skip
        output.print_table(by_fn)


@output.handle_errors
def plans(as_json: Annotated[bool, _JSON] = False) -> None:
    with Api() as api:
        config = api.plans()
    if as_json:
        output.print_json(config)
        return
    table = output.table("PLAN", "CURRENCY", "PER 1M REQUESTS", "PER GB-S", "PER PROVISIONED GB-S",
                         "FREE REQUESTS", "FREE GB-S", "DEFAULT CAP")  # fmt: skip
    for p in config.get("plans", []):
        name = str(p.get("name")) + (" *" if p.get("name") == config.get("default_plan") else "")
        table.add_row(name, str(p.get("currency")), str(p.get("per_million_requests")), str(p.get("per_gb_s")),
                      str(p.get("per_provisioned_gb_s")), f"{p.get('free_requests', 0):,}",
                      f"{p.get('free_gb_s', 0):,}", str(p.get("monthly_spend_cap") or "-"))  # fmt: skip
    output.print_table(table)
    say(f"plans from {config.get('source')}", err=True)


@output.handle_errors
def show(
    tenant: Annotated[str | None, typer.Argument(metavar="[TENANT]", help="One tenant (default: all).")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    with Api() as api:
        found = [api.billing_tenant(tenant)] if tenant is not None else api.billing_tenants()
    if as_json:
        output.print_json(found[0] if tenant is not None else {"tenants": found})
        return
    if not found:
        say("No tenant has usage this month or settings of its own.")
        return
    table = output.table("TENANT", "PLAN", "MONTHLY CAP", "MONTH", "MONTH TO DATE", "REQUESTS", "CAP REACHED")
    for t in found:
        plan = str(t.get("plan")) + (" (default)" if t.get("plan_is_default") else "")
        cap = t.get("monthly_spend_cap")
        cap_text = "-" if cap is None else f"{cap}" + (" (plan's)" if t.get("cap_is_plan_default") else "")
        table.add_row(str(t.get("tenant")), plan, cap_text, str(t.get("month")),
                      f"{t.get('month_to_date')} {t.get('currency')}", f"{t.get('requests', 0):,}",
                      "yes: invocations refused" if t.get("cap_reached") else "no")  # fmt: skip
    output.print_table(table)


@output.handle_errors
def set_tenant(
    tenant: Annotated[str, _TENANT],
    plan: Annotated[str | None, typer.Option(metavar="NAME", help="A plan (mist billing plans), or default.")] = None,
    cap: Annotated[str | None, typer.Option(metavar="AMOUNT", help="Monthly spend cap, e.g. 100.00; none: the plan's.")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    if plan is None and cap is None:
        output.fail("nothing to set: pass --plan NAME and/or --cap AMOUNT (see mist billing set --help)")
    changes: dict[str, Any] = {}
    if plan is not None:
        changes["plan"] = None if plan == "default" else plan
    if cap is not None:
        changes["monthly_spend_cap"] = None if cap.strip().lower() == "none" else cap
    with Api() as api:
        t = api.set_billing_tenant(tenant, changes)
    if as_json:
        output.print_json(t)
        return
    cap_text = "no cap" if t.get("monthly_spend_cap") is None else f"cap {t['monthly_spend_cap']} {t.get('currency')}/month"
    say(f"{t.get('tenant')}: plan {t.get('plan')}, {cap_text}; {t.get('month_to_date')} {t.get('currency')} "
        f"so far in {t.get('month')}" + (" (cap reached: invocations refused)" if t.get("cap_reached") else ""))  # fmt: skip
