"""`mist ls`, `mist show` and `mist rm`: read and delete deployed functions."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from mist.cli import output
from mist.cli.api import Api, ApiError
from mist.cli.secrets import SecretApi
from mist.cli.output import EXIT_FAILED, fmt_bytes, fmt_seconds, fmt_ts, say
from mist.control import packaging

LS_HELP = """List the deployed functions and their newest versions.

Examples:

  mist ls
  mist ls --json"""

SHOW_HELP = """Show a function: its newest version's configuration and its recent invocations.

Examples:

  mist show hello
  mist show hello --json"""

RM_HELP = """Delete a function: its versions and code go, its invocation records stay.

Asks first when run in a terminal; --yes skips the question.

Examples:

  mist rm hello
  mist rm hello --yes"""

_JSON = typer.Option("--json", help="Print the API's JSON instead of a table.")


@output.handle_errors
def ls(as_json: Annotated[bool, _JSON] = False) -> None:
    with Api() as api:
        functions = api.list_functions()
    if as_json:
        output.print_json({"functions": functions})
        return
    if not functions:
        say("No functions deployed yet. Deploy one with: mist deploy hello ./hello")
        return
    table = output.table("NAME", "VERSION", "HANDLER", "MEMORY", "TIMEOUT", "UPDATED")
    for f in functions:
        latest = f.get("latest") or {}
        table.add_row(
            str(f.get("name")), str(f.get("latest_version")), str(latest.get("handler", "-")),
            f"{latest.get('memory_mb', '-')} MB", fmt_seconds(latest.get("timeout_s")), fmt_ts(f.get("updated_at")),
        )
    output.print_table(table)


def _limits(latest: dict[str, Any]) -> str:
    parts = []
    if latest.get("reserved_concurrency") is not None:
        parts.append(f"reserved concurrency {latest['reserved_concurrency']}")
    if latest.get("rate_per_s") is not None:
        burst = latest.get("burst") or max(1, int(latest["rate_per_s"]))
        parts.append(f"{latest['rate_per_s']:g} requests/s (burst {burst})")
    if latest.get("max_queued") is not None:
        parts.append(f"{latest['max_queued']} queued")
    return ", ".join(parts) or "the tenant's"


def _http_trigger(function: dict[str, Any], latest: dict[str, Any]) -> str:
    tenant = function.get("tenant") or "default"
    path = f"/fn/{function.get('name')}" + ("" if tenant == "default" else f".{tenant}")
    auth = "public" if latest.get("http_auth", "public") == "public" else "API keys of the tenant only"
    return f"{path}/... ({auth})"


@output.handle_errors
def show(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The function to show.")],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    packaging.validate_name(name)
    with SecretApi() as api:
        function = api.get_function(name)
        invocations = api.list_invocations(name, limit=5)
        try:  # names only, never values
            secrets: list[dict[str, Any]] | None = api.list_secrets(name)
            secrets_text = " ".join(str(s.get("name")) for s in secrets or []) or "-"
        except ApiError as exc:  # a role without access to secrets, a server without a secrets key
            secrets = None
            secrets_text = "(not readable with this API key)" if exc.status == 403 else f"(unavailable: {exc})"
    if as_json:
        output.print_json({"function": function, "invocations": invocations, "secrets": secrets})
        return
    latest: dict[str, Any] = function.get("latest") or {}
    env = latest.get("env") or {}
    rows = [
        ("handler", latest.get("handler")),
        ("memory", f"{latest.get('memory_mb')} MB"),
        ("timeout", fmt_seconds(latest.get("timeout_s"))),
        ("concurrency", latest.get("concurrency")),
        ("env", " ".join(f"{k}={v}" for k, v in sorted(env.items())) or "-"),
        ("secrets", secrets_text),
        ("code", f"{str(latest.get('code_sha256'))[:12]} ({fmt_bytes(latest.get('code_size'))} zipped)"),
        ("dependencies", f"layer {str(latest.get('layer_sha256'))[:12]}" if latest.get("layer_sha256") else "none"),
        ("instances", f"min {latest.get('min_instances') or 0}, max {latest.get('max_instances') or 'unlimited'}"),
        ("async", f"{latest.get('retries', 2)} retries, max event age {fmt_seconds(latest.get('max_event_age_s'))}"),
        ("on success", latest.get("on_success") or "-"),
        ("on failure", latest.get("on_failure") or "the function's dead-letter queue (mist dlq ls)"),
        ("http trigger", _http_trigger(function, latest)),
        ("limits", _limits(latest)),
        ("network", _network(latest.get("network"))),
        ("created", fmt_ts(function.get("created_at"))),
        ("updated", fmt_ts(function.get("updated_at"))),
    ]
    say(f"{function.get('name')}  version {function.get('latest_version')}", style="bold")
    for key, value in rows:
        say(f"  {key:<13}{value}")
    if not invocations:
        say(f"\nNo invocations yet. Try: mist invoke {name}")
        return
    say("\nRecent invocations", style="bold")
    table = output.table("ID", "VERSION", "STATUS", "COLD", "DURATION", "STARTED")
    for inv in invocations:
        status = str(inv.get("status"))
        if inv.get("error_type"):
            status += f" ({inv['error_type']})"
        duration = inv.get("duration_ms")
        table.add_row(
            str(inv.get("id")), str(inv.get("version")), status, "yes" if inv.get("cold_start") else "no",
            f"{duration:.1f} ms" if isinstance(duration, (int, float)) else "-", fmt_ts(inv.get("started_at")),
        )
    output.print_table(table)


def _network(value: Any) -> str:
    """`none`, or `egress to api.github.com:443, 203.0.113.0/24` (older servers: none)."""
    rules = value.get("egress") if isinstance(value, dict) else None
    return f"egress to {', '.join(map(str, rules))}" if rules else "none"


def interactive() -> bool:
    """Whether a person can answer a question (stdin is a terminal)."""
    return sys.stdin.isatty()


@output.handle_errors
def rm(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The function to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    packaging.validate_name(name)
    if not yes and interactive() and not typer.confirm(f"Delete function {name} and all its versions?"):
        say(f"Not deleted: {name}", err=True)
        raise typer.Exit(EXIT_FAILED)
    with Api() as api:
        api.delete_function(name)
    say(f"Deleted {name}")


