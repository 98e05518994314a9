"""`mist deploy`: zip a function's directory, upload it, and follow the deploy as it happens."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from mist.cli import output
from mist.cli.api import Api, ApiError
from mist.cli.output import EXIT_FAILED, fail, fmt_bytes, plural, say, version_line
from mist.control import packaging
from mist.errors import InvalidRequest
from mist.models import destination, network_policy

PROGRESS_BAR_BYTES = 1024 * 1024  # smaller uploads finish before a bar would be readable

HELP = """Deploy a function: zip the directory PATH (or take PATH as a .zip), upload it, print the new version.

Every deploy creates a new immutable version (1, 2, 3...) and NAME then runs the newest one.
A requirements.txt at the top of PATH is installed into a dependency layer; pip's output is
shown live. Left out of the zip: __pycache__, *.pyc, .git, .venv, .mist and node_modules.
The code is checked before it is uploaded: every .py file must compile and the handler must exist.

The handler defaults to main.handler (the function handler in main.py). Without a main.py,
if exactly one top-level module defines handler, that one is used (app.py gives app.handler).
Memory, timeout and concurrency left out take the server's defaults (128 MB, 30 s, 1).
--min-instances keeps that many instances loaded at all times (no cold start for them);
--max-instances caps how many run at once (more requests wait for a free one).

