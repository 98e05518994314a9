"""`mist trigger add|ls|show|rm`: run functions on object-storage events, schedules and queue messages."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from mist.cli import output
from mist.cli.api import Api
from mist.cli.output import say

TRIGGER_HELP = """Run a function when something happens: an object is stored or deleted in mist's S3
endpoint, a schedule fires, or messages arrive on Redis Streams, NATS JetStream, RabbitMQ or
MQTT. Every event mist accepted is delivered at least once. See docs/triggers.md.

Examples:

  mist trigger add thumbnail --bucket photos --events s3:ObjectCreated:* --suffix .jpg
  mist trigger add report --cron "0 9 * * 1-5"
  mist trigger add orders --source redis://127.0.0.1:6379/0 --stream orders --batch-size 50
  mist trigger ls
  mist trigger rm trg-0123456789abcdef"""

ADD_HELP = """Add a trigger to FUNCTION. Give one kind of source.

Object storage: --bucket B [--events TYPES] [--prefix P] [--suffix S]. TYPES is a
comma-separated list of s3:ObjectCreated:* (or :Put, :Copy, :CompleteMultipartUpload) and
s3:ObjectRemoved:* (or :Delete); default both families. The function gets S3's event
notification {"Records": [...]} as an asynchronous invocation (retries and dead-letter
queue as the function is configured).

Schedule: --cron "MIN HOUR DOM MON DOW" or --rate "N minutes|hours|days", in UTC, and
--missed skip|once: fires missed while mist was down are skipped (default) or the latest
runs once. The function gets EventBridge's Scheduled Event.

