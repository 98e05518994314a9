"""Usage reports and invoices as JSON and CSV (pure: totals in, documents out).

The API serves both formats from here, and the CLI prints what the API answers, so a report
reads the same everywhere. Amounts are decimal strings with cents for reading, and exact
integers of micro-units (`*_micros`) for machines; quantities of GB-s are shown to 6 decimals
(the amounts are computed from the exact MB-ms, never from the shown figure).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from mist.core.pricing import Invoice, Usage, format_money
from mist.metering.plans import plan_json
from mist.metering.store import UsageRow
from mist.metering.usage import gb_s_text, iso

USAGE_COLUMNS = ("requests", "failed", "cold_starts", "billed_ms", "mb_ms", "gb_s", "provisioned_mb_ms",
                 "provisioned_gb_s")  # fmt: skip
LINE_COLUMNS = ("kind", "quantity", "unit", "unit_price", "amount", "amount_micros", "currency")


def usage_json(usage: Usage) -> dict[str, object]:
    return {"requests": usage.requests, "mb_ms": usage.mb_ms, "gb_s": gb_s_text(usage.mb_ms),
            "provisioned_mb_ms": usage.provisioned_mb_ms,
            "provisioned_gb_s": gb_s_text(usage.provisioned_mb_ms)}  # fmt: skip


def usage_report(rows: Sequence[UsageRow], *, tenant: str | None, start: float, end: float, by: str) -> dict[str, Any]:
    total = UsageRow("", "")
    for r in rows:
        total = UsageRow("", "", *(a + b for a, b in zip(_counts(total), _counts(r))))
    out_total = total.to_json()
    del out_total["tenant"], out_total["key"]
    return {
        "tenant": tenant, "from": iso(start), "to": iso(end), "by": by,
        "rows": [_keyed(r, by) for r in rows], "total": out_total,
    }  # fmt: skip


def _counts(r: UsageRow) -> tuple[int, ...]:
    return (r.requests, r.failed, r.cold_starts, r.billed_ms, r.mb_ms, r.provisioned_mb_ms)


def _keyed(row: UsageRow, by: str) -> dict[str, object]:
    data = row.to_json()
    data[by] = data.pop("key")
    return {"tenant": data.pop("tenant"), by: data.pop(by), **data}


def usage_csv(report: Mapping[str, Any]) -> str:
    by = report["by"]
    return _csv(("tenant", by, *USAGE_COLUMNS), ([row[c] for c in ("tenant", by, *USAGE_COLUMNS)]
                                                 for row in report["rows"]))  # fmt: skip


def invoice_json(inv: Invoice, *, tenant: str, month: str, start: float, end: float, closed: bool,
                 cap_micros: int | None) -> dict[str, Any]:  # fmt: skip
    currency = inv.plan.currency
    charges = sum(line.amount_micros for line in inv.lines if line.amount_micros > 0)
    return {
        "tenant": tenant, "month": month, "from": iso(start), "to": iso(end),
        "status": "closed" if closed else "open (month to date)", "plan": plan_json(inv.plan),
        "currency": currency, "usage": usage_json(inv.usage),
        "lines": [line.as_json(currency) for line in inv.lines],
        "subtotal": format_money(charges, None), "subtotal_micros": charges,
        "free_tier": format_money(inv.total_micros - charges, None), "free_tier_micros": inv.total_micros - charges,
        "total": format_money(inv.total_micros, None), "total_micros": inv.total_micros,
        "monthly_spend_cap": None if cap_micros is None else format_money(cap_micros, None),
        "by_function": [{"function": name, **usage_json(u)} for name, u in sorted(inv.by_function.items())],
    }  # fmt: skip


def invoice_csv(doc: Mapping[str, Any]) -> str:
    rows: list[list[object]] = [[line[c] for c in LINE_COLUMNS] for line in doc["lines"]]
    rows.append(["total", "", "", "", doc["total"], doc["total_micros"], doc["currency"]])
    return _csv(LINE_COLUMNS, rows)


def _csv(header: Sequence[str], rows: Any) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()
