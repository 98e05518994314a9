"""The Lambda contract through the Worker API, in real sandboxes."""

import asyncio
import json
import time
from pathlib import Path

import pytest

from tests.worker.conftest import call, value

pytestmark = pytest.mark.sandbox


async def test_hello_world_returns_the_handlers_value(worker, function):
    spec = function("""
        def handler(event, context):
            return {"hello": event["name"]}
    """)
    result = await call(worker, spec, {"name": "mist"})
    assert value(result) == {"hello": "mist"}
    assert result.duration_ms > 0 and result.max_memory_used_mb > 0
    assert result.started_at <= result.ended_at


async def test_first_call_is_cold_with_init_time_and_the_next_is_warm_on_the_same_instance(worker, function):
    spec = function("""
        import time
        time.sleep(0.01)
        def handler(event, context):
            return event
    """)
    cold = await call(worker, spec, 1)
    warm = await call(worker, spec, 2)
    assert (cold.cold_start, warm.cold_start) == (True, False)
    assert cold.init_ms >= 10 and warm.init_ms == 0
    assert cold.instance_id == warm.instance_id
    assert value(warm) == 2


async def test_full_fork_path_works_without_a_prewarm_pool(tmp_path, function):
    from mist.worker import Worker
    from tests.worker.conftest import worker_config

    w = Worker(worker_config(tmp_path, prewarm=0))
    await w.start()
    try:
        result = await call(w, function("def handler(e, c):\n    return 'full'\n"))
        assert value(result) == "full" and result.cold_start
        assert w.statistics().pool_cold_starts == 0
    finally:
        await w.stop()


async def test_async_handler(worker, function):
    spec = function("""
        import asyncio
        async def handler(event, context):
            await asyncio.sleep(0.01)
            return {"async": True}
    """)
    assert value(await call(worker, spec)) == {"async": True}


async def test_context_fields_and_remaining_time(worker, function):
    spec = function("""
        def handler(event, context):
            return {k: getattr(context, k) for k in (
                "aws_request_id", "request_id", "function_name", "function_version", "memory_limit_in_mb",
                "invoked_function_arn", "log_group_name", "log_stream_name", "client_context", "identity")
            } | {"remaining": context.get_remaining_time_in_millis()}
    """, memory_mb=256, timeout_s=3.0)
    result = await worker.invoke(spec, "req-42", b"{}")
    got = value(result)
    assert got["aws_request_id"] == got["request_id"] == "req-42"
    assert (got["function_name"], got["function_version"], got["memory_limit_in_mb"]) == ("fn", str(spec.version), "256")
    assert got["invoked_function_arn"] == f"arn:mist:lambda:local:default:function:fn:{spec.version}"
    assert got["log_group_name"] == "/mist/fn" and result.instance_id in got["log_stream_name"]
    assert got["client_context"] is None and got["identity"] is None
    assert 2500 < got["remaining"] <= 3000


async def test_stdout_stderr_and_logging_are_captured_per_invocation(worker, function):
    spec = function("""
        import logging, sys
        print("during init")
        logger = logging.getLogger()
        logger.setLevel(logging.INFO)
        def handler(event, context):
            print("out", event)
            print("no newline", end="")
            sys.stderr.write("err line\\n")
            logger.info("info %s", event)
            return None
    """)
    first = await call(worker, spec, 1)
    second = await call(worker, spec, 2)
    streams = [(line.stream, line.text) for line in first.logs]
    assert streams[:3] == [("stdout", "during init"), ("stdout", "out 1"), ("stderr", "err line")]
    assert streams[4] == ("stdout", "no newline")  # a partial line is flushed when the handler returns
    log_line = first.logs[3]
    assert log_line.stream == "log"
    level, ts, rid, message = log_line.text.split("\t")
    assert (level, message) == ("[INFO]", "info 1") and ts.endswith("Z") and len(rid) == 32
    assert [line.text for line in second.logs if line.stream == "stdout"] == ["out 2", "no newline"]
    assert all(line.ts > 0 for line in first.logs)


