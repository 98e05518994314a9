import sys
import types

import pytest


@pytest.fixture
def started(monkeypatch):
    """Replace mist.cluster.node with a stub recording the options `mist worker` starts with."""
    from mist.cluster import node

    calls = []
    stub = types.ModuleType("mist.cluster.node")
    stub.NodeOptions = node.NodeOptions
    stub.run = calls.append
    monkeypatch.setitem(sys.modules, "mist.cluster.node", stub)
    return calls


def test_worker_needs_the_cluster_token(cli, started, monkeypatch):
    monkeypatch.delenv("MIST_CLUSTER_TOKEN", raising=False)
    result = cli("worker", "--join", "http://10.0.0.1:7070")

    assert result.exit_code == 2 and started == []
    assert "MIST_CLUSTER_TOKEN" in result.output and "--cluster-token" in result.output


def test_worker_passes_its_options(cli, started, monkeypatch, tmp_path):
    monkeypatch.setenv("MIST_CLUSTER_TOKEN", "a-token-of-24-characters")
    cli("worker", "--join", "http://10.0.0.1:7070", "--listen", "10.0.0.2:7071", "--data-dir", str(tmp_path),
        "--id", "w7", "--memory", "4096", "--cpus", "2", "--slots", "32", "--egress-deny", "10.0.0.0/8")

    (options,) = started
    assert (options.join, options.token, options.listen, options.worker_id) == (
        "http://10.0.0.1:7070", "a-token-of-24-characters", "10.0.0.2:7071", "w7")
    assert (options.memory_budget_mb, options.cpus, options.slots, options.egress_deny) == (4096, 2.0, 32, ("10.0.0.0/8",))
    assert options.data_dir == tmp_path
