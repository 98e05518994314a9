import json

import pytest

LINES = [
    {"ts": "2026-11-26T04:01:02.345678+00:00", "invocation_id": "inv-abc123", "version": 3, "stream": "stdout", "text": "hello"},
    {"ts": "2026-11-26T04:01:03+00:00", "invocation_id": "inv-def456", "version": 3, "stream": "stderr", "text": "[warn] x"},
]


@pytest.fixture
def logged(cli, fake, hello):
    cli("deploy", "hello", str(hello))
    fake.log_lines = list(LINES)
    return fake


def test_logs_prints_one_line_per_log_line(cli, logged):
    result = cli("logs", "hello")

    assert result.exit_code == 0
    assert result.stdout == (
        "2026-11-26T04:01:02Z inv-abc123 [stdout] hello\n"
        "2026-11-26T04:01:03Z inv-def456 [stderr] [warn] x\n"
    )


def test_logs_json_prints_the_ndjson_lines(cli, logged):
    result = cli("logs", "hello", "--json")

    assert [json.loads(line) for line in result.stdout.splitlines()] == LINES


def test_logs_passes_invocation_and_limit_to_the_api(cli, logged):
    result = cli("logs", "hello", "--invocation", "inv-def456", "--limit", "1")

    assert result.stdout == "2026-11-26T04:01:03Z inv-def456 [stderr] [warn] x\n"
    params = logged.requests[-1].url.params
    assert (params["invocation_id"], params["limit"], params.get("follow")) == ("inv-def456", "1", None)


def test_logs_follow_prints_until_ctrl_c_without_a_traceback(cli, logged):
    logged.interrupt_followed_logs = True

    result = cli("logs", "hello", "--follow")

    assert result.exit_code == 0
    assert result.stdout.count("\n") == 2  # the keep-alive blank line is not printed
    assert result.stderr == ""
    assert logged.requests[-1].url.params["follow"] == "true"


def test_logs_of_an_invocation_show_what_the_function_printed(cli, fake, hello):
    cli("deploy", "hello", str(hello))
    cli("invoke", "hello", "--data", '{"name": "Ada"}')

    result = cli("logs", "hello", "--invocation", "inv-1")

    assert result.stdout.endswith(" inv-1 [stdout] greeting Ada\n")


def test_logs_of_an_unknown_function_exits_2(cli, fake):
    result = cli("logs", "nope")

    assert result.exit_code == 2
    assert "function 'nope' does not exist" in result.stderr
