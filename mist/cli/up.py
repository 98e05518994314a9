"""`mist up`: run the whole platform (gateway, control plane, worker) in this process, or one role
of a cluster's (`--role`, mist/cli/roles.py), with options from a TOML file (`--config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer

from mist.cli import output, roles

HELP = """Start mist: the API, the gateway and the sandboxes, in the foreground until Ctrl-C.

State (functions, code, dependency layers, invocation records) lives in --data-dir (SQLite).
With --db postgresql+psycopg://USER@HOST/DB, state lives in that PostgreSQL database instead,
shared by every mist up given the same --db and secrets key (each with its own --data-dir and
port, on one machine or several): a function deployed through one is served by all, and any one
may stop or die while the others keep serving. See docs/cluster.md.
Sandboxes need root, namespaces and cgroups.

Examples:

  sudo mist up
  sudo mist up --port 8000 --data-dir /var/lib/mist
  sudo mist up --keepalive 60 --prewarm 4
  sudo mist up --keepalive-policy hybrid-histogram --memory-budget 8192
  sudo mist up --s3-port 9100
  sudo mist up --egress-deny 10.0.0.0/8 --sandbox-network 100.80.0.0/20
  sudo mist up --plans /etc/mist/plans.toml
  sudo mist up --secrets-key-file /etc/mist/secrets.key
  sudo mist up --db postgresql+psycopg://mist@db.internal/mist --secrets-key-file /etc/mist/secrets.key
  sudo MIST_CLUSTER_TOKEN=$(openssl rand -hex 24) mist up --host 0.0.0.0 --cluster-listen 10.0.0.1:7070

With --cluster-listen, worker agents on other machines join (mist worker --join URL) and run the
invocations; until one has joined this machine's own worker serves. With --db as well, every such
process is a scheduler owning part of the shards (fenced leases, a shard map kept by whichever
holds the shard-manager lease); an invocation reaching a process that does not own its function's
shard is forwarded to the owner; a killed process's shards move within --shard-lease-ttl.
Workers then join all of them: mist worker --join http://A:7070,http://B:7070. See docs/cluster.md.

