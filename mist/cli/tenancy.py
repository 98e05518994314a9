"""`mist tenant ...`, `mist key ...`, `mist audit`, `mist whoami` and `mist login`: tenants, API
keys and roles, the audit log, and giving the CLI its key."""

from __future__ import annotations

import os
from typing import Annotated, Any

import httpx
import typer

from mist.cli import output
from mist.cli.api import Api, ApiError, base_url, make_client
from mist.cli.output import fail, fmt_ts, say
from mist.tenancy import discovery

_JSON = typer.Option("--json", help="Print the API's JSON instead of text.")
TenantOption = Annotated[
    str | None,
    typer.Option("--tenant", metavar="TENANT", help="Act in this tenant (admin keys only; default: the key's own)."),
]

TENANT_HELP = """Tenants: who owns functions, keys, buckets and records, and their limits (admin keys).

Every function, trigger, bucket, record, log line and key belongs to one tenant; a tenant sees
nothing of another's. `mist up` starts with the tenant `default`. See docs/tenancy.md.

Examples:

  mist tenant create acme --rate 100 --burst 200 --max-concurrency 50
  mist tenant ls
  mist tenant limits acme --max-queued 500 --weight 2
  mist key create --tenant acme --role tenant-admin --name "acme's admin"
  mist tenant rm acme"""

KEY_HELP = """API keys: create, list and revoke the keys that authenticate requests to mist.

Roles: admin (every tenant), tenant-admin (its tenant, keys included), developer (deploy, invoke,
logs, triggers, secrets), invoker (invoke only), viewer (read only). A key is shown once, when
created; mist keeps only its hash.

Examples:

  mist key create --role developer --name "ci deploys" --expires 2027-06-30
  mist key create --tenant acme --role invoker --json
  mist key ls
  mist key revoke 3f2a9c01b4d7"""

AUDIT_HELP = """The audit log: every change made through the API and every refused request, newest first.

Examples:

  mist audit
  mist audit --since 2026-12-01 --limit 500
  mist audit --tenant acme --json
  mist audit --all          (admin: every tenant)"""

WHOAMI_HELP = """Show the key the CLI uses: its id, role and tenant, and the tenant's limits.

Examples:

  mist whoami
  mist whoami --json"""

LOGIN_HELP = """Save a server URL and API key for the CLI (in ~/.config/mist/config.json, mode 0600).

The key is checked against the server first. Without --key it is read from standard input. A
`mist up` on this machine needs no login: the CLI reads its admin key from its data dir.

Examples:

  mist login http://mist.internal:8080 --key mist_3f2a9c01b4d7_...
  echo "$KEY" | mist login http://mist.internal:8080"""


def _in_tenant(tenant: str | None) -> None:
    if tenant:
        os.environ["MIST_TENANT"] = tenant