async def test_os_level_output_of_subprocesses_is_attributed_to_the_invocation(worker, function):
    spec = function("""
        import os, subprocess
        def handler(event, context):
            os.write(1, b"raw fd write\\n")
            subprocess.run(["/bin/echo", "from a child"], check=True)
            return "done"
    """)
    result = await call(worker, spec)
    assert value(result) == "done"
    texts = [line.text for line in result.logs]
    assert "raw fd write" in texts and "from a child" in texts


async def test_logs_written_before_a_timeout_are_kept(worker, function):
    spec = function("""
        import time
        def handler(event, context):
            print("started")
            time.sleep(10)
    """, timeout_s=0.5)
    result = await call(worker, spec)
    assert result.error["errorType"] == "Sandbox.Timedout"
    assert [line.text for line in result.logs] == ["started"]


async def test_handler_exception_has_lambdas_shape(worker, function):
    spec = function("""
        def handler(event, context):
            return 1 / 0
    """)
    result = await call(worker, spec)
    assert not result.ok and result.payload == b"null"
    assert result.error == {
        "errorType": "ZeroDivisionError",
        "errorMessage": "division by zero",
        "stackTrace": ['  File "/var/task/main.py", line 3, in handler\n    return 1 / 0\n'],
    }


async def test_unserialisable_return_value_is_a_marshal_error(worker, function):
    result = await call(worker, function("def handler(e, c):\n    return b'raw'\n"))
    assert result.error["errorType"] == "Runtime.MarshalError"
    assert result.error["errorMessage"] == "Unable to marshal response: Object of type bytes is not JSON serializable"


@pytest.mark.parametrize(("source", "handler", "error_type", "message"), [
    ("import not_installed_pkg\n", "main.handler", "Runtime.ImportModuleError",
     "Unable to import module 'main': No module named 'not_installed_pkg'"),
    ("def handler(e, c):\n    return 1\n", "main.hndlr", "Runtime.HandlerNotFound", "Handler 'hndlr' missing on module 'main'"),
    ("def handler(e, c)\n    return 1\n", "main.handler", "Runtime.UserCodeSyntaxError",
     "Syntax error in module 'main': expected ':' (main.py, line 1)"),
])
async def test_init_errors_are_reported_on_every_invocation(worker, function, source, handler, error_type, message):
    spec = function(source, handler=handler)
    first, second = await call(worker, spec), await call(worker, spec)
    for result in (first, second):
        assert not result.ok
        assert result.error["errorType"] == error_type
        assert result.error["errorMessage"] == message
    assert first.cold_start and not second.cold_start


async def test_handler_in_a_package_module_and_a_layer(worker, function, tmp_path):
    layer = tmp_path / "layer"
    (layer / "greeting").mkdir(parents=True)
    (layer / "greeting" / "__init__.py").write_text("WORD = 'hi'\n")
    for p in (layer, layer / "greeting"):
        p.chmod(0o755)
    spec = function("", handler="pkg.app.handler", layer_dir=layer, files={
        "pkg/__init__.py": "",
        "pkg/app.py": "import greeting\ndef handler(e, c):\n    return greeting.WORD\n",
    })
    assert value(await call(worker, spec)) == "hi"


async def test_env_vars_from_the_spec_and_lambdas_are_set(worker, function):
    spec = function("""
        import os, sys
        def handler(event, context):
            return {k: os.environ.get(k) for k in event} | {"path": sys.path[:2], "cwd": os.getcwd()}
    """, env=(("GREETING", "hi"), ("PATH", "/custom/bin")), memory_mb=192)
    keys = ["GREETING", "PATH", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "LAMBDA_TASK_ROOT", "TZ", "HOME"]
    got = value(await call(worker, spec, keys))
    assert got == {
        "GREETING": "hi", "PATH": "/custom/bin", "AWS_LAMBDA_FUNCTION_NAME": "fn",
        "AWS_LAMBDA_FUNCTION_VERSION": str(spec.version), "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "192",
        "LAMBDA_TASK_ROOT": "/var/task", "TZ": ":UTC", "HOME": "/tmp",
        "path": ["/var/task", "/opt/python"], "cwd": "/var/task",
    }


