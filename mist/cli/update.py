"""`mist update`: change a function's configuration without uploading code (a new version)."""

from __future__ import annotations

from typing import Annotated

import typer

from mist.cli import output
from mist.cli.api import Api, ApiError
from mist.cli.deploy import (
    BurstOption,
    EgressOption,
    HttpAuthOption,
    MaxQueuedOption,
    NetworkOption,
    RateOption,
    ReservedOption,
    _config,
    access_and_limits,
    network_config,
)
from mist.cli.output import EXIT_FAILED, fail, say, version_line
from mist.control import packaging
from mist.errors import InvalidRequest

HELP = """Change a function's configuration: a new version with the same code and the options given.

Options left out keep their current value. --egress replaces the whole allowlist; --network
none removes it (docs/network.md).

Examples:

  mist update fetch --egress api.github.com:443 --egress pypi.org:443
  mist update fetch --network none
  mist update hello --memory 256 --timeout 10

Exit status: 0 updated; 1 refused; 2 bad input or mist unreachable."""


@output.handle_errors
def update(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The function to change.")],
    memory: Annotated[int | None, typer.Option(metavar="MB", help="Memory limit, 64-10240 MB.")] = None,
    timeout: Annotated[float | None, typer.Option(metavar="SECONDS", help="Time limit, up to 900.")] = None,
    env: Annotated[
        list[str] | None, typer.Option(metavar="KEY=VALUE", help="Environment (replaces it); repeat for more.")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(metavar="N", help="Invocations one instance serves at once.")] = None,
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
    config = {**_config(None, memory, timeout, concurrency, env), **network_config(network, egress),
              **access_and_limits(http_auth, reserved_concurrency, rate, burst, max_queued)}
    if not config:
        raise InvalidRequest("nothing to change: give at least one option (see mist update --help)")
    with Api() as api:
        try:
            version = api.update_function(name, config)
        except ApiError as exc:
            fail(exc.message, detail=exc.detail, code=EXIT_FAILED)
    if as_json:
        output.print_json(version)
    else:
        say(f"Updated {version_line(version)}")
