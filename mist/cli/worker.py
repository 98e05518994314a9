"""`mist worker --join URL`: run this machine's sandboxes for a mist cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mist.cli import output

HELP = """Join a mist cluster as a worker: run its invocations in sandboxes on this machine.

The control plane (mist up --cluster-listen HOST:PORT) places invocations on the workers that
joined; this agent registers, reports its capacity and instances, heartbeats, and runs what it is
sent. It needs root, namespaces and cgroups, like mist up, and no database access: everything
goes through the control plane's cluster API, authenticated with the cluster token.

Examples:

  export MIST_CLUSTER_TOKEN=...        # the same as the control plane's
  sudo -E mist worker --join http://10.0.0.1:7070 --listen 10.0.0.2:7071
  sudo -E mist worker --join http://10.0.0.1:7070 --listen 0.0.0.0:7071 --advertise http://10.0.0.2:7071
  sudo -E mist worker --join http://10.0.0.1:7070 --listen 10.0.0.3:7071 --memory 8192 --cpus 4

Ctrl-C or SIGTERM drains it (no new instances, calls in flight finish), then it leaves. See
docs/cluster.md."""


@output.handle_errors
def worker(
    join: Annotated[str, typer.Option(metavar="URL", help="The control plane's cluster API (its --cluster-listen); with several mist up --db processes, "
                                      "their URLs comma-separated: the worker talks to the next when one is down.")],
    token: Annotated[str | None, typer.Option(metavar="TOKEN", envvar="MIST_CLUSTER_TOKEN",
                                              help="The cluster token (the control plane's --cluster-token).")] = None,
    listen: Annotated[str, typer.Option(metavar="HOST:PORT", help="Where this agent's API listens.")] = "0.0.0.0:7071",
    advertise: Annotated[str | None, typer.Option(metavar="URL", help="How the control plane reaches this agent "
                                                  "(default: http://HOST:PORT of --listen; needed with 0.0.0.0).")] = None,
    data_dir: Annotated[Path, typer.Option(metavar="DIR", help="The worker's state: fetched code, layers.")] = Path(".mist-worker"),
    worker_id: Annotated[str | None, typer.Option("--id", metavar="ID", help="This worker's name in the cluster "
                                                  "(default: hostname@address).")] = None,
    memory: Annotated[int | None, typer.Option(metavar="MB", min=64, help="Memory for instances (default: 75 % "
                                               "of the machine).")] = None,
    cpus: Annotated[float | None, typer.Option(metavar="N", min=0.1, help="CPUs offered (default: all).")] = None,
    slots: Annotated[int | None, typer.Option(metavar="N", min=1, help="Sandboxes at most (default: one per 64 MB "
                                              "of memory).")] = None,
    prewarm: Annotated[int | None, typer.Option(metavar="N", min=0, help="Sandboxes kept built and ready.")] = None,
    egress_deny: Annotated[list[str] | None, typer.Option(metavar="CIDR", help="A network no function may reach "
                                                          "whatever its egress rules say (e.g. your LAN); repeat for "
                                                          "more. The control plane's and this agent's addresses are "
                                                          "always denied.")] = None,
    sandbox_network: Annotated[str | None, typer.Option(metavar="CIDR", help="IPv4 network for sandboxes with "
                                                        "egress (default: derived from the data dir).")] = None,
    drain_timeout: Annotated[float, typer.Option(metavar="SECONDS", min=0, help="On SIGTERM, how long calls in "
                                                 "flight may run before the worker leaves anyway.")] = 30.0,
) -> None:
    if not token:
        output.fail("no cluster token: pass --token or set MIST_CLUSTER_TOKEN to the control plane's --cluster-token")
    run_agent(join=join, token=token, listen=listen, advertise=advertise, data_dir=data_dir, worker_id=worker_id,
              memory_budget_mb=memory, cpus=cpus, slots=slots, prewarm=prewarm, drain_timeout_s=drain_timeout,
              egress_deny=tuple(egress_deny or ()), sandbox_network=sandbox_network)


def run_agent(**options) -> None:
    """The worker agent until SIGTERM (`mist worker`, and `mist up --role worker`)."""
    from mist.cluster.node import NodeOptions, run

    run(NodeOptions(**options))