Roles (--role; default all: everything above in one process). A cluster can split them, each role
scaled by adding processes on more machines, every one given the same --db, secrets key and
cluster token:

  gateway    the public API, triggers and async events; holds no shard:
             sends each invocation to its shard's owner
  scheduler  holds shards and places; serves the cluster API only
  worker     runs sandboxes, as mist worker --join URL[,URL]
             (--cluster-listen is then the agent's own address)

  export MIST_DB_URL=postgresql+psycopg://mist@db/mist
  export MIST_CLUSTER_TOKEN=... MIST_SECRETS_KEY_FILE=/etc/mist/secrets.key
  sudo -E mist up --role scheduler --cluster-listen 10.0.0.1:7070
  sudo -E mist up --role gateway --host 0.0.0.0 --port 8080
  sudo -E mist up --role worker --join http://10.0.0.1:7070 \\
       --cluster-listen 10.0.0.2:7071

--config FILE.toml reads any option from a file, keyed by its long name (command-line flags and
environment variables win over it):

  role = "scheduler"
  cluster-listen = "10.0.0.1:7070"
  shard-lease-ttl = 2.0

Then, in another terminal: mist deploy hello ./hello (set MIST_URL if you changed --host or --port)."""


def _load_config(ctx: typer.Context, value: Path | None) -> Path | None:
    """--config: the file's values become the command's defaults (click's default_map), read
    before the other options (eager) so that flags and environment variables still win."""
    if value is not None:
        try:
            defaults = roles.config_defaults(value, {p.name for p in ctx.command.params if p.name})
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _given(ctx: click.Context) -> set[str]:
    """The options set on the command line or in --config (not by the environment or a default)."""
    chosen = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.DEFAULT_MAP)
    return {p.name for p in ctx.command.params if p.name and ctx.get_parameter_source(p.name) in chosen}


@output.handle_errors
def up(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option(metavar="FILE", is_eager=True, callback=_load_config, help="A TOML file of "
                                  "options keyed by their long names (cluster-listen = \"...\"); flags and "
                                  "environment variables override it.")
    ] = None,
    role: Annotated[
        str, typer.Option(metavar="ROLE", envvar="MIST_ROLE", help="all (default: one process does everything), "
                          "gateway, scheduler or worker: one role of a cluster (see below and docs/cluster.md).")
    ] = "all",
    join: Annotated[
        str | None, typer.Option(metavar="URL[,URL]", help="--role worker: the schedulers' cluster APIs to join "
                                 "(as mist worker --join).")
    ] = None,
    data_dir: Annotated[Path, typer.Option(metavar="DIR", help="Where mist keeps its state.")] = Path(".mist"),
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on; 0 picks a free one (printed).")] = 8080,
    keepalive: Annotated[
        float | None, typer.Option(metavar="SECONDS", min=0,
                                   help="Keep idle instances warm this long (a fixed keep-alive instead of the policy).")
    ] = None,
    keepalive_policy: Annotated[
        str | None, typer.Option(metavar="NAME", help="How long idle functions stay loaded and when they are "
                                 "prewarmed: mist (default, learns each function's pattern), hybrid-histogram, "
                                 "fixed:MINUTES. See docs/keepalive.md.")
    ] = None,
    memory_budget: Annotated[
        int | None, typer.Option(metavar="MB", min=64, help="Memory for instances and the prewarm pool "
                                 "(default: 75 % of the machine).")
    ] = None,
    prewarm: Annotated[
        int | None, typer.Option(metavar="N", min=0, help="Sandboxes kept built and ready.")
    ] = None,
    s3_port: Annotated[
        int | None, typer.Option(metavar="PORT", min=0, max=65535, envvar="MIST_S3_PORT", help="Port of the "
                                 "S3-compatible object storage endpoint (default 9000); 0 turns it off. See docs/s3.md.")
    ] = None,
    sandbox_network: Annotated[
        str | None, typer.Option(metavar="CIDR", help="IPv4 network for sandboxes with egress, one address "
                                 "each (default: a /20 of 100.64.0.0/10 chosen from the data dir). See docs/network.md.")
    ] = None,
    egress_deny: Annotated[
        list[str] | None, typer.Option(metavar="CIDR", help="A network no function may reach whatever its egress "
                                       "rules say (e.g. your LAN); repeat for more.")
    ] = None,
    max_inflight: Annotated[
        int | None, typer.Option(metavar="N", min=1, help="Invocations running at once on this machine; past it "
                                 "they wait, served across tenants by weight (default: no cap). See docs/tenancy.md.")
    ] = None,
    trigger_broker: Annotated[
        list[str] | None, typer.Option(metavar="HOST[:PORT]", help="A message broker that tenants other than "
                                       "the default may read with queue triggers; repeat for more (default: none).")
    ] = None,
    limits_redis: Annotated[
        str | None, typer.Option(metavar="URL", envvar="MIST_LIMITS_REDIS", help="redis://... : keep the rate "
                                 "limits' token buckets and the tenants' and functions' concurrency permits there, "
                                 "shared by every gateway (default: in this process; concurrency per machine).")
    ] = None,
    plans: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Price plans (TOML; default: DATA_DIR/plans.toml if it "
                                  "exists, else one built-in plan). See docs/billing.md.")
    ] = None,
    usage_fsync: Annotated[
        bool, typer.Option("--usage-fsync", help="Also sync each invocation's usage record to disk before answering "
                           "(msync, group committed): a power cut loses none; costs the disk's sync latency per "
                           "request. Without it usage survives any crash of mist. See docs/billing.md.")
    ] = False,
    cpu_split: Annotated[
        bool, typer.Option("--cpu-split/--no-cpu-split", help="While the gateway's event loop is busy (half of a "
                           "CPU or more), give it a CPU of its own and run the sandboxes on the others; share every "
                           "CPU again when it calms down. Needs 2+ CPUs and the cpuset cgroup. See "
                           "docs/operations.md.")
    ] = True,
    secrets_key_file: Annotated[
        Path | None, typer.Option(metavar="FILE", envvar="MIST_SECRETS_KEY_FILE", help="The key that seals "
                                  "functions' secrets (32 bytes, or their base64). Default: MIST_SECRETS_KEY, else "
                                  "DATA_DIR/secrets.key (made on first start). See docs/secrets.md.")
    ] = None,
    cluster_listen: Annotated[
        str | None, typer.Option(metavar="HOST:PORT", help="Serve the cluster API there: worker agents "
                                 "(mist worker --join http://HOST:PORT) join and run invocations. Keep it on "
                                 "the cluster's private network. See docs/cluster.md.")
    ] = None,
    cluster_token: Annotated[
        str | None, typer.Option(metavar="TOKEN", envvar="MIST_CLUSTER_TOKEN", help="The shared secret workers "
                                 "and the control plane present to each other (>= 16 characters); needed with "
                                 "--cluster-listen.")
    ] = None,
    cluster_db: Annotated[
        str | None, typer.Option(metavar="URL", envvar="MIST_CLUSTER_DB", help="postgresql+psycopg://... : keep "
                                 "the cluster's membership and shard leases there (default: the --db database if "
                                 "given, else in this process).")
    ] = None,
    worker_timeout: Annotated[
        float, typer.Option(metavar="SECONDS", min=1, help="A worker silent this long is lost: its instances "
                            "are forgotten and its calls in flight fail (workers heartbeat every fifth of it).")
    ] = 10.0,
    cluster_advertise: Annotated[
        str | None, typer.Option(metavar="URL", help="With --db: the URL the other mist up processes reach this "
                                 "one's cluster API at, to forward the invocations of the shards it owns (default: "
                                 "http://--cluster-listen; needed when that is 0.0.0.0).")
    ] = None,
    shard_lease_ttl: Annotated[
        float, typer.Option(metavar="SECONDS", min=0.5, help="With --db: how long a scheduler's shard leases last "
                            "without renewal. A killed process's shards move to the others within about this "
                            "long (renewed every fourth of it).")
    ] = 5.0,
    shard_balance: Annotated[
        float, typer.Option(metavar="SECONDS", min=0, help="With --db: how often the shard manager evens the "
                            "schedulers' load: moves shards, splits a hot shard, merges cold neighbours (0: never; "
                            "new and gone schedulers are handled anyway).")
    ] = 30.0,
    embedded_worker: Annotated[
        bool | None, typer.Option("--embedded-worker/--no-embedded-worker", help="With --cluster-listen: "
                                  "--no-embedded-worker runs no sandboxes on this machine; invocations wait for "
                                  "worker agents (503 until one has joined). Default: on, but off with --role "
                                  "scheduler.")
    ] = None,
    secrets_old_key_file: Annotated[
        list[Path] | None, typer.Option(metavar="FILE", help="A secrets key being replaced: secrets it sealed are "
                                        "sealed again with the current key at start; repeat for more.")
    ] = None,
    db: Annotated[
        str | None, typer.Option(metavar="URL", envvar="MIST_DB_URL", help="postgresql+psycopg://USER[:PASS]@HOST"
                                 "[:PORT]/DB : keep the platform's state there, shared with every mist up given the "
                                 "same URL (a cluster; needs --secrets-key-file or MIST_SECRETS_KEY, the same on "
                                 "each). Default: SQLite in --data-dir. See docs/cluster.md.")
    ] = None,
    event_lease: Annotated[
        float | None, typer.Option(metavar="SECONDS", min=1, help="How long an asynchronous invocation, or a "
                                   "queue trigger's message (Redis Streams, NATS JetStream), stays leased to the "
                                   "process running it without renewal; after that another process of the "
                                   "cluster runs it again (default 60).")
    ] = None,
) -> None:
    trouble = roles.problem(roles.RoleInputs(role, db, cluster_listen, cluster_token, join, embedded_worker,
                                             _given(ctx)))
    if trouble:
        output.fail(trouble)
    if role == "worker":
        from mist.cli.worker import run_agent

        run_agent(join=join, token=cluster_token, listen=cluster_listen or "0.0.0.0:7071",
                  advertise=cluster_advertise, data_dir=data_dir, memory_budget_mb=memory_budget, prewarm=prewarm,
                  egress_deny=tuple(egress_deny or ()), sandbox_network=sandbox_network)
        return
    if embedded_worker is None:
        embedded_worker = role == "all"
    try:
        from mist.server import ServerOptions, run
    except ImportError as exc:
        output.fail(f"the mist server cannot be loaded in this installation ({exc})")
    extra: dict = {} if s3_port is None else {"s3_port": s3_port}  # None: the server's default port
    if sandbox_network is not None:
        extra["sandbox_network"] = sandbox_network
    if egress_deny:
        extra["egress_deny"] = tuple(egress_deny)
    if max_inflight is not None:
        extra["max_inflight"] = max_inflight
    if limits_redis:
        extra["limits_redis"] = limits_redis
    if trigger_broker:
        extra["trigger_brokers"] = tuple(trigger_broker)
    if secrets_key_file is not None:
        extra["secrets_key_file"] = secrets_key_file
    if secrets_old_key_file:
        extra["secrets_old_key_files"] = tuple(secrets_old_key_file)
    if db:
        extra["db_url"] = db
    if event_lease is not None:
        extra["event_lease_s"] = event_lease
    if cluster_listen:
        if not cluster_token:
            output.fail("--cluster-listen needs a cluster token: pass --cluster-token or set MIST_CLUSTER_TOKEN "
                        "(e.g. export MIST_CLUSTER_TOKEN=$(openssl rand -hex 24)), and give the same to the workers")
        from mist.cluster.plane import ClusterOptions

        extra["cluster"] = ClusterOptions(cluster_listen, cluster_token, cluster_db or db, worker_timeout,
                                          lease_ttl_s=shard_lease_ttl, advertise=cluster_advertise,
                                          balance_s=shard_balance)
    if role == "gateway":
        from mist.cluster.router import RouterOptions

        extra.update(role="gateway", route=RouterOptions(db, cluster_token, shard_lease_ttl),  # type: ignore[arg-type]
                     embedded_worker=False)
    elif role == "scheduler":
        extra["role"] = "scheduler"
    if not embedded_worker and role != "gateway":
        if not cluster_listen:
            output.fail("--no-embedded-worker needs --cluster-listen: without worker agents nothing could run "
                        "invocations")
        extra["embedded_worker"] = False
    options = ServerOptions(data_dir=data_dir, host=host, port=port, keepalive_s=keepalive, prewarm=prewarm,
                            keepalive_policy=keepalive_policy, memory_budget_mb=memory_budget, plans=plans,
                            usage_fsync=usage_fsync, cpu_split=cpu_split, **extra)
    try:
        run(options)
    except KeyboardInterrupt:
        pass