class TenancyApi(Api):
    def whoami(self) -> dict[str, Any]:
        return dict(self._json("GET", "/v1/whoami"))

    def tenants(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/tenants").get("tenants", []))

    def create_tenant(self, name: str, limits: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", "/v1/tenants", json={"name": name, "limits": limits}))

    def set_limits(self, name: str, limits: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json("PATCH", f"/v1/tenants/{name}/limits", json=limits))

    def get_tenant(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/tenants/{name}"))

    def delete_tenant(self, name: str) -> None:
        self._json("DELETE", f"/v1/tenants/{name}")

    def create_key(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", "/v1/keys", json=body))

    def keys(self, every: bool) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/keys", params={"all": "true"} if every else None).get("keys", []))

    def revoke(self, key_id: str) -> dict[str, Any]:
        return dict(self._json("DELETE", f"/v1/keys/{key_id}"))

    def audit(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/audit", params=params).get("entries", []))


def _limits(rate: float | None, burst: int | None, max_concurrency: int | None, max_queued: int | None,
            weight: int | None, clear: list[str] | None) -> dict[str, Any]:
    limits: dict[str, Any] = {k: v for k, v in (
        ("rate_per_s", rate), ("burst", burst), ("max_concurrency", max_concurrency), ("max_queued", max_queued),
        ("weight", weight)) if v is not None}  # fmt: skip
    for name in clear or []:
        limits[name.replace("-", "_")] = None
    return limits


RateOpt = Annotated[float | None, typer.Option("--rate", metavar="PER_S", help="Requests per second (token bucket).")]
BurstOpt = Annotated[int | None, typer.Option(metavar="N", help="Token bucket size (default: the rate).")]
ConcOpt = Annotated[int | None, typer.Option(metavar="N", help="Executions at once, all functions together.")]
QueuedOpt = Annotated[int | None, typer.Option(metavar="N", help="Requests waiting for capacity at once.")]
WeightOpt = Annotated[int | None, typer.Option(metavar="N", help="Share when waiting for capacity and for CPU (1-1000).")]


def _print_tenant(t: dict[str, Any]) -> None:
    limits = t.get("limits") or {}
    say(f"{t.get('name')}", style="bold")
    rate = limits.get("rate_per_s")
    burst = limits.get("burst") or (max(1, int(rate)) if rate else None)
    say("  rate           " + (f"{rate:g}/s, burst {burst}" if rate else "no limit"))
    say(f"  concurrency    {limits.get('max_concurrency') or 'no limit'}")
    say(f"  queued         {limits.get('max_queued') if limits.get('max_queued') is not None else 'no limit'}")
    say(f"  weight         {limits.get('weight', 1)}")
    say(f"  created        {fmt_ts(t.get('created_at'))}")


@output.handle_errors
def tenant_create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The new tenant's name (like a function name).")],
    rate: RateOpt = None, burst: BurstOpt = None, max_concurrency: ConcOpt = None, max_queued: QueuedOpt = None,
    weight: WeightOpt = None, as_json: Annotated[bool, _JSON] = False,
) -> None:
    with TenancyApi() as api:
        tenant = api.create_tenant(name, _limits(rate, burst, max_concurrency, max_queued, weight, None))
    if as_json:
        output.print_json(tenant)
        return
    say(f"Created tenant {name}. Give it a key: mist key create --tenant {name} --role tenant-admin")


@output.handle_errors
def tenant_ls(as_json: Annotated[bool, _JSON] = False) -> None:
    with TenancyApi() as api:
        tenants = api.tenants()
    if as_json:
        output.print_json({"tenants": tenants})
        return
    table = output.table("NAME", "RATE/S", "BURST", "CONCURRENCY", "QUEUED", "WEIGHT", "CREATED")
    for t in tenants:
        lim = t.get("limits") or {}
        table.add_row(str(t.get("name")), *(_dash(lim.get(k)) for k in ("rate_per_s", "burst", "max_concurrency",
                                                                          "max_queued")),
                      str(lim.get("weight", 1)), fmt_ts(t.get("created_at")))
    output.print_table(table)


@output.handle_errors
def tenant_show(name: Annotated[str, typer.Argument(metavar="NAME")], as_json: Annotated[bool, _JSON] = False) -> None:
    with TenancyApi() as api:
        tenant = api.get_tenant(name)
    if as_json:
        output.print_json(tenant)
    else:
        _print_tenant(tenant)


@output.handle_errors
def tenant_limits(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    rate: RateOpt = None, burst: BurstOpt = None, max_concurrency: ConcOpt = None, max_queued: QueuedOpt = None,
    weight: WeightOpt = None,
    clear: Annotated[list[str] | None, typer.Option(metavar="LIMIT", help="Remove a limit (rate-per-s, burst, "
                                                    "max-concurrency, max-queued); repeat for more.")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Change a tenant's limits (admin)."""
    with TenancyApi() as api:
        tenant = api.set_limits(name, _limits(rate, burst, max_concurrency, max_queued, weight, clear))
    if as_json:
        output.print_json(tenant)
    else:
        _print_tenant(tenant)


@output.handle_errors
def tenant_rm(name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    with TenancyApi() as api:
        api.delete_tenant(name)
    say(f"Deleted tenant {name}; its keys are revoked")


@output.handle_errors
def key_create(
    role: Annotated[str, typer.Option(metavar="ROLE", help="admin, tenant-admin, developer, invoker or viewer.")],
    name: Annotated[str, typer.Option(metavar="TEXT", help="What the key is for (shown in mist key ls).")] = "",
    expires: Annotated[str | None, typer.Option(metavar="TIME", help="Expiry, ISO 8601 (2027-06-30 or "
                                                "2027-06-30T12:00:00Z); default: never.")] = None,
    tenant: TenantOption = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    _in_tenant(tenant)
    body: dict[str, Any] = {"role": role, "name": name}
    if expires:
        body["expires_at"] = expires if "T" in expires else expires + "T00:00:00Z"
    with TenancyApi() as api:
        key = api.create_key(body)
    if as_json:
        output.print_json(key)
        return
    say(str(key.get("key")))
    say(f"Created {key.get('role')} key {key.get('key_id')} in tenant {key.get('tenant')}. It is shown only now: "
        "store it (e.g. MIST_API_KEY=... or mist login URL --key ...).", err=True)


@output.handle_errors
def key_ls(
    every: Annotated[bool, typer.Option("--all", help="Every tenant's keys (admin).")] = False,
    tenant: TenantOption = None, as_json: Annotated[bool, _JSON] = False,
) -> None:
    _in_tenant(tenant)
    with TenancyApi() as api:
        keys = api.keys(every)
    if as_json:
        output.print_json({"keys": keys})
        return
    table = output.table("KEY ID", "TENANT", "ROLE", "STATE", "NAME", "CREATED", "EXPIRES")
    for k in keys:
        table.add_row(str(k.get("key_id")), str(k.get("tenant")), str(k.get("role")), str(k.get("state")),
                      str(k.get("name") or "-"), fmt_ts(k.get("created_at")),
                      fmt_ts(k.get("expires_at")) if k.get("expires_at") else "never")
    output.print_table(table)


@output.handle_errors
def key_revoke(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="The key's id (mist key ls).")],
    tenant: TenantOption = None,
) -> None:
    _in_tenant(tenant)
    with TenancyApi() as api:
        api.revoke(key_id)
    say(f"Revoked key {key_id}: requests with it are refused from now on")


@output.handle_errors
def audit(
    since: Annotated[str | None, typer.Option(metavar="TIME", help="From this time (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(metavar="TIME", help="Before this time (ISO 8601).")] = None,
    limit: Annotated[int, typer.Option(metavar="N", help="At most this many entries (up to 10000).")] = 100,
    every: Annotated[bool, typer.Option("--all", help="Every tenant's entries (admin).")] = False,
    tenant: TenantOption = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    _in_tenant(tenant)
    params: dict[str, Any] = {"limit": limit}
    for key, value in (("since", since), ("until", until)):
        if value:
            params[key] = value if "T" in value else value + "T00:00:00Z"
    if every:
        params["all"] = "true"
    with TenancyApi() as api:
        entries = api.audit(params)
    if as_json:
        output.print_json({"entries": entries})
        return
    if not entries:
        say("No audit entries in that window.")
        return
    table = output.table("TIME", "TENANT", "ACTOR", "ROLE", "ACTION", "STATUS", "FROM")
    for e in entries:
        table.add_row(fmt_ts(e.get("ts")), str(e.get("tenant")), str(e.get("actor")), str(e.get("role")),
                      str(e.get("action")), str(e.get("status")), str(e.get("source_ip")))
    output.print_table(table)


@output.handle_errors
def whoami(as_json: Annotated[bool, _JSON] = False) -> None:
    with TenancyApi() as api:
        me = api.whoami()
    if as_json:
        output.print_json(me)
        return
    say(f"key {me.get('key_id')} ({me.get('role')}, tenant {me.get('key_tenant')}) at {base_url()}")
    if me.get("name"):
        say(f"  {me.get('name')}")
    _print_tenant(me.get("tenant") or {})


@output.handle_errors
def login(
    url: Annotated[str, typer.Argument(metavar="URL", help="The mist server, e.g. http://mist.internal:8080.")],
    key: Annotated[str | None, typer.Option(metavar="KEY", help="The API key (default: read from stdin).")] = None,
) -> None:
    if key is None:
        key = typer.prompt("API key", hide_input=True) if os.isatty(0) else input().strip()
    url = url.rstrip("/")
    os.environ["MIST_URL"] = url
    os.environ["MIST_API_KEY"] = key.strip()
    client = make_client()
    try:
        with TenancyApi(client) as api:
            me = api.whoami()
    except ApiError as exc:
        fail(f"{url} did not accept the key: {exc.message}")
    except httpx.HTTPError as exc:  # pragma: no cover - Api maps transport errors itself
        fail(str(exc))
    path = discovery.write_config(url, key.strip())
    say(f"Logged in to {url} as key {me.get('key_id')} ({me.get('role')}, tenant {me.get('key_tenant')}); "
        f"saved in {path}")


def _dash(value: object) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def commands() -> tuple[typer.Typer, typer.Typer]:
    """(`mist tenant`, `mist key`) for main.py to add."""
    tenant = typer.Typer(help=output.help_text(TENANT_HELP), no_args_is_help=True)
    tenant.command("create", help="Create a tenant, optionally with limits (admin).")(tenant_create)
    tenant.command("ls", help="List the tenants and their limits (admin).")(tenant_ls)
    tenant.command("show", help="Show one tenant and its limits (admin).")(tenant_show)
    tenant.command("limits", help="Change a tenant's limits (admin).")(tenant_limits)
    tenant.command("rm", help="Delete a tenant that has no functions; its keys are revoked (admin).")(tenant_rm)
    key = typer.Typer(help=output.help_text(KEY_HELP), no_args_is_help=True)
    key.command("create", help="Create an API key; it is printed once.")(key_create)
    key.command("ls", help="List the API keys (never the keys themselves).")(key_ls)
    key.command("revoke", help="Revoke an API key: it stops working at once.")(key_revoke)
    return tenant, key
