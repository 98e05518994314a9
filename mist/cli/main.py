"""The `mist` command line (console script `mist = "mist.cli.main:app"`): the commands, wired."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from mist.cli import (
    deploy,
    events,
    functions,
    invoke,
    logs,
    s3,
    secrets,
    simshards,
    simulate,
    tenancy,
    triggers,
    up,
    update,
    usage,
    worker,
)
from mist.cli.output import help_text

app = typer.Typer(
    name="mist",
    help=help_text("""mist: deploy Python functions and run them in fast, isolated sandboxes.

Start the server with mist up, then, in another terminal:

  mist deploy hello ./hello
  mist invoke hello --data '{"name": "Ada"}'
  mist logs hello --follow

Commands other than up talk to the server over HTTP at MIST_URL (default http://127.0.0.1:8080),
with the API key in MIST_API_KEY, or saved by mist login, or, for a mist up on this machine, its
admin key (read from its data dir). Admin keys act in another tenant with --tenant.

Exit status: 0 done; 1 the function or its code failed; 2 bad input, mist error or mist unreachable."""),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)



@app.callback()
def _global(
    tenant: Annotated[str | None, typer.Option(
        "--tenant", metavar="TENANT", envvar="MIST_TENANT",
        help="Act in this tenant (admin keys only; default: the key's own tenant).")] = None,
) -> None:
    if tenant:
        os.environ["MIST_TENANT"] = tenant


app.command("up", help=help_text(up.HELP))(up.up)
app.command("worker", help=help_text(worker.HELP))(worker.worker)
app.command("deploy", help=help_text(deploy.HELP))(deploy.deploy)
app.command("update", help=help_text(update.HELP))(update.update)
app.command("invoke", help=help_text(invoke.HELP))(invoke.invoke)
app.command("ls", help=help_text(functions.LS_HELP))(functions.ls)
app.command("show", help=help_text(functions.SHOW_HELP))(functions.show)
app.command("rm", help=help_text(functions.RM_HELP))(functions.rm)
app.command("logs", help=help_text(logs.HELP))(logs.logs)
app.command("simulate", help=help_text(simulate.HELP))(simulate.simulate)
app.command("usage", help=help_text(usage.USAGE_HELP))(usage.usage)
app.command("invoice", help=help_text(usage.INVOICE_HELP))(usage.invoice)
app.add_typer(usage.commands(), name="billing")
app.command("simulate-shards", help=help_text(simshards.HELP))(simshards.simulate_shards)
app.add_typer(s3.commands(), name="s3")
app.add_typer(secrets.commands(), name="secret")
_tenant, _key = tenancy.commands()
app.add_typer(_tenant, name="tenant")
app.add_typer(_key, name="key")
app.command("audit", help=help_text(tenancy.AUDIT_HELP))(tenancy.audit)
app.command("whoami", help=help_text(tenancy.WHOAMI_HELP))(tenancy.whoami)
app.command("login", help=help_text(tenancy.LOGIN_HELP))(tenancy.login)
app.add_typer(triggers.commands(), name="trigger")
_invocation, _dlq, _queue = events.commands()
app.add_typer(_invocation, name="invocation")
app.add_typer(_dlq, name="dlq")
app.add_typer(_queue, name="queue")