Message queue: --source URL with --stream (redis://), --subject (nats://), --queue (amqp://)
or --topic (mqtt://); --batch-size N, --batch-window SECONDS, --max-attempts N, --format
lambda|cloudevents. Each batch is one invocation; a message is acknowledged only after the
function succeeded; returning {"batchItemFailures": [{"itemIdentifier": ID}]} retries only
those; after max attempts a message goes to the function's dead-letter queue. The trigger
reads messages published from its creation on.

Examples:

  mist trigger add thumbnail --bucket photos --events s3:ObjectCreated:* --suffix .jpg
  mist trigger add cleanup --rate "1 hour"
  mist trigger add report --cron "30 6 * * *" --missed once
  mist trigger add orders --source amqp://guest:guest@127.0.0.1:5672/ --queue orders
  mist trigger add sensors --source mqtt://127.0.0.1:1883 --topic site/+/temp"""

LS_HELP = """List triggers and their status (connected, reconnecting with the error, next fire...).

Examples:

  mist trigger ls
  mist trigger ls thumbnail
  mist trigger ls --json"""

SHOW_HELP = """Show one trigger, its full configuration and status.

Examples:

  mist trigger show trg-0123456789abcdef"""

RM_HELP = """Remove a trigger. A queue trigger stops consuming; unacknowledged messages stay on the broker.

Examples:

  mist trigger rm trg-0123456789abcdef"""

_JSON = typer.Option("--json", help="Print the API's JSON instead of text.")


class TriggerApi(Api):
    def add(self, function: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", f"/v1/functions/{function}/triggers", json=body))

    def list(self, function: str | None) -> list[dict[str, Any]]:
        params = {"function": function} if function else None
        return list(self._json("GET", "/v1/triggers", params=params).get("triggers", []))

    def get(self, trigger_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/triggers/{trigger_id}"))

    def remove(self, trigger_id: str) -> None:
        self._json("DELETE", f"/v1/triggers/{trigger_id}")


def _body(*, bucket: str | None, events: str | None, prefix: str | None, suffix: str | None, cron: str | None,
          rate: str | None, missed: str | None, source: str | None, targets: dict[str, str | None],
          batch: dict[str, Any]) -> dict[str, Any]:
    kinds = [k for k, given in (("s3", bucket), ("cron", cron or rate), ("queue", source)) if given]
    if len(kinds) != 1:
        raise typer.BadParameter("give exactly one source: --bucket, --cron/--rate or --source (see --help)")
    kind = kinds[0]
    if kind == "s3":
        body: dict[str, Any] = {"kind": "s3", "bucket": bucket, "prefix": prefix, "suffix": suffix}
        if events:
            body["events"] = [e.strip() for e in events.split(",") if e.strip()]
        return {k: v for k, v in body.items() if v is not None}
    if kind == "cron":
        return {k: v for k, v in {"kind": "cron", "cron": cron, "rate": rate, "missed": missed}.items() if v is not None}
    body = {"kind": "queue", "source": source, **{k: v for k, v in targets.items() if v is not None}}
    return {**body, **{k: v for k, v in batch.items() if v is not None}}


@output.handle_errors
def add(
    function: Annotated[str, typer.Argument(help="The function to run.")],
    bucket: Annotated[str | None, typer.Option(help="S3 bucket whose objects trigger the function.")] = None,
    events: Annotated[str | None, typer.Option(metavar="TYPES", help="S3 event types, comma-separated.")] = None,
    prefix: Annotated[str | None, typer.Option(help="Only object keys starting with this.")] = None,
    suffix: Annotated[str | None, typer.Option(help="Only object keys ending with this.")] = None,
    cron: Annotated[str | None, typer.Option(metavar="EXPR", help="Five-field cron expression (UTC).")] = None,
    rate: Annotated[str | None, typer.Option(metavar="EVERY", help='"N minutes", "N hours" or "N days".')] = None,
    missed: Annotated[str | None, typer.Option(help="Fires missed while mist was down: skip or once.")] = None,
    source: Annotated[str | None, typer.Option(metavar="URL", help="Broker URL: redis://, nats://, amqp://, mqtt://.")] = None,
    stream: Annotated[str | None, typer.Option(help="Redis stream.")] = None,
    subject: Annotated[str | None, typer.Option(help="NATS JetStream subject.")] = None,
    queue: Annotated[str | None, typer.Option(help="RabbitMQ queue.")] = None,
    topic: Annotated[str | None, typer.Option(help="MQTT topic filter.")] = None,
    batch_size: Annotated[int | None, typer.Option(metavar="N", help="Messages per invocation (default 10).")] = None,
    batch_window: Annotated[float | None, typer.Option(metavar="SECONDS", help="Wait up to this long to fill a batch.")] = None,
    max_attempts: Annotated[int | None, typer.Option(metavar="N", help="Deliveries before dead-lettering (default 3).")] = None,
    format: Annotated[str | None, typer.Option(help="Event shape: lambda (default) or cloudevents.")] = None,
    max_consumers: Annotated[int | None, typer.Option(metavar="N", help="Consumers at most, scaled with the backlog (default 4; 1 keeps order).")] = None,
    group: Annotated[str | None, typer.Option(help="Consumer group / durable name / MQTT client id (default: one per trigger).")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    body = _body(bucket=bucket, events=events, prefix=prefix, suffix=suffix, cron=cron, rate=rate, missed=missed,
                 source=source, targets={"stream": stream, "subject": subject, "queue": queue, "topic": topic},
                 batch={"batch_size": batch_size, "batch_window_s": batch_window, "max_attempts": max_attempts,
                        "format": format, "max_consumers": max_consumers, "group": group})
    with TriggerApi() as api:
        trigger = api.add(function, body)
    if as_json:
        output.print_json(trigger)
        return
    say(f"Added trigger {trigger['id']} ({trigger['kind']}) to {function}: {_describe(trigger)}")
    status = trigger.get("status") or {}
    if status.get("state") == "reconnecting":
        say(f"The broker is not reachable yet ({status.get('last_error')}); mist keeps retrying.", err=True)


def _describe(t: dict[str, Any]) -> str:
    c = t.get("config") or {}
    if t.get("kind") == "s3":
        what = ",".join(c.get("events", []))
        keys = f" keys {c.get('prefix') or ''}*{c.get('suffix') or ''}" if c.get("prefix") or c.get("suffix") else ""
        return f"bucket {c.get('bucket')} {what}{keys}"
    if t.get("kind") == "cron":
        return f"cron {c['cron']}" if c.get("cron") else f"every {c.get('rate')}"
    target = next((f"{k} {c[k]}" for k in ("stream", "subject", "queue", "topic") if c.get(k)), "")
    return f"{c.get('source')} {target}"


def _state(t: dict[str, Any]) -> str:
    s = t.get("status") or {}
    if t.get("kind") == "cron":
        return f"next {s.get('next_fire')}"
    state = str(s.get("state", ""))
    if s.get("last_error") and state != "connected":
        state += f": {s['last_error']}"
    return state


@output.handle_errors
def ls(
    function: Annotated[str | None, typer.Argument(help="Only this function's triggers.")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    with TriggerApi() as api:
        triggers = api.list(function)
    if as_json:
        output.print_json({"triggers": triggers})
        return
    if not triggers:
        say("No triggers yet. Add one with: mist trigger add FUNCTION --bucket B | --cron EXPR | --source URL ...")
        return
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in ("ID", "FUNCTION", "KIND", "SOURCE", "DELIVERED", "FAILED", "STATE"):
        table.add_column(column, no_wrap=column != "STATE")
    for t in triggers:
        s = t.get("status") or {}
        table.add_row(t["id"], t["function"], t["kind"], _describe(t), str(s.get("delivered", 0)),
                      str(s.get("failed", 0)), _state(t))
    output.print_table(table)


@output.handle_errors
def show(trigger_id: Annotated[str, typer.Argument(metavar="ID", help="The trigger.")],
         as_json: Annotated[bool, _JSON] = False) -> None:
    with TriggerApi() as api:
        t = api.get(trigger_id)
    if as_json:
        output.print_json(t)
        return
    say(f"{t['id']}  {t['kind']} -> {t['function']}  (created {t.get('created_at')})")
    say(f"  source: {_describe(t)}")
    for key, value in (t.get("status") or {}).items():
        say(f"  {key}: {value}")


@output.handle_errors
def rm(trigger_id: Annotated[str, typer.Argument(metavar="ID", help="The trigger to remove.")]) -> None:
    with TriggerApi() as api:
        api.remove(trigger_id)
    say(f"Removed trigger {trigger_id}")


def commands() -> typer.Typer:
    app = typer.Typer(help=output.help_text(TRIGGER_HELP), no_args_is_help=True)
    app.command("add", help=output.help_text(ADD_HELP))(add)
    app.command("ls", help=output.help_text(LS_HELP))(ls)
    app.command("show", help=output.help_text(SHOW_HELP))(show)
    app.command("rm", help=output.help_text(RM_HELP))(rm)
    return app