ENV_REPORT = """
    import ctypes, os
    def handler(event, context):
        libc = ctypes.CDLL(None)
        environ, c_env, i = ctypes.POINTER(ctypes.c_char_p).in_dll(libc, "environ"), {}, 0
        while environ[i] is not None:  # what a C library or a child process would see
            key, _, val = environ[i].decode().partition("=")
            c_env[key] = val
            i += 1
        return {"os": dict(os.environ), "c": c_env}
"""


def expected_environment(spec, log_stream: str) -> dict[str, str]:
    import sys
    return {
        "PATH": "/custom/bin", "LANG": "C.UTF-8", "TZ": ":UTC", "PYTHONPATH": "/var/task:/opt/python",
        "HOME": "/tmp", "GREETING": "hi", "AWS_LAMBDA_FUNCTION_NAME": "fn",
        "AWS_LAMBDA_FUNCTION_VERSION": str(spec.version), "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "192",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/mist/fn", "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand", "AWS_REGION": "local", "AWS_DEFAULT_REGION": "local",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info[0]}.{sys.version_info[1]}",
        "LAMBDA_TASK_ROOT": "/var/task", "LAMBDA_RUNTIME_DIR": sys.base_prefix, "_HANDLER": "main.handler",
    }


@pytest.mark.parametrize("path", ["pool", "full"])
async def test_the_function_sees_exactly_its_environment_and_the_reserved_keys_win(tmp_path, function, path):
    """Nothing of mist's own environment, every default and reserved key, the user's keys over
    the defaults, the reserved ones over the user's; in os.environ and in the C environment
    alike, whether the sandbox came from the prewarmed pool (which inherits the shared part of
    the environment from the zygote) or was forked for this call."""
    from mist.worker import Worker
    from tests.worker.conftest import worker_config

    w = Worker(worker_config(tmp_path, prewarm=1 if path == "pool" else 0))
    await w.start()
    try:
        if path == "pool":
            assert await w.wait_prewarmed()
        spec = function(ENV_REPORT, env=(("GREETING", "hi"), ("PATH", "/custom/bin"), ("AWS_REGION", "mars-1")),
                        memory_mb=192)  # fmt: skip
        result = await call(w, spec)
        got = value(result)
        stream = got["os"]["AWS_LAMBDA_LOG_STREAM_NAME"]
        assert stream.endswith(f"[{spec.version}]{result.instance_id}")
        assert got["os"] == expected_environment(spec, stream)
        assert got["c"] == got["os"]
        assert (w.statistics().pool_cold_starts == 1) == (path == "pool")
    finally:
        await w.stop()


async def test_async_handler_serves_concurrent_invocations_on_one_instance(worker, function):
    spec = function("""
        import asyncio
        async def handler(event, context):
            print("start", event)
            await asyncio.sleep(0.5)
            print("end", event)
            return event
    """, concurrency=2)
    await call(worker, spec, 0)  # cold start outside the measurement
    t0 = time.monotonic()
    a, b = await asyncio.gather(call(worker, spec, 1), call(worker, spec, 2))
    assert time.monotonic() - t0 < 0.9
    assert (value(a), value(b)) == (1, 2)
    assert a.instance_id == b.instance_id
    assert [line.text for line in a.logs] == ["start 1", "end 1"]
    assert [line.text for line in b.logs] == ["start 2", "end 2"]


async def test_sync_handler_with_concurrency_runs_in_threads(worker, function):
    spec = function("""
        import time
        def handler(event, context):
            time.sleep(0.5)
            print("done", event)
            return event
    """, concurrency=2)
    await call(worker, spec, 0)
    t0 = time.monotonic()
    a, b = await asyncio.gather(call(worker, spec, 1), call(worker, spec, 2))
    assert time.monotonic() - t0 < 0.9 and a.instance_id == b.instance_id
    assert [line.text for line in a.logs] == ["done 1"] and [line.text for line in b.logs] == ["done 2"]


async def test_concurrency_one_starts_a_second_instance_for_an_overlapping_call(worker, function):
    spec = function("import time\ndef handler(e, c):\n    time.sleep(0.3)\n    return e\n")
    a, b = await asyncio.gather(call(worker, spec, 1), call(worker, spec, 2))
    assert a.instance_id != b.instance_id and a.cold_start and b.cold_start


