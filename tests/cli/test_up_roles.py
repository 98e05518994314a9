"""`mist up --role` and `--config`: which combinations start what, and the messages for those
that make no sense (the server and the worker agent are replaced by recorders)."""

import sys
import types

import pytest

from mist.cli.roles import RoleInputs, defaults_from, problem

DB = "postgresql+psycopg://mist@db/mist"
TOKEN = "a-token-of-24-characters"


@pytest.fixture
def started(monkeypatch):
    """What `mist up` starts: ("server", options) or ("worker", options)."""
    from mist import server as real
    from mist.cluster import node

    calls = []
    server = types.ModuleType("mist.server")
    server.ServerOptions = real.ServerOptions
    server.run = lambda options: calls.append(("server", options))
    agent = types.ModuleType("mist.cluster.node")
    agent.NodeOptions = node.NodeOptions
    agent.run = lambda options: calls.append(("worker", options))
    monkeypatch.setitem(sys.modules, "mist.server", server)
    monkeypatch.setitem(sys.modules, "mist.cluster.node", agent)
    for var in ("MIST_DB_URL", "MIST_CLUSTER_TOKEN", "MIST_ROLE", "MIST_SECRETS_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    return calls


@pytest.mark.parametrize(("inputs", "expected"), [
    (RoleInputs("all"), None),
    (RoleInputs("gateway", DB, cluster_token=TOKEN), None),
    (RoleInputs("scheduler", DB, "10.0.0.1:7070", TOKEN), None),
    (RoleInputs("scheduler", DB, "10.0.0.1:7070", TOKEN, embedded_worker=True), None),
    (RoleInputs("worker", cluster_token=TOKEN, join="http://10.0.0.1:7070"), None),
    (RoleInputs("worker", DB, cluster_token=TOKEN, join="http://a:7070"), None),  # --db from the environment
    (RoleInputs("router"), "--role must be one of all, gateway, scheduler, worker"),
    (RoleInputs("gateway", cluster_token=TOKEN), "--role gateway needs --db"),
    (RoleInputs("scheduler", cluster_listen="a:1", cluster_token=TOKEN), "--role scheduler needs --db"),
    (RoleInputs("gateway", DB), "--role gateway needs a cluster token"),
    (RoleInputs("gateway", DB, "10.0.0.1:7070", TOKEN, given={"cluster_listen"}),
     "--role gateway does not use --cluster-listen"),
    (RoleInputs("gateway", DB, cluster_token=TOKEN, given={"shard_balance", "worker_timeout"}),
     "--role gateway does not use --shard-balance, --worker-timeout"),
    (RoleInputs("gateway", DB, cluster_token=TOKEN, embedded_worker=True), "--role gateway runs no sandboxes"),
    (RoleInputs("scheduler", DB, cluster_token=TOKEN), "--role scheduler needs --cluster-listen"),
    (RoleInputs("worker", cluster_token=TOKEN), "--role worker needs --join"),
    (RoleInputs("worker", join="http://a:7070"), "--role worker needs a cluster token"),
    (RoleInputs("worker", DB, cluster_token=TOKEN, join="http://a:7070", given={"db", "s3_port"}),
     "--role worker does not use --db, --s3-port"),
    (RoleInputs("all", join="http://a:7070"), "--join is for --role worker"),
    (RoleInputs("scheduler", DB, "a:1", TOKEN, join="http://a:7070"), "--join is for --role worker"),
])
def test_each_role_names_what_it_lacks_or_refuses(inputs, expected):
    message = problem(inputs)
    if expected is None:
        assert message is None
    else:
        assert message is not None and message.startswith(expected)


def test_config_keys_are_the_long_option_names_and_an_unknown_one_is_named():
    options = {"role", "cluster_listen", "shard_lease_ttl", "config"}
    assert defaults_from({"role": "scheduler", "cluster-listen": "a:1", "shard_lease_ttl": 2.0}, options, "f") == {
        "role": "scheduler", "cluster_listen": "a:1", "shard_lease_ttl": 2.0}
    with pytest.raises(ValueError, match="unknown key 'cluster-lisen' in f.*cluster-listen"):
        defaults_from({"cluster-lisen": "a:1"}, options, "f")
    with pytest.raises(ValueError, match="unknown key 'config'"):
        defaults_from({"config": "other.toml"}, options, "f")


def test_up_alone_is_unchanged_one_process_with_its_embedded_worker(cli, started):
    assert cli("up").exit_code == 0
    ((what, options),) = started
    assert what == "server" and options.embedded_worker is True
    assert (options.role, options.route, options.cluster) == ("all", None, None)


def test_a_gateway_from_a_config_file_routes_with_the_cluster_s_database(cli, started, tmp_path):
    conf = tmp_path / "mist.toml"
    conf.write_text(f'role = "gateway"\ndb = "{DB}"\ncluster-token = "{TOKEN}"\nshard-lease-ttl = 2.0\nport = 9090\n')
    assert cli("up", "--config", str(conf)).exit_code == 0
    ((what, options),) = started
    assert (what, options.role, options.port, options.embedded_worker) == ("server", "gateway", 9090, False)
    assert (options.route.db, options.route.token, options.route.lease_ttl_s) == (DB, TOKEN, 2.0)
    assert options.cluster is None


def test_command_line_flags_override_the_config_file(cli, started, tmp_path):
    conf = tmp_path / "mist.toml"
    conf.write_text(f'role = "gateway"\ndb = "{DB}"\ncluster-token = "{TOKEN}"\nport = 9090\n')
    result = cli("up", "--config", str(conf), "--role", "scheduler", "--cluster-listen", "127.0.0.1:7070",
                 "--port", "9191")
    assert result.exit_code == 0, result.output
    ((what, options),) = started
    assert (options.role, options.port, options.embedded_worker) == ("scheduler", 9191, False)
    assert options.cluster.listen == "127.0.0.1:7070" and options.cluster.db == DB


def test_a_scheduler_runs_sandboxes_only_when_asked(cli, started):
    cli("up", "--role", "scheduler", "--db", DB, "--cluster-token", TOKEN, "--cluster-listen", "127.0.0.1:7070",
        "--embedded-worker")
    ((_, options),) = started
    assert options.embedded_worker is True


@pytest.mark.parametrize(("text", "expected"), [
    ('role = "gateway"\n', "--role gateway needs --db"),  # a role left incomplete: what to add
    ('rol = "gateway"\n', "unknown key 'rol'"),  # a key that is no option: named
    ('role = "gateway\n', "is not valid TOML"),
])
def test_a_config_file_that_cannot_start_anything_says_why(cli, started, tmp_path, text, expected):
    conf = tmp_path / "mist.toml"
    conf.write_text(text)
    result = cli("up", "--config", str(conf))
    assert result.exit_code != 0 and started == []
    assert expected in " ".join(result.output.replace("│", " ").split())  # unwrapped from the error box


def test_the_worker_role_is_mist_worker(cli, started, tmp_path):
    result = cli("up", "--role", "worker", "--join", "http://10.0.0.1:7070,http://10.0.0.4:7070",
                 "--cluster-listen", "10.0.0.2:7071", "--data-dir", str(tmp_path), "--prewarm", "3",
                 env={"MIST_CLUSTER_TOKEN": TOKEN, "MIST_DB_URL": DB})  # the cluster's environment: --db ignored
    assert result.exit_code == 0, result.output
    ((what, options),) = started
    assert what == "worker"
    assert (options.join, options.token, options.listen, options.data_dir, options.prewarm) == (
        "http://10.0.0.1:7070,http://10.0.0.4:7070", TOKEN, "10.0.0.2:7071", tmp_path, 3)


def test_the_worker_role_without_join_says_how_to_join(cli, started):
    result = cli("up", "--role", "worker", "--cluster-token", TOKEN)
    assert result.exit_code != 0 and started == []
    assert "--role worker needs --join URL[,URL]" in result.output