Asynchronous invocations (mist invoke --async, S3 events, schedules; docs/events.md) are
retried --retries times after a function error (0-10, default 2) while younger than
--max-event-age seconds (60-21600, default 21600); then their record goes to --on-failure
(default: the function's dead-letter queue, see mist dlq). --on-success sends the record of
each success. A destination is function:NAME (an asynchronous invocation of it) or queue:NAME.

A function has no network unless given one: --egress HOST[:PORT] or CIDR[:PORT] (repeatable)
lets it reach just those destinations (a port may be a range LOW-HIGH; none means every port);
host names are resolved by mist for it, other names do not resolve. --network none removes
every rule. The host's own services and other sandboxes stay unreachable (docs/network.md).

Examples:

  mist deploy hello ./hello
  mist deploy resize ./resize --handler app.resize --memory 512 --timeout 10
  mist deploy api ./api --env STAGE=prod --env LOG_LEVEL=debug
  mist deploy api ./api --min-instances 2 --max-instances 20
  mist deploy resize ./resize --retries 0 --on-failure queue:resize-failed --on-success function:notify
  mist deploy fetch ./fetch --egress api.github.com:443 --egress 203.0.113.0/24:5432
  mist deploy hello hello.zip --json

Exit status: 0 deployed; 1 the code was rejected or the deploy failed; 2 bad input or mist unreachable."""


HttpAuthOption = Annotated[
    str | None,
    typer.Option(metavar="public|key", help="The HTTP trigger /fn/NAME: open to anyone (public, the default) "
                 "or only to API keys of the function's tenant (key)."),
]
ReservedOption = Annotated[int | None, typer.Option(
    metavar="N", min=0, help="Reserved concurrency: runs at most N at once, and N are kept for it out of the "
    "tenant's limit (0 stops the function).")]
RateOption = Annotated[float | None, typer.Option(
    "--rate", metavar="PER_S", help="Requests per second this function accepts (token bucket; with --burst).")]
BurstOption = Annotated[int | None, typer.Option(metavar="N", min=1, help="Requests at once after a quiet "
                                                "period (default: the rate).")]
MaxQueuedOption = Annotated[int | None, typer.Option(metavar="N", min=0, help="Requests that may wait to run "
                                                    "at once; more are refused with 429.")]
NetworkOption = Annotated[
    str | None, typer.Option("--network", metavar="none", help="none: no network at all (the default).")
]
EgressOption = Annotated[
    list[str] | None,
    typer.Option("--egress", metavar="HOST[:PORT]|CIDR[:PORT]",
                 help="A destination the function may reach (replaces the current list); repeat for more."),
]


@output.handle_errors
def deploy(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Function name: lowercase letters, digits and '-', e.g. hello.")
    ],
    path: Annotated[Path, typer.Argument(metavar="PATH", help="The function's directory, or a .zip of it.")],
    handler: Annotated[
        str | None,
        typer.Option(metavar="MODULE.FUNCTION", help="Function to run, e.g. main.handler or pkg.api.handle."),
    ] = None,
    memory: Annotated[int | None, typer.Option(metavar="MB", help="Memory limit, 64-10240 MB.")] = None,
    timeout: Annotated[
        float | None, typer.Option(metavar="SECONDS", help="Time limit per invocation, up to 900.")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(metavar="N", help="Invocations one instance serves at once.")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option(metavar="KEY=VALUE", help="Environment variable; repeat for more.")
    ] = None,
    min_instances: Annotated[
        int | None, typer.Option(metavar="N", help="Instances kept loaded at all times (default 0).")
    ] = None,
    max_instances: Annotated[
        int | None, typer.Option(metavar="N", help="Most instances at once (default: no limit).")
    ] = None,
    retries: Annotated[
        int | None, typer.Option(metavar="N", help="Async invocations: retries after a function error, 0-10.")
    ] = None,
    max_event_age: Annotated[
        int | None, typer.Option(metavar="SECONDS", help="Async invocations: not run once older, 60-21600.")
    ] = None,
    on_success: Annotated[
        str | None, typer.Option(metavar="DEST", help="Where success records go: function:NAME or queue:NAME.")
    ] = None,
    on_failure: Annotated[
        str | None,
        typer.Option(metavar="DEST", help="Where failure records go (default: the dead-letter queue)."),
    ] = None,
    http_auth: HttpAuthOption = None,
    reserved_concurrency: ReservedOption = None,
    rate: RateOption = None,
    burst: BurstOption = None,
    max_queued: MaxQueuedOption = None,
    network: NetworkOption = None,
    egress: EgressOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the new version, as JSON.")] = False,
) -> None:
    packaging.validate_name(name)
    config = _config(handler, memory, timeout, concurrency, env)
    config.update(network_config(network, egress))
    config.update(given(("min_instances", min_instances), ("max_instances", max_instances), ("retries", retries),
                        ("max_event_age_s", max_event_age), ("on_success", on_success),
                        ("on_failure", on_failure)))
    config.update(access_and_limits(http_auth, reserved_concurrency, rate, burst, max_queued))
    for key, flag in (("on_success", "--on-success"), ("on_failure", "--on-failure")):
        if key in config:
            destination(flag, config[key])  # refused here, before packaging and uploading
    err = output.stderr()
    show = not as_json
    with tempfile.TemporaryFile() as code:
        with _status(err, f"Packaging {path}", show):
            stats = packaging.zip_directory(path, code)
            if path.is_dir():
                packaging.check_code(path, handler or packaging.find_default_handler(path))
        if show:
            packed = f"{plural(stats.files, 'file')}, {fmt_bytes(stats.zip_bytes)} zipped"
            say(f"Packaged {path}: {packed}", err=True, style="dim")
        with Api() as api:
            try:
                response = _upload(api, name, config, code, stats.zip_bytes, err, show)
                try:
                    version = _follow(api, response, err, show)
                finally:
                    response.close()
            except ApiError as exc:
                fail(exc.message, detail=exc.detail, code=EXIT_FAILED)
    if as_json:
        output.print_json(version)
    else:
        say(f"Deployed {version_line(version)}")


def _config(
    handler: str | None, memory: int | None, timeout: float | None, concurrency: int | None, env: list[str] | None
) -> dict[str, Any]:
    """Only what was given: the server applies its defaults to the rest."""
    given = {"handler": handler, "memory_mb": memory, "timeout_s": timeout, "concurrency": concurrency}
    config: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if env:
        config["env"] = parse_env(env)
    return config


def given(*pairs: tuple[str, object]) -> dict[str, Any]:
    """The config keys whose options were given (None: not given)."""
    return {key: value for key, value in pairs if value is not None}


def access_and_limits(http_auth: str | None, reserved: int | None, rate: float | None, burst: int | None,
                      max_queued: int | None) -> dict[str, Any]:
    """The config keys of --http-auth and the flow-control options that were given (deploy and update)."""
    return given(("http_auth", http_auth), ("reserved_concurrency", reserved), ("rate_per_s", rate),
                 ("burst", burst), ("max_queued", max_queued))


def network_config(network: str | None, egress: list[str] | None) -> dict[str, Any]:
    """The `network` config key from --network / --egress (checked here, before uploading)."""
    if network is not None and network != "none":
        raise InvalidRequest(f"--network must be none (or give --egress rules), got {network!r}")
    if network is not None and egress:
        raise InvalidRequest("--network none and --egress contradict each other; give one of them")
    if network is not None:
        return {"network": "none"}
    if egress:
        value = {"egress": list(egress)}
        network_policy(value)
        return {"network": value}
    return {}


def parse_env(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"--env {pair!r} is not KEY=VALUE; e.g. --env GREETING=hi")
        out[key] = value
    return out


def _upload(
    api: Api, name: str, config: dict[str, Any], code: BinaryIO, size: int, err: Console, show: bool
) -> httpx.Response:
    code.seek(0)
    if not (show and err.is_terminal and size >= PROGRESS_BAR_BYTES):
        with _status(err, "Uploading", show):
            return api.start_deploy(name, config, code, f"{name}.zip")
    columns = (TextColumn("Uploading"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("upload", total=size)
        reader = _Reading(code, lambda pos: progress.update(task, completed=pos))
        return api.start_deploy(name, config, reader, f"{name}.zip")  # type: ignore[arg-type]


def _follow(api: Api, response: httpx.Response, err: Console, show: bool) -> dict[str, Any]:
    """Render the NDJSON deploy events; return the created version or exit on an error event."""
    if response.headers.get("content-type", "").startswith("application/json"):  # a server that did not stream
        response.read()
        return dict(response.json())
    with _status(err, "Validating", show) as status:
        for event in api.ndjson(response):
            kind = event.get("event") if isinstance(event, dict) else None
            if kind == "created" and isinstance(event["version"], dict):
                return dict(event["version"])
            if kind == "error":
                error = event.get("error") or {}
                fail(str(error.get("message", "the deploy failed")), detail=error.get("detail"), code=EXIT_FAILED)
            if show and isinstance(event, dict):
                _note(event, status)
    fail("the deploy stream ended before the deploy finished; `mist show NAME` tells whether it was created")


def _note(event: dict[str, Any], status: _Status) -> None:
    kind = event.get("event")
    if kind == "received":
        status.update(f"Uploaded {fmt_bytes(event.get('bytes'))}, validating")
    elif kind == "validated":
        say(f"Validated {plural(event.get('files'), 'file')}", err=True, style="dim")
        status.update("Checking the code")
    elif kind == "layer" and event.get("status") == "cached":
        say(f"Dependencies: cached layer {str(event.get('sha256'))[:12]}", err=True, style="dim")
    elif kind == "layer":
        say(f"Installing dependencies (layer {str(event.get('sha256'))[:12]})", err=True)
        status.update("Installing dependencies")
    elif kind == "pip":
        say(f"  {event.get('line', '')}", err=True, style="dim")


class _Status:
    """A spinner line on a terminal; nothing elsewhere."""

    def __init__(self, console: Console, text: str, show: bool) -> None:
        self._status = console.status(text) if show and console.is_terminal else None

    def update(self, text: str) -> None:
        if self._status is not None:
            self._status.update(text)


@contextmanager
def _status(console: Console, text: str, show: bool) -> Iterator[_Status]:
    status = _Status(console, text, show)
    with status._status if status._status is not None else nullcontext():
        yield status


class _Reading:
    """A file object that reports how far it has been read (httpx reads it while sending)."""

    def __init__(self, f: BinaryIO, on_read: Callable[[int], object]) -> None:
        self._f = f
        self._on_read = on_read

    def read(self, n: int = -1) -> bytes:
        chunk = self._f.read(n)
        self._on_read(self._f.tell())
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()
