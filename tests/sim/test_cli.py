import json

import pytest
from typer.testing import CliRunner

from mist.cli.main import app
from mist.sim import resolve, simulate
from mist.sim.synthetic import generate


@pytest.fixture
def run():
    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "160"})

    def invoke(*args):
        result = runner.invoke(app, list(args))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return invoke


@pytest.fixture
def trace(tmp_path):
    """Two functions of 1 GB, 1 s runs: f invoked 3 times in minute 0 and once in minute 20; g once."""
    minutes = [f"minute_{m}" for m in range(1, 1441)]
    f = ["0"] * 1440
    f[0], f[20] = "3", "1"
    g = ["0"] * 1440
    g[5] = "1"
    (tmp_path / "t_inv.csv").write_text(
        ",".join(["HashFunction", "HashOwner", "HashApp", *minutes]) + "\n"
        + ",".join(["f", "f", "f", *f]) + "\n" + ",".join(["g", "g", "g", *g]) + "\n"
    )
    (tmp_path / "t_run.csv").write_text("HashOwner,HashApp,HashFunction,Average,Count\nf,f,f,1000,4\ng,g,g,1000,1\n")
    (tmp_path / "t_mem.csv").write_text("HashOwner,HashApp,SampleCount,AverageAllocatedMb\nf,f,1,1024\ng,g,1,1024\n")
    return f"{tmp_path}/t_"


def test_simulate_json_prints_one_object_for_one_policy(run, trace):
    result = run("simulate", "--trace", trace, "--policy", "fixed:10", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "policy": "fixed:10",
        "functions": 2,
        "invocations": 5,
        "cold_pct": 60.0,
        "p75_function_cold_pct": 87.5,  # f 50 %, g 100 %: 50 + 0.75 x 50
        "wasted_gb_s": 1238.0 + 600.0,
    }


def test_simulate_json_prints_a_list_for_several_policies_and_the_oracle(run, trace):
    result = run("simulate", "--trace", trace, "-p", "fixed:10", "-p", "mist", "--oracle", "--json")
    out = json.loads(result.stdout)
    assert [r["policy"] for r in out] == ["fixed:10", "mist", "oracle"]
    assert out[2]["cold_pct"] == 40.0 and out[2]["wasted_gb_s"] == 0.0


def test_simulate_prints_a_table_of_the_default_policies(run, trace):
    result = run("simulate", "--trace", trace)
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["POLICY", "FUNCTIONS"]
    assert [line.split()[0] for line in lines[1:]] == ["fixed:10", "fixed:60", "hybrid-histogram", "mist"]


def test_simulate_rejects_an_unknown_policy(run, trace):
    result = run("simulate", "--trace", trace, "--policy", "lru")
    assert result.exit_code == 2
    assert "unknown policy 'lru'; known: fixed:MINUTES, hybrid-histogram, mist, oracle" in result.stderr


def test_simulate_names_a_missing_trace(run, tmp_path):
    result = run("simulate", "--trace", f"{tmp_path}/nope_")
    assert result.exit_code == 2
    assert f"trace file(s) not found: {tmp_path}/nope_inv.csv" in result.stderr


def test_simulate_replays_a_synthetic_trace_drawn_from_a_seed(run):
    result = run("simulate", "--synthetic", "3", "--functions", "12", "-p", "fixed:10", "--json")
    assert result.exit_code == 0
    expected = simulate(generate(3, 12), resolve("fixed:10")).summary()
    assert json.loads(result.stdout) == expected
    assert 0 < expected["functions"] <= 12


@pytest.mark.parametrize("args", [(), ("--trace", "x_", "--synthetic", "1")])
def test_simulate_needs_exactly_one_of_a_trace_or_a_seed(run, args):
    result = run("simulate", *args)
    assert result.exit_code == 2
    assert "give either --trace PREFIX or --synthetic SEED (not both)" in result.stderr
