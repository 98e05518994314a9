"""`mist invocation show`, `mist dlq ls|show|redrive` and `mist queue ls|receive|delete`:
asynchronous invocations, dead-letter queues and mist queues (docs/events.md)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from mist.cli import output
from mist.cli.api import Api
from mist.cli.output import fmt_ts, plural, say
from mist.control import packaging

_JSON = typer.Option("--json", help="Print the API's JSON instead of text.")
_NAME = typer.Argument(metavar="NAME", help="The function.")

INVOCATION_HELP = """Asynchronous invocations and invocation records.

Examples:

  mist invocation show 0661279554fbedf17e3a18fce9ea656c"""

SHOW_INVOCATION_HELP = """Show an invocation: for an asynchronous one (mist invoke --async), its status
(queued, running, succeeded, failed, dead-lettered) and each attempt with its error; for a
synchronous one, its record.

Examples:

  mist invocation show 0661279554fbedf17e3a18fce9ea656c
  mist invocation show 0661279554fbedf17e3a18fce9ea656c --json"""

DLQ_HELP = """A function's dead-letter queue: its asynchronous invocations that failed for good.

An event lands here when its retries are used up or it grew older than the function's
--max-event-age, unless the function has an --on-failure destination. Each entry is Lambda's
destination record: the event, the condition, the attempts and the last error.

Examples:

  mist dlq ls resize
  mist dlq show resize 06612795...
  mist dlq redrive resize
  mist dlq redrive resize --id 06612795... --id 06612796..."""

DLQ_LS_HELP = """List a function's dead-letter queue, oldest first: id, when, attempts, last error.

Examples:

  mist dlq ls resize
  mist dlq ls resize --json"""

DLQ_SHOW_HELP = """Print one dead-lettered event's destination record (JSON).

Examples:

  mist dlq show resize 06612795..."""

DLQ_REDRIVE_HELP = """Run dead-lettered events again as new asynchronous invocations of the function's
newest version; each leaves the queue as its new invocation is stored. Without --id: every
entry (up to 10,000 per run).

Examples:

  mist dlq redrive resize
  mist dlq redrive resize --id 06612795..."""

QUEUE_HELP = """mist queues: where destinations (--on-success queue:NAME, --on-failure queue:NAME) send records.

A received message is hidden for the visibility timeout; delete it once handled, or it is
received again (at least once).

Examples:

  mist queue ls
  mist queue receive resized --max 10
  mist queue delete resized 06612795..."""

QUEUE_LS_HELP = """List the queues that hold messages, with how many are visible (not being received).

Examples:

  mist queue ls
  mist queue ls --json"""

QUEUE_RECEIVE_HELP = """Receive messages from a queue (oldest first) and print them; they are hidden for
--visibility-timeout seconds, then received again unless deleted with mist queue delete.

Examples:

  mist queue receive resized
  mist queue receive resized --max 100 --visibility-timeout 120 --json"""

QUEUE_DELETE_HELP = """Delete received messages from a queue.

