"""`mist logs`: print a function's log lines, or follow them as invocations finish."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.text import Text

from mist.cli import output
from mist.cli.api import Api
from mist.cli.output import fmt_ts
from mist.control import packaging

HELP = r"""Print a function's log lines (stdout, stderr and logging of its invocations), oldest first.

Each line reads: time (UTC), invocation id, stream (stdout, stderr, log or platform), text:

  2026-11-26T04:01:02Z inv-abc123 \[stdout] hello

Examples:

  mist logs hello
  mist logs hello --limit 50
  mist logs hello --invocation inv-abc123
  mist logs hello --follow
  mist logs hello --json | jq .text

--follow keeps printing new lines as invocations finish, until Ctrl-C."""

_STREAM_STYLES = {"stderr": "red", "platform": "yellow", "log": "blue"}


@output.handle_errors
def logs(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The function whose logs to print.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")
    ] = False,
    invocation: Annotated[
        str | None, typer.Option(metavar="ID", help="Only this invocation's lines.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(metavar="N", min=1, help="Only the newest N lines (default 200).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the lines as NDJSON, as the API sends them.")
    ] = False,
) -> None:
    packaging.validate_name(name)
    console = output.stdout()
    try:
        with Api() as api:
            response = api.open_logs(name, invocation_id=invocation, limit=limit, follow=follow)
            try:
                for line in api.ndjson(response):
                    if as_json:
                        typer.echo(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False))
                    else:
                        console.print(format_line(line))
            finally:
                response.close()
    except KeyboardInterrupt:  # Ctrl-C is how --follow ends
        pass


def format_line(line: dict[str, Any] | str) -> Text:
    """`2026-11-26T04:01:02Z inv-abc123 [stdout] hello`"""
    if isinstance(line, str):
        return Text(line)
    stream = str(line.get("stream", "?"))
    return Text.assemble(
        (fmt_ts(line.get("ts")), "dim"), " ",
        (str(line.get("invocation_id", "-")), "cyan"), " ",
        (f"[{stream}]", _STREAM_STYLES.get(stream, "green")), " ",
        str(line.get("text", "")),
    )
