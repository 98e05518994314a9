import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture
def started(monkeypatch):
    """Replace mist.server with a stub recording the options `mist up` starts it with."""
    calls = []

    @dataclass
    class ServerOptions:
        data_dir: Path
        host: str
        port: int
        keepalive_s: float | None
        prewarm: int | None
        keepalive_policy: str | None = None
        memory_budget_mb: int | None = None
        sandbox_network: str | None = None
        egress_deny: tuple[str, ...] = ()
        plans: Path | None = None
        usage_fsync: bool = False
        cpu_split: bool = True
        cluster: object = None
        embedded_worker: bool = True

    stub = types.ModuleType("mist.server")
    stub.ServerOptions = ServerOptions
    stub.run = calls.append
    monkeypatch.setitem(sys.modules, "mist.server", stub)
    return calls


def test_up_starts_the_server_with_the_defaults(cli, started):
    result = cli("up")

    assert result.exit_code == 0
    (options,) = started
    assert (options.data_dir, options.host, options.port, options.keepalive_s, options.prewarm) == (
        Path(".mist"), "127.0.0.1", 8080, None, None,
    )
    assert options.cpu_split  # a busy gateway gets a CPU apart unless told not to


def test_up_no_cpu_split_keeps_every_cpu_shared(cli, started):
    cli("up", "--no-cpu-split")

    (options,) = started
    assert options.cpu_split is False


def test_up_passes_every_option(cli, started, tmp_path):
    cli("up", "--data-dir", str(tmp_path), "--host", "0.0.0.0", "--port", "9000", "--keepalive", "60", "--prewarm", "4")

    (options,) = started
    assert (options.data_dir, options.host, options.port, options.keepalive_s, options.prewarm) == (
        tmp_path, "0.0.0.0", 9000, 60.0, 4,
    )


def test_up_passes_the_scaling_options(cli, started):
    cli("up", "--keepalive-policy", "hybrid-histogram", "--memory-budget", "8192")

    (options,) = started
    assert (options.keepalive_policy, options.memory_budget_mb, options.keepalive_s) == ("hybrid-histogram", 8192, None)


def test_up_passes_the_metering_options(cli, started, tmp_path):
    cli("up", "--plans", str(tmp_path / "plans.toml"), "--usage-fsync")

    (options,) = started
    assert (options.plans, options.usage_fsync) == (tmp_path / "plans.toml", True)


def test_up_refuses_a_port_out_of_range(cli, started):
    result = cli("up", "--port", "70000")

    assert result.exit_code == 2 and started == []


def test_ctrl_c_stops_up_quietly(cli, monkeypatch, started):
    def interrupted(options):
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["mist.server"], "run", interrupted)

    result = cli("up")

    assert result.exit_code == 0 and result.output == ""


def test_up_passes_the_sandbox_network_options(cli, started):
    cli("up", "--sandbox-network", "100.80.0.0/20", "--egress-deny", "10.0.0.0/8", "--egress-deny", "192.168.0.0/16")

    (options,) = started
    assert (options.sandbox_network, options.egress_deny) == ("100.80.0.0/20", ("10.0.0.0/8", "192.168.0.0/16"))


def test_up_passes_the_cluster_options(cli, started, monkeypatch):
    from mist.cluster.plane import ClusterOptions

    monkeypatch.setenv("MIST_CLUSTER_TOKEN", "a-token-of-24-characters")
    cli("up", "--cluster-listen", "10.0.0.1:7070", "--cluster-db", "postgresql+psycopg://db/mist",
        "--worker-timeout", "4", "--no-embedded-worker")

    (options,) = started
    assert options.cluster == ClusterOptions("10.0.0.1:7070", "a-token-of-24-characters", "postgresql+psycopg://db/mist", 4.0)
    assert options.embedded_worker is False


def test_a_cluster_needs_a_token(cli, started, monkeypatch):
    monkeypatch.delenv("MIST_CLUSTER_TOKEN", raising=False)
    result = cli("up", "--cluster-listen", "10.0.0.1:7070")

    assert result.exit_code == 2 and started == []
    assert "MIST_CLUSTER_TOKEN" in result.output


def test_no_embedded_worker_needs_the_cluster(cli, started):
    result = cli("up", "--no-embedded-worker")

    assert result.exit_code == 2 and started == []
    assert "--cluster-listen" in result.output