Examples:

  mist queue delete resized 06612795... 06612796..."""


def commands() -> tuple[typer.Typer, typer.Typer, typer.Typer]:
    """The `invocation`, `dlq` and `queue` command groups."""
    invocation = typer.Typer(help=output.help_text(INVOCATION_HELP), no_args_is_help=True)
    invocation.command("show", help=output.help_text(SHOW_INVOCATION_HELP))(show_invocation)
    dlq = typer.Typer(help=output.help_text(DLQ_HELP), no_args_is_help=True)
    dlq.command("ls", help=output.help_text(DLQ_LS_HELP))(dlq_ls)
    dlq.command("show", help=output.help_text(DLQ_SHOW_HELP))(dlq_show)
    dlq.command("redrive", help=output.help_text(DLQ_REDRIVE_HELP))(dlq_redrive)
    queue = typer.Typer(help=output.help_text(QUEUE_HELP), no_args_is_help=True)
    queue.command("ls", help=output.help_text(QUEUE_LS_HELP))(queue_ls)
    queue.command("receive", help=output.help_text(QUEUE_RECEIVE_HELP))(queue_receive)
    queue.command("delete", help=output.help_text(QUEUE_DELETE_HELP))(queue_delete)
    return invocation, dlq, queue


# -- mist invocation show ------------------------------------------------------------------------


@output.handle_errors
def show_invocation(
    invocation_id: Annotated[str, typer.Argument(metavar="ID", help="The invocation id.")],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    with Api() as api:
        inv = api.get_invocation(invocation_id)
    if as_json:
        output.print_json(inv)
        return
    if inv.get("invocation_type") != "Event":
        _show_record(inv)
        return
    status = str(inv.get("status"))
    if inv.get("condition") and status not in ("queued", "running", "succeeded"):
        status += f" ({inv['condition']})"
    say(f"{inv.get('id')}  {inv.get('function')}  {status}", style="bold")
    rows = [
        ("created", fmt_ts(inv.get("created_at"))),
        ("trigger", inv.get("trigger")),
        ("next attempt", fmt_ts(inv.get("next_attempt_at")) if inv.get("next_attempt_at") else None),
        ("record sent to", _destination(inv.get("destination"), str(inv.get("function")))),
        ("idempotency key", inv.get("idempotency_key")),
    ]
    for key, value in rows:
        if value:
            say(f"  {key:<17}{value}")
    attempts = inv.get("attempts") or []
    if not attempts:
        say("\nNo attempt yet.")
        return
    table = output.table("ATTEMPT", "OUTCOME", "STARTED", "VERSION", "ERROR")
    for a in attempts:
        error = f"{a.get('error_type')}: {a.get('error_message')}" if a.get("error_type") else "-"
        table.add_row(str(a.get("attempt")), str(a.get("outcome")), fmt_ts(a.get("started_at")),
                      str(a.get("version") or "-"), error)  # fmt: skip
    say("")
    output.print_table(table)


def _destination(destination: object, function: str) -> str | None:
    if destination == "dlq":
        return f"the dead-letter queue (mist dlq ls {function})"
    return str(destination) if destination else None


def _show_record(inv: dict[str, Any]) -> None:
    status = str(inv.get("status"))
    if inv.get("error_type"):
        status += f" ({inv['error_type']}: {inv.get('error_message')})"
    say(f"{inv.get('id')}  {inv.get('function')}  {status}", style="bold")
    duration = inv.get("duration_ms")
    rows = [
        ("version", inv.get("version")),
        ("trigger", inv.get("trigger")),
        ("started", fmt_ts(inv.get("started_at"))),
        ("duration", f"{duration:.1f} ms" if isinstance(duration, (int, float)) else "-"),
        ("cold start", "yes" if inv.get("cold_start") else "no"),
    ]
    for key, value in rows:
        say(f"  {key:<12}{value}")


# -- mist dlq ------------------------------------------------------------------------------------


@output.handle_errors
def dlq_ls(
    name: Annotated[str, _NAME],
    limit: Annotated[int, typer.Option(metavar="N", min=1, max=1000, help="At most this many.")] = 100,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    packaging.validate_name(name)
    with Api() as api:
        entries = api.dead_letters(name, limit)
    if as_json:
        output.print_json({"messages": entries})
        return
    if not entries:
        say(f"The dead-letter queue of {name} is empty.")
        return
    table = output.table("ID", "SENT", "INVOCATION", "ATTEMPTS", "CONDITION", "LAST ERROR")
    for e in entries:
        error = f"{e.get('error_type')}: {e.get('error_message')}" if e.get("error_type") else "-"
        table.add_row(str(e.get("id")), fmt_ts(e.get("sent_at")), str(e.get("invocation_id")),
                      str(e.get("attempts")), str(e.get("condition")), error)  # fmt: skip
    output.print_table(table)


@output.handle_errors
def dlq_show(
    name: Annotated[str, _NAME],
    message_id: Annotated[str, typer.Argument(metavar="ID", help="The entry's id (mist dlq ls).")],
) -> None:
    packaging.validate_name(name)
    with Api() as api:
        entry = api.dead_letter(name, message_id)
    output.print_json(entry.get("record"))


@output.handle_errors
def dlq_redrive(
    name: Annotated[str, _NAME],
    ids: Annotated[
        list[str] | None, typer.Option("--id", metavar="ID", help="Only this entry; repeat for more.")
    ] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    packaging.validate_name(name)
    with Api() as api:
        moved = api.redrive(name, ids)
    if as_json:
        output.print_json({"redriven": moved})
        return
    for m in moved:
        say(f"{m.get('message_id')} -> invocation {m.get('invocation_id')}")
    say(f"Redrove {plural(len(moved), 'event')} of {name}", err=bool(moved))


# -- mist queue ----------------------------------------------------------------------------------


@output.handle_errors
def queue_ls(as_json: Annotated[bool, _JSON] = False) -> None:
    with Api() as api:
        queues = api.list_queues()
    if as_json:
        output.print_json({"queues": queues})
        return
    if not queues:
        say("No queue holds messages. Queues are made by destinations, e.g. mist deploy ... --on-success queue:done")
        return
    table = output.table("NAME", "MESSAGES", "VISIBLE")
    for q in queues:
        table.add_row(str(q.get("name")), str(q.get("messages")), str(q.get("visible")))
    output.print_table(table)


@output.handle_errors
def queue_receive(
    queue: Annotated[str, typer.Argument(metavar="QUEUE", help="The queue.")],
    max_messages: Annotated[int, typer.Option("--max", metavar="N", min=1, max=100, help="At most this many.")] = 10,
    visibility_timeout: Annotated[
        float, typer.Option(metavar="SECONDS", help="Hidden this long; then received again unless deleted.")
    ] = 30.0,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    with Api() as api:
        messages = api.receive(queue, max_messages, visibility_timeout)
    if as_json:
        output.print_json({"messages": messages})
        return
    if not messages:
        say(f"No message to receive in {queue}.", err=True)
        return
    for m in messages:
        say(f"{m.get('id')}  sent {fmt_ts(m.get('sent_at'))}  received {plural(m.get('receive_count'), 'time')}",
            style="bold")  # fmt: skip
        say(json.dumps(m.get("body"), indent=2, ensure_ascii=False))


@output.handle_errors
def queue_delete(
    queue: Annotated[str, typer.Argument(metavar="QUEUE", help="The queue.")],
    message_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="The messages to delete.")],
) -> None:
    with Api() as api:
        for message_id in message_ids:
            api.delete_message(queue, message_id)
    say(f"Deleted {plural(len(message_ids), 'message')} from {queue}")

