"""`mist invoke`: run a function once with a JSON event and print what it returned."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mist.cli import output
from mist.cli.api import Api, ApiError, parse_body
from mist.cli.output import EXIT_ERROR, EXIT_FAILED, say
from mist.control import packaging
from mist.errors import InvalidRequest

MAX_PAYLOAD = 6 * 1024 * 1024  # the API's limit, checked here to fail before uploading

HELP = """Invoke a function with a JSON event and print its result.

The event is --data: JSON text, @FILE to read it from a file, or - to read it from stdin.
Without --data the event is null. The newest version runs unless --version is given.

With --async the event is stored and runs in the background, at least once, retried on
failure (docs/events.md): the invocation id is printed as soon as the event is stored, and
`mist invocation show ID` tells how it went. --idempotency-key makes a repeat within 24 hours
return the first invocation's id and run nothing.

Examples:

  mist invoke hello
  mist invoke hello --data '{"name": "Ada"}'
  mist invoke hello --data @event.json --version 2
  echo '{"n": 3}' | mist invoke square --data -
  mist invoke hello --json
  mist invoke resize --async --data '{"key": "a.png"}' --idempotency-key a.png

If the function raises, its errorType, errorMessage and stack trace are printed to stderr.
--json prints {"invocation_id", "status_code", "function_error", "result"} whatever happened;
with --async, {"invocation_id", "status_code", "replayed"}.

Exit status: 0 the function returned (--async: the event was stored); 1 the function failed;
2 bad input, mist error or unreachable."""


@output.handle_errors
def invoke(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The function to invoke.")],
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", metavar="JSON|@FILE|-", help="The event: JSON, @file, or - for stdin."),
    ] = None,
    version: Annotated[
        int | None, typer.Option(metavar="N", min=1, help="Run this version, not the newest.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print invocation_id, status_code, function_error and result as JSON.")
    ] = False,
    run_async: Annotated[
        bool, typer.Option("--async", help="Store the event and return its invocation id; it runs in the background.")
    ] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(metavar="KEY", help="With --async: a repeat within 24 h returns the first id, runs nothing."),
    ] = None,
) -> None:
    packaging.validate_name(name)
    if idempotency_key is not None and not run_async:
        raise InvalidRequest("--idempotency-key applies to asynchronous invocations: add --async")
    payload = read_payload(data)
    if run_async:
        _invoke_async(name, payload, version, idempotency_key, as_json)
        return
    with Api() as api:
        response = api.invoke(name, payload, version)
    function_error = response.headers.get("x-mist-function-error")
    body = parse_body(response)
    code = 0 if response.status_code < 400 else EXIT_FAILED if function_error else EXIT_ERROR
    if as_json:
        output.print_json({
            "invocation_id": response.headers.get("x-mist-invocation-id"),
            "status_code": response.status_code,
            "function_error": function_error,
            "result": body,
        })
        raise typer.Exit(code)
    if function_error:
        _print_function_error(body)
        raise typer.Exit(EXIT_FAILED)
    if response.status_code >= 400:
        raise ApiError.from_body(response.status_code, body, response.headers.get("retry-after"))
    output.print_json(body)
    _print_meta(response.headers)


def _invoke_async(
    name: str, payload: bytes | None, version: int | None, idempotency_key: str | None, as_json: bool
) -> None:
    with Api() as api:
        response = api.invoke_event(name, payload, version, idempotency_key)
    invocation_id = (parse_body(response) or {}).get("invocation_id")
    replayed = response.headers.get("x-mist-idempotent-replayed") == "true"
    if as_json:
        output.print_json({"invocation_id": invocation_id, "status_code": response.status_code, "replayed": replayed})
        return
    say(str(invocation_id))
    if output.stderr().is_terminal:
        note = "already stored with this idempotency key; nothing new runs" if replayed else "stored; runs in the background"
        say(f"{note} · mist invocation show {invocation_id}", err=True, style="dim")


def read_payload(data: str | None) -> bytes | None:
    """The event's bytes (None: no body, the event is null); InvalidRequest if it is not JSON."""
    if data is None:
        return None
    if data == "-":
        raw, origin = sys.stdin.buffer.read(), "from stdin"
    elif data.startswith("@"):
        try:
            raw, origin = Path(data[1:]).read_bytes(), f"in {data[1:]}"
        except OSError as exc:
            raise InvalidRequest(f"cannot read --data {data}: {exc.strerror or exc}") from None
    else:
        raw, origin = data.encode(), "given"
    if len(raw) > MAX_PAYLOAD:
        raise InvalidRequest(f"the event is {len(raw):,} bytes; the limit is 6 MB ({MAX_PAYLOAD:,} bytes)")
    try:
        json.loads(raw)
    except ValueError as exc:
        where = ""
        if isinstance(exc, json.JSONDecodeError):
            where = f" (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        raise InvalidRequest(
            f"the --data {origin} is not valid JSON{where}; "
            """quote it for the shell, e.g. --data '{"name": "Ada"}', or pass --data @event.json"""
        ) from None
    return raw


def _print_function_error(body: Any) -> None:
    error = body if isinstance(body, dict) else {"errorType": "Error", "errorMessage": str(body)}
    say(f"{error.get('errorType', 'Error')}: {error.get('errorMessage', '')}", err=True, style="red")
    trace = error.get("stackTrace") or []
    if isinstance(trace, list) and trace:
        say("".join(str(frame) for frame in trace).rstrip("\n"), err=True, style="red")


def _print_meta(headers: Any) -> None:
    err = output.stderr()
    if not err.is_terminal:
        return
    parts = [headers.get("x-mist-invocation-id")]
    if headers.get("x-mist-version"):
        parts.append(f"version {headers['x-mist-version']}")
    if headers.get("x-mist-cold-start") == "true":
        parts.append("cold start")
    if headers.get("x-mist-duration-ms"):
        parts.append(f"{float(headers['x-mist-duration-ms']):.1f} ms")
    say(" · ".join(p for p in parts if p), err=True, style="dim")