async def test_payload_bytes_round_trip_exactly(worker, function):
    spec = function("def handler(e, c):\n    return e\n")
    event = {"unicode": "é✓", "list": list(range(1000)), "nested": {"a": None}}
    result = await worker.invoke(spec, "r", json.dumps(event).encode())
    assert json.loads(result.payload) == event
    empty = await worker.invoke(spec, "r2", b"")
    assert empty.payload == b"null"


async def test_high_concurrency_sync_handler_gets_enough_threads(worker, function):
    spec = function("import time\ndef handler(e, c):\n    time.sleep(0.3)\n    return e\n", concurrency=80)
    await call(worker, spec, -1)
    t0 = time.monotonic()
    results = await asyncio.gather(*(call(worker, spec, i) for i in range(80)))
    assert time.monotonic() - t0 < 2.0
    assert [value(r) for r in results] == list(range(80))
    assert len({r.instance_id for r in results}) == 1


async def test_bytes_written_to_stdout_buffer_are_captured(worker, function):
    spec = function("import sys\ndef handler(e, c):\n    sys.stdout.buffer.write(b'raw bytes\\n')\n")
    assert [line.text for line in (await call(worker, spec)).logs] == ["raw bytes"]


async def test_a_cold_start_reports_where_its_time_went(worker, function):
    spec = function("def handler(e, c):\n    return 1\n")
    cold = await call(worker, spec)
    warm = await call(worker, spec)
    steps = cold.init_steps
    assert steps is not None and warm.init_steps is None
    assert list(steps)[:2] == ["attach", "assign_read"] and list(steps)[-2:] == ["assign_to_init", "page_faults"]
    for step in ("attach", "environment", "runtime", "import"):
        assert step in steps and steps[step] >= 0
    # pivot_root, the uid switch, the user namespace, capabilities and seccomp happen before
    # the sandbox is pooled, not on the cold path
    assert not {"pivot_root", "setuid", "userns", "capabilities", "seccomp"} & set(steps)
    assert sum(v for k, v in steps.items() if k not in ("attach", "assign_to_init", "page_faults")) <= steps["assign_to_init"] + 1
    assert steps["page_faults"] >= 0
    last = worker.statistics().last_cold_start
    assert {**steps, "invoke": last["invoke"], "total": last["total"]} == last
    assert last["total"] >= steps["assign_to_init"]


def _voluntary_switches(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


async def test_a_warm_instance_sleeps_once_per_invocation(worker, function):
    """A waiting instance is woken by its next invocation only: not also when the Worker reads
    the answer it sent (a thread asleep in a unix socket's recv is woken by that too; the
    runtime sleeps in poll(POLLIN)). Each such wake-up was a context switch, and on an idle
    CPU an inter-processor interrupt, per invocation."""
    spec = function("def handler(event, context):\n    return event\n")
    first = await call(worker, spec, 0)
    pid = worker._all[first.instance_id].pid
    before = _voluntary_switches(pid)
    n = 200
    for i in range(n):
        result = await call(worker, spec, i)
        assert value(result) == i and result.instance_id == first.instance_id
    per_invocation = (_voluntary_switches(pid) - before) / n
    assert per_invocation <= 1.25, f"{per_invocation:.2f} context switches per invocation (1 expected)"


async def test_the_worker_counts_its_invocations_in_flight_so_writes_are_held_only_under_load(worker, function):
    """The gateway holds its writes to the end of the loop's turn only while other invocations
    are in flight (mist/writeburst.py); the Worker keeps that count, through crashes too."""
    from mist import writeburst

    burst = writeburst.for_loop(asyncio.get_running_loop())
    slow = function("import time\ndef handler(event, context):\n    time.sleep(0.3)\n    return event\n")
    calls = [asyncio.ensure_future(call(worker, slow, i)) for i in range(3)]
    await asyncio.sleep(0.15)
    assert burst.calls == 3
    assert [value(r) for r in await asyncio.gather(*calls)] == [0, 1, 2]
    assert burst.calls == 0
    crash = function("import os\ndef handler(event, context):\n    os._exit(3)\n")
    assert not (await call(worker, crash)).ok
    assert burst.calls == 0
