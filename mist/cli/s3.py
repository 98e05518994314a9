"""`mist s3 keys create|ls|rm`: the access keys that sign requests to mist's S3 endpoint."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from mist.cli import output
from mist.cli.api import Api
from mist.cli.output import fmt_ts, say

S3_HELP = """mist's S3-compatible object storage: manage the access keys that sign requests to it.

The S3 endpoint is served by mist up on --s3-port (default 9000); boto3 and the aws CLI use it
with an endpoint URL and path-style addressing. See docs/s3.md.

Examples:

  mist s3 keys create
  mist s3 keys ls
  mist s3 keys rm MISTABCDEFGHIJKLMNOP"""

KEYS_HELP = """Create, list and delete S3 access keys.

Examples:

  mist s3 keys create
  mist s3 keys create --json
  mist s3 keys ls
  mist s3 keys rm MISTABCDEFGHIJKLMNOP"""

CREATE_HELP = """Create an access key. Its secret is printed now and never again: store it.

Examples:

  mist s3 keys create
  mist s3 keys create --json > key.json

Then, with the endpoint mist up printed (default http://127.0.0.1:9000):

  aws configure set aws_access_key_id MIST...
  aws configure set aws_secret_access_key ...
  aws --endpoint-url http://127.0.0.1:9000 s3 mb s3://photos"""

LS_HELP = """List the access keys: their ids and when they were made (never their secrets).

Examples:

  mist s3 keys ls
  mist s3 keys ls --json"""

RM_HELP = """Delete an access key: requests signed with it are refused from now on.

Examples:

  mist s3 keys rm MISTABCDEFGHIJKLMNOP"""

_JSON = typer.Option("--json", help="Print the API's JSON instead of text.")


class S3Api(Api):
    """The access key routes of the API (docs/api.md, "S3 access keys")."""

    def create_key(self) -> dict[str, Any]:
        return dict(self._json("POST", "/v1/s3/keys"))

    def list_keys(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/s3/keys").get("keys", []))

    def delete_key(self, access_key_id: str) -> None:
        self._json("DELETE", f"/v1/s3/keys/{access_key_id}")


@output.handle_errors
def create(as_json: Annotated[bool, _JSON] = False) -> None:
    with S3Api() as api:
        key = api.create_key()
    if as_json:
        output.print_json(key)
        return
    say(f"access key id      {key.get('access_key_id')}")
    say(f"secret access key  {key.get('secret_access_key')}")
    say("The secret is shown only now; store it. Use both with the S3 endpoint mist up printed, e.g.:", err=True)
    say(
        "  boto3.client('s3', endpoint_url='http://127.0.0.1:9000', aws_access_key_id=..., "
        "aws_secret_access_key=..., config=Config(s3={'addressing_style': 'path'}))",
        err=True,
    )


@output.handle_errors
def ls(as_json: Annotated[bool, _JSON] = False) -> None:
    with S3Api() as api:
        keys = api.list_keys()
    if as_json:
        output.print_json({"keys": keys})
        return
    if not keys:
        say("No S3 access keys yet. Create one with: mist s3 keys create")
        return
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in ("ACCESS KEY ID", "OWNER", "CREATED"):
        table.add_column(column, no_wrap=True)
    for key in keys:
        table.add_row(str(key.get("access_key_id")), str(key.get("owner")), fmt_ts(key.get("created_at")))
    output.print_table(table)


@output.handle_errors
def rm(access_key_id: Annotated[str, typer.Argument(metavar="ACCESS_KEY_ID", help="The key to delete.")]) -> None:
    with S3Api() as api:
        api.delete_key(access_key_id)
    say(f"Deleted access key {access_key_id}")


def commands() -> typer.Typer:
    """`mist s3` with its `keys` group, for main.py to add."""
    keys = typer.Typer(help=output.help_text(KEYS_HELP), no_args_is_help=True)
    keys.command("create", help=output.help_text(CREATE_HELP))(create)
    keys.command("ls", help=output.help_text(LS_HELP))(ls)
    keys.command("rm", help=output.help_text(RM_HELP))(rm)
    s3 = typer.Typer(help=output.help_text(S3_HELP), no_args_is_help=True)
    s3.add_typer(keys, name="keys")
    return s3
