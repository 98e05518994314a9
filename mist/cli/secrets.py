"""`mist secret set|ls|rm`: a function's secrets, injected as environment variables (docs/secrets.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mist.cli import output
from mist.cli.api import Api
from mist.cli.output import fmt_ts, plural, say

SECRET_HELP = """A function's secrets: environment variables whose values mist keeps encrypted, never shows
again, and masks (***) in the function's logs and errors. Changing one restarts the function's
instances. See docs/secrets.md.

Examples:

  mist secret set hello DB_PASSWORD=s3cr3t
  mist secret set hello --from-file TLS_KEY=./key.pem
  mist secret ls hello
  mist secret rm hello DB_PASSWORD"""

SET_HELP = """Set secrets of FUNCTION (a new value replaces the old), all in one change.

The function reads them from os.environ. Its instances restart: invocations from now on get
the new values; those running finish with the old ones. A value on the command line stays in
your shell history: --from-file NAME=PATH reads it from a file as is (NAME=- from stdin).
Names: letters, digits and _, not starting with a digit, not AWS_, LAMBDA_ or MIST_.

Examples:

  mist secret set hello DB_PASSWORD=s3cr3t API_TOKEN=tok-123
  mist secret set hello --from-file TLS_KEY=./key.pem
  printf %s "$TOKEN" | mist secret set hello --from-file API_TOKEN=-"""

LS_HELP = """List FUNCTION's secrets: names and when each was set, never values.

Examples:

  mist secret ls hello
  mist secret ls hello --json"""

RM_HELP = """Remove secrets of FUNCTION; its instances restart without them.

Examples:

  mist secret rm hello DB_PASSWORD
  mist secret rm hello OLD_TOKEN LEGACY_KEY"""

_JSON = typer.Option("--json", help="Print the API's JSON instead of text.")


class SecretApi(Api):
    """The secret routes of the API (docs/api.md, "Secrets")."""

    def list_secrets(self, function: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/v1/functions/{function}/secrets").get("secrets", []))

    def change_secrets(self, function: str, patch: dict[str, str | None]) -> dict[str, Any]:
        return dict(self._json("PATCH", f"/v1/functions/{function}/secrets", json=patch))


def _pairs(pairs: list[str], files: list[str]) -> dict[str, str | None]:
    """NAME=VALUE arguments and --from-file NAME=PATH, as a patch. Messages never show a value."""
    patch: dict[str, str | None] = {}
    for i, pair in enumerate(pairs, 1):
        name, sep, value = pair.partition("=")
        if not sep or not name:
            output.fail(f"argument {i} after the function is not NAME=VALUE (not shown: it may be a value); "
                        "e.g. mist secret set hello DB_PASSWORD=s3cr3t")
        patch[name] = value
    for spec in files:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            output.fail(f"--from-file {spec!r} is not NAME=PATH; e.g. --from-file TLS_KEY=./key.pem")
        try:
            data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        except OSError as exc:
            output.fail(f"cannot read {path} for secret {name} ({exc.strerror})")
        try:
            patch[name] = data.decode()
        except UnicodeDecodeError:
            output.fail(f"{'stdin' if path == '-' else path} (secret {name}) is not UTF-8 text; an environment "
                        "variable holds text: base64-encode binary data first")
    return patch


def _restart_note(function: str) -> str:
    return f"{function}'s instances restart: invocations from now on get the new values"


@output.handle_errors
def set_(
    function: Annotated[str, typer.Argument(metavar="FUNCTION", help="The function the secrets belong to.")],
    pairs: Annotated[list[str] | None, typer.Argument(metavar="NAME=VALUE...", help="Secrets to set.")] = None,
    from_file: Annotated[list[str] | None, typer.Option(
        "--from-file", metavar="NAME=PATH", help="Set NAME to the content of PATH (- for stdin); repeat for more.")
    ] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    patch = _pairs(pairs or [], from_file or [])
    if not patch:
        output.fail("give at least one NAME=VALUE or --from-file NAME=PATH; e.g. mist secret set hello TOKEN=...")
    with SecretApi() as api:
        answer = api.change_secrets(function, patch)
    if as_json:
        output.print_json(answer)
        return
    say(f"Set {', '.join(sorted(patch))} on {function}; {_restart_note(function)}")
    for warning in answer.get("warnings") or []:
        say(f"warning: {warning}", err=True, style="yellow")


@output.handle_errors
def ls(
    function: Annotated[str, typer.Argument(metavar="FUNCTION", help="The function whose secrets to list.")],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    with SecretApi() as api:
        found = api.list_secrets(function)
    if as_json:
        output.print_json({"secrets": found})
        return
    if not found:
        say(f"{function} has no secrets. Set one with: mist secret set {function} NAME=VALUE")
        return
    table = output.table("NAME", "UPDATED", "STATUS")
    for s in found:
        status = "ok" if s.get("readable", True) else "does not open with this server's key: set it again"
        table.add_row(str(s.get("name")), fmt_ts(s.get("updated_at")), status)
    output.print_table(table)


@output.handle_errors
def rm(
    function: Annotated[str, typer.Argument(metavar="FUNCTION", help="The function the secrets belong to.")],
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Secrets to remove.")],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    with SecretApi() as api:
        answer = api.change_secrets(function, dict.fromkeys(names))
    if as_json:
        output.print_json(answer)
        return
    say(f"Removed {plural(len(set(names)), 'secret')} ({', '.join(sorted(set(names)))}) from {function}; "
        f"{_restart_note(function)}")


def commands() -> typer.Typer:
    """`mist secret` with set, ls and rm, for main.py to add."""
    app = typer.Typer(help=output.help_text(SECRET_HELP), no_args_is_help=True)
    app.command("set", help=output.help_text(SET_HELP))(set_)
    app.command("ls", help=output.help_text(LS_HELP))(ls)
    app.command("rm", help=output.help_text(RM_HELP))(rm)
    return app
