"""What a user does with `mist up`: deploy, invoke (CLI, API, HTTP trigger), records, logs."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import MIST, REPO, write_function

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def hello(server):
    r = server.cli("deploy", "hello", str(REPO / "examples" / "hello"))
    assert r.returncode == 0, r.stderr + r.stdout
    assert "hello" in r.stdout and "version 1" in r.stdout
    return server


def test_invoke_from_the_cli_prints_the_result(hello):
    r = hello.cli("invoke", "hello", "--data", '{"name": "x"}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["hello"] == "x"


def test_invoke_over_http_returns_json_and_the_record_tells_cold_then_warm(hello):
    with hello.client() as c:
        hello.cli("deploy", "fresh", str(REPO / "examples" / "hello"))
        first = c.post("/v1/functions/fresh/invocations", content=b'{"name": "a"}')
        second = c.post("/v1/functions/fresh/invocations", content=b'{"name": "b"}')
        assert first.status_code == 200 and first.json()["hello"] == "a"
        assert first.json()["request_id"] == first.headers["x-mist-invocation-id"]
        assert "server" not in first.headers and "date" in first.headers  # the stack is not advertised
        rec1 = c.get(f"/v1/invocations/{first.headers['x-mist-invocation-id']}").json()
        rec2 = c.get(f"/v1/invocations/{second.headers['x-mist-invocation-id']}").json()
    assert rec1["cold_start"] is True and rec1["init_ms"] > 0
    assert rec2["cold_start"] is False and rec2["init_ms"] == 0
    for rec in (rec1, rec2):
        assert rec["status"] == "succeeded" and rec["function"] == "fresh" and rec["version"] == 1
        assert rec["billed_ms"] >= 1 and rec["billed_ms"] >= rec["duration_ms"] > 0
        assert rec["memory_mb"] == 128 and 0 < rec["max_memory_used_mb"] <= 128
        texts = [l["text"] for l in rec["logs"]]
        assert "hello from fresh v1" in texts
        assert any("greeting" in t and "[INFO]" in t for t in texts)


def test_http_trigger_serves_any_path_and_query(hello):
    with hello.client() as c:
        r = c.get("/fn/hello/any/path?name=q")
    assert r.status_code == 200
    assert r.json() == {"hello": "q", "path": "/any/path"}


def test_function_error_exits_non_zero_and_shows_type_and_message(server, tmp_path):
    src = write_function(tmp_path / "boom", {"main.py": "def handler(event, context):\n    return 1 / 0\n"})
    assert server.cli("deploy", "boom", str(src)).returncode == 0
    r = server.cli("invoke", "boom")
    assert r.returncode != 0
    assert "ZeroDivisionError" in r.stderr and "division by zero" in r.stderr
    with server.client() as c:
        resp = c.post("/v1/functions/boom/invocations", content=b"{}")
    assert resp.status_code == 500 and resp.headers["x-mist-function-error"] == "Unhandled"
    body = resp.json()
    assert body["errorType"] == "ZeroDivisionError" and any("main.py" in f for f in body["stackTrace"])


def test_timeout_kills_the_handler_and_the_next_call_works(server, tmp_path):
    src = write_function(tmp_path / "slow", {"main.py": (
        "import os, time\n"
        "INSTANCE = os.urandom(8).hex()\n"
        "def handler(event, context):\n"
        "    if event == 'sleep':\n"
        "        time.sleep(30)\n"
        "    return INSTANCE\n")})  # fmt: skip
    assert server.cli("deploy", "slow", str(src), "--timeout", "1").returncode == 0
    with server.client() as c:
        first = c.post("/v1/functions/slow/invocations", content=b'"fast"').json()
        t0 = time.monotonic()
        r = c.post("/v1/functions/slow/invocations", content=b'"sleep"')
        took = time.monotonic() - t0
        assert r.status_code == 500
        assert r.json()["errorMessage"] == "Task timed out after 1.00 seconds"
        assert took < 5
        again = c.post("/v1/functions/slow/invocations", content=b'"fast"')
        assert again.status_code == 200 and again.json() != first  # the instance was replaced


def test_import_error_is_reported_on_invoke(server, tmp_path):
    src = write_function(tmp_path / "imp", {"main.py": "import no_such_module\ndef handler(e, c):\n    return 1\n"})
    assert server.cli("deploy", "imp", str(src)).returncode == 0
    with server.client() as c:
        r = c.post("/v1/functions/imp/invocations", content=b"{}")
    assert r.status_code == 500
    assert r.json()["errorType"] == "Runtime.ImportModuleError"
    assert "No module named 'no_such_module'" in r.json()["errorMessage"]


def test_syntax_error_is_refused_at_deploy_with_the_traceback(server, tmp_path):
    src = write_function(tmp_path / "syn", {"main.py": "def handler(event, context)\n    return 1\n"})
    r = server.cli("deploy", "syn", str(src))
    assert r.returncode != 0
    assert "SyntaxError" in r.stderr and "main.py" in r.stderr


def test_env_vars_and_context_reach_the_handler(server, tmp_path):
    src = write_function(tmp_path / "ctx", {"main.py": (
        "import os\n"
        "def handler(event, context):\n"
        "    return {'greeting': os.environ['GREETING'], 'name': context.function_name,\n"
        "            'memory': context.memory_limit_in_mb, 'left': context.get_remaining_time_in_millis(),\n"
        "            'cwd': os.getcwd(), 'arn': context.invoked_function_arn}\n")})  # fmt: skip
    r = server.cli("deploy", "ctx", str(src), "--env", "GREETING=hi", "--memory", "256", "--timeout", "10")
    assert r.returncode == 0, r.stderr
    out = json.loads(server.cli("invoke", "ctx").stdout)
    assert out["greeting"] == "hi" and out["name"] == "ctx" and int(out["memory"]) == 256
    assert 9000 < out["left"] <= 10000
    assert out["cwd"] == "/var/task" and "ctx" in out["arn"]


def test_ls_show_rm(server, tmp_path):
    src = write_function(tmp_path / "gone", {"main.py": "def handler(e, c):\n    return 1\n"})
    assert server.cli("deploy", "gone", str(src)).returncode == 0
    listed = json.loads(server.cli("ls", "--json").stdout)
    assert "gone" in [f["name"] for f in listed["functions"]] if isinstance(listed, dict) else [
        f["name"] for f in listed]
    assert server.cli("show", "gone").returncode == 0
    assert server.cli("rm", "gone", "--yes").returncode == 0
    r = server.cli("invoke", "gone")
    assert r.returncode != 0 and "does not exist" in (r.stderr + r.stdout)


def test_logs_follow_shows_new_lines_as_they_come(hello):
    with subprocess.Popen(
        [MIST, "logs", "hello", "--follow", "--limit", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={"MIST_URL": hello.url, "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    ) as proc:  # fmt: skip
        try:
            with hello.client() as c:
                deadline = time.monotonic() + 20  # the CLI is following once the server counts it
                while c.get("/v1/statistics").json()["InvocationLog"]["followers"] < 1:
                    assert time.monotonic() < deadline and proc.poll() is None, "mist logs --follow never connected"
                    time.sleep(0.05)
                assert c.post("/v1/functions/hello/invocations", content=b'{"name": "followed"}').status_code == 200
            deadline = time.monotonic() + 10
            seen = ""
            assert proc.stdout is not None
            while "greeting followed" not in seen:
                left = deadline - time.monotonic()
                assert left > 0, f"not followed within 10 s; seen: {seen!r}"
                if select.select([proc.stdout], [], [], left)[0]:  # never blocks past the deadline
                    chunk = os.read(proc.stdout.fileno(), 65536).decode()  # the fd itself: nothing buffered unseen
                    assert chunk, f"mist logs --follow exited; seen: {seen!r}"
                    seen += chunk
        finally:
            proc.terminate()


def test_concurrent_deploys_of_one_name_both_land(server, tmp_path):
    src = write_function(tmp_path / "race", {"main.py": "def handler(e, c):\n    return 1\n"})
    procs = [
        subprocess.Popen([MIST, "deploy", "race", str(src), "--json"], stdout=subprocess.PIPE, text=True,
                         env={"MIST_URL": server.url, "PATH": "/usr/bin:/bin"})
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    versions = sorted(json.loads(out)["version"] for out in outs)
    assert versions == [1, 2, 3]
    with server.client() as c:
        assert c.post("/v1/functions/race/invocations").json() == 1
