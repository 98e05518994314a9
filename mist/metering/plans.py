"""Price plans from config, and which plan and spend cap each tenant has.

`mist up` reads the plans from `--plans FILE`, else from `plans.toml` in its data dir, else
uses DEFAULTS (one plan, "standard", at Lambda's x86 list prices). A plans file:

    default_plan = "standard"          # tenants without a plan of their own are on this one

    [plans.standard]                   # every key optional; missing ones take DEFAULT_PLAN's value
    per_million_requests = "0.20"      # prices as strings stay exact decimals
    per_gb_s = "0.0000166667"
    per_provisioned_gb_s = "0.0000041667"
    free_requests = 1000000            # per month
    free_gb_s = 400000                 # per month, compute only
    currency = "USD"
    monthly_spend_cap = "500.00"       # optional: the default cap of the plan's tenants

A tenant's own settings (`TenantBilling`, stored in the `tenant_billing` table, set with
`mist billing set`) pick its plan and may set its monthly spend cap, which overrides the plan's.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from decimal import Decimal
from pathlib import Path
from typing import Any

from mist.core.pricing import MICROS, PricePlan
from mist.errors import InvalidRequest

PLAN_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
CURRENCY_RE = re.compile(r"[A-Z]{3}")
DEFAULT_PLAN = PricePlan("standard")  # the typed defaults of every plan key (mist.core.pricing)
PLAN_KEYS = tuple(f.name for f in fields(PricePlan) if f.name != "name")


@dataclass(frozen=True)
class BillingConfig:
    plans: dict[str, PricePlan] = field(default_factory=lambda: {DEFAULT_PLAN.name: DEFAULT_PLAN})
    default_plan: str = DEFAULT_PLAN.name
    source: str = "built-in defaults"  # where it was read from, for messages

    def validate(self) -> BillingConfig:
        if not self.plans:
            raise InvalidRequest(f"{self.source}: plans must define at least one plan, e.g. [plans.standard]")
        if self.default_plan not in self.plans:
            raise InvalidRequest(
                f"{self.source}: default_plan must be one of the plans ({', '.join(sorted(self.plans))}), "
                f"got {self.default_plan!r}"
            )
        return self

    def plan(self, name: str | None) -> PricePlan:
        """The plan called `name`; the default plan for None or a plan no longer configured."""
        return self.plans.get(name or self.default_plan) or self.plans[self.default_plan]

    def to_json(self) -> dict[str, Any]:
        return {"default_plan": self.default_plan, "source": self.source,
                "plans": [plan_json(p) for _, p in sorted(self.plans.items())]}  # fmt: skip


def plan_json(plan: PricePlan) -> dict[str, Any]:
    cap = plan.monthly_spend_cap
    return {
        "name": plan.name, "currency": plan.currency, "per_million_requests": str(plan.per_million_requests),
        "per_gb_s": str(plan.per_gb_s), "per_provisioned_gb_s": str(plan.per_provisioned_gb_s),
        "free_requests": plan.free_requests, "free_gb_s": plan.free_gb_s,
        "monthly_spend_cap": None if cap is None else str(cap),
    }  # fmt: skip


def parse(data: Any, source: str) -> BillingConfig:
    """A BillingConfig from a parsed plans file; every message names the file, key and value."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"{source}: must be a table of default_plan and [plans.NAME]")
    unknown = sorted(set(data) - {"default_plan", "plans"})
    if unknown:
        raise InvalidRequest(f"{source}: unknown key(s) {', '.join(unknown)}; known keys: default_plan, plans")
    raw_plans = data.get("plans", {})
    if not isinstance(raw_plans, dict):
        raise InvalidRequest(f"{source}: plans must be a table of [plans.NAME] tables, got {raw_plans!r}")
    plans = {name: _plan(name, body, source) for name, body in raw_plans.items()} or dict(BillingConfig().plans)
    default = data.get("default_plan")
    if default is None:  # the built-in default's name, or the only plan
        default = DEFAULT_PLAN.name if DEFAULT_PLAN.name in plans or len(plans) > 1 else next(iter(plans))
    if not isinstance(default, str):
        raise InvalidRequest(f"{source}: default_plan must be a plan name, got {default!r}")
    return BillingConfig(plans, default, source).validate()


def _plan(name: str, body: Any, source: str) -> PricePlan:
    if not isinstance(name, str) or not PLAN_NAME_RE.fullmatch(name):
        raise InvalidRequest(
            f"{source}: plan name {name!r} is not valid: 1 to 63 of a-z, 0-9, '-' and '_', starting with a letter or digit"
        )
    if not isinstance(body, dict):
        raise InvalidRequest(f"{source}: plans.{name} must be a table of prices, got {body!r}")
    unknown = sorted(set(body) - set(PLAN_KEYS))
    if unknown:
        raise InvalidRequest(f"{source}: plans.{name}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(PLAN_KEYS)}")
    currency = body.get("currency", DEFAULT_PLAN.currency)
    if not isinstance(currency, str) or not CURRENCY_RE.fullmatch(currency):
        raise InvalidRequest(f"{source}: plans.{name}.currency must be a 3-letter code like USD, got {currency!r}")
    values = {k: getattr(DEFAULT_PLAN, k) for k in PLAN_KEYS if k != "monthly_spend_cap"} | body
    for key, value in values.items():
        if isinstance(value, bool):
            raise InvalidRequest(f"{source}: plans.{name}.{key} must be a number, got {value!r}")
    try:
        return PricePlan(name, **values)
    except InvalidRequest as exc:  # "price plan: KEY must ..." -> "FILE: plans.NAME.KEY must ..."
        raise InvalidRequest(f"{source}: plans.{name}.{exc.message.removeprefix('price plan: ')}") from None


def load(path: Path) -> BillingConfig:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise InvalidRequest(f"plans file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequest(f"plans file {path} is not valid TOML: {exc}") from None
    return parse(data, str(path))


def find(data_dir: Path, explicit: Path | None) -> BillingConfig:
    """`--plans FILE` if given, else DATA_DIR/plans.toml if it exists, else the defaults."""
    if explicit is not None:
        return load(explicit)
    in_data_dir = data_dir / "plans.toml"
    return load(in_data_dir) if in_data_dir.is_file() else BillingConfig()


# -- tenants --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantBilling:
    """A tenant's own billing settings; None fields follow the plan config."""

    tenant: str
    plan: str | None = None  # None: the default plan
    monthly_spend_cap: Decimal | None = None  # None: the plan's cap (if any)

    def cap_micros(self, plan: PricePlan) -> int | None:
        if self.monthly_spend_cap is not None:
            return int(self.monthly_spend_cap * MICROS)  # at most 6 decimals: exact
        return plan.cap_micros


def spend_cap(value: Any) -> Decimal | None:
    """A tenant's monthly spend cap as given: an amount with at most 6 decimals, or None (or
    "none") for no cap of its own."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    wrong = InvalidRequest(f"monthly_spend_cap must be an amount >= 0 with at most 6 decimals (e.g. 100.00) "
                           f"or none, got {value!r}")  # fmt: skip
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise wrong
    try:
        cap = Decimal(str(value).strip())
    except ArithmeticError:
        raise wrong from None
    if not cap.is_finite() or cap < 0 or cap != cap.quantize(Decimal("0.000001")):
        raise wrong
    return cap
