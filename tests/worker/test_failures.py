"""Timeouts, OOM kills, crashes and runaway processes: reported in Lambda's shape, contained,
and the next invocation is served by a fresh instance."""

import pytest

from tests.worker.conftest import call, value

pytestmark = pytest.mark.sandbox


async def test_timeout_kills_the_instance_and_the_next_call_gets_a_new_one(worker, function):
    spec = function("""
        import time
        def handler(event, context):
            if event == "slow":
                time.sleep(30)
            return "fast"
    """, timeout_s=1.0)
    first = await call(worker, spec, "fast")
    slow = await call(worker, spec, "slow")
    assert slow.error == {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 1.00 seconds",
                          "stackTrace": []}
    assert 1000 <= slow.duration_ms < 1500
    after = await call(worker, spec, "fast")
    assert value(after) == "fast" and after.cold_start and after.instance_id != first.instance_id
    assert worker.statistics().timeouts == 1


async def test_out_of_memory_is_reported_and_the_next_call_works(worker, function):
    spec = function("""
        def handler(event, context):
            if event == "hog":
                data = b"x" * (300 * 1024 * 1024)
                return len(data)
            return "ok"
    """, memory_mb=128)
    hog = await call(worker, spec, "hog")
    assert hog.error["errorType"] == "Runtime.OutOfMemory"
    assert "128 MB" in hog.error["errorMessage"]
    assert hog.max_memory_used_mb >= 100
    after = await call(worker, spec, "ok")
    assert value(after) == "ok" and after.cold_start


async def test_the_functions_memory_limit_holds_from_its_first_line_in_a_pool_sandbox(worker, function):
    """A pool sandbox waits under the pool's 128 MB; the function's own 64 MB is set before its
    module is imported, so 100 MB at import is out of memory."""
    assert await worker.wait_prewarmed()
    spec = function("""
        data = b"x" * (100 * 1024 * 1024)
        def handler(event, context):
            return len(data)
    """, memory_mb=64)
    hog = await call(worker, spec)
    assert hog.error["errorType"] == "Runtime.OutOfMemory" and "64 MB" in hog.error["errorMessage"]
    assert worker.statistics().cold_starts >= 1


@pytest.mark.parametrize(("source", "message"), [
    ("import os\ndef handler(e, c):\n    os._exit(3)\n", "Runtime exited with error: exit status 3"),
    ("import ctypes\ndef handler(e, c):\n    ctypes.string_at(0)\n", "Runtime exited with error: signal: segmentation fault"),
    ("import sys\ndef handler(e, c):\n    sys.exit(7)\n", "Runtime exited with error: exit status 7"),
])
async def test_crashes_are_exit_errors(worker, function, source, message):
    spec = function(source)
    result = await call(worker, spec)
    assert result.error == {"errorType": "Runtime.ExitError", "errorMessage": message, "stackTrace": []}
    other = function("def handler(e, c):\n    return 'still serving'\n", name="other")
    assert value(await call(worker, other)) == "still serving"


async def test_other_functions_keep_serving_while_one_times_out(worker, function):
    import asyncio

    slow = function("import time\ndef handler(e, c):\n    time.sleep(30)\n", timeout_s=1.0, name="slow")
    fast = function("def handler(e, c):\n    return e\n", name="fast")
    slow_call = asyncio.ensure_future(call(worker, slow))
    results = [await call(worker, fast, i) for i in range(20)]
    assert [value(r) for r in results] == list(range(20))
    assert (await slow_call).error["errorType"] == "Sandbox.Timedout"


async def test_fork_bomb_is_contained_by_the_pids_limit(worker, function):
    spec = function("""
        import os, time
        def handler(event, context):
            children = 0
            try:
                while True:
                    if os.fork() == 0:
                        time.sleep(60)
                        os._exit(0)
                    children += 1
            except OSError as exc:
                return {"children": children, "errno": exc.errno}
    """)
    got = value(await call(worker, spec))
    assert got["errno"] == 11 and 0 < got["children"] < worker.config.pids_max  # EAGAIN
    assert value(await call(worker, function("def handler(e, c):\n    return 1\n", name="next"))) == 1


async def test_tmp_is_writable_but_size_capped(worker, function):
    spec = function("""
        import errno
        def handler(event, context):
            with open("/tmp/small", "wb") as f:
                f.write(b"x" * 1024 * 1024)
            try:
                with open("/tmp/big", "wb") as f:
                    for _ in range(64):
                        f.write(b"x" * 1024 * 1024)
                        f.flush()
            except OSError as exc:
                return errno.errorcode[exc.errno]
            return "no limit"
    """)
    assert worker.config.tmp_size_mb == 16
    assert value(await call(worker, spec)) == "ENOSPC"


@pytest.mark.parametrize("garbage", [
    b"\x0e\x00\x00\x00\x02\x00\x00\x00\x00[]",  # a RESULT frame whose header is not an object
    b'\x0e\x00\x00\x00\x0a\x00\x00\x00\x00{"id":"1"}',  # a forged RESULT missing every field
    b"\xff" * 64,  # not a frame at all
])
async def test_a_function_scribbling_on_the_runtimes_channel_only_breaks_itself(worker, function, garbage):
    spec = function(f"""
        import os, time
        def handler(event, context):
            os.write(3, {garbage!r})
            time.sleep(5)
    """, timeout_s=3)
    result = await call(worker, spec)
    assert result.error["errorType"] == "Runtime.ExitError"
    assert value(await call(worker, function("def handler(e, c):\n    return 'fine'\n", name="ok"))) == "fine"
