"""The Worker's own lifecycle: keep-alive, retire, capacity, statistics, clean stop and restart."""

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from mist.errors import NoCapacity, SandboxFailed
from mist.worker import Worker
from tests.worker.conftest import call, value, worker_config

pytestmark = pytest.mark.sandbox


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def processes_in(parents: dict) -> list[int]:
    """Every pid whose /proc/PID/cgroup mentions one of this worker's cgroup parents."""
    marks = {"/" + str(Path(p).relative_to(Path(p).parents[1])) for p in parents.values()}
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/cgroup").read_text()
            except OSError:
                continue
            if any(mark in text for mark in marks):
                found.append(int(entry))
    return found


async def test_idle_instances_are_reclaimed_after_the_keepalive(tmp_path, function):
    clock = Clock()
    w = Worker(worker_config(tmp_path, keepalive_s=600), clock=clock)
    await w.start()
    try:
        spec = function("def handler(e, c):\n    return e\n")
        await call(w, spec, 1)
        clock.now += 599
        assert w.scale_tick().reclaimed == 0 and not (await call(w, spec, 2)).cold_start
        clock.now += 600
        assert w.scale_tick().reclaimed == 1
        assert (await call(w, spec, 3)).cold_start
    finally:
        await w.stop()


async def test_retire_kills_other_versions_and_keeps_the_named_one(worker, function):
    v1 = function("def handler(e, c):\n    return 1\n")
    v2 = function("def handler(e, c):\n    return 2\n")
    await call(worker, v1)
    await call(worker, v2)
    await worker.retire("fn", keep_version=v2.version)
    assert [(f.version, f.instances) for f in worker.statistics().functions] == [(v2.version, 1)]
    assert not (await call(worker, v2)).cold_start
    await worker.retire("fn")
    assert worker.statistics().functions == ()


async def test_retiring_a_busy_instance_lets_its_invocation_finish(worker, function):
    spec = function("import time\ndef handler(e, c):\n    time.sleep(0.3)\n    return 'finished'\n")
    running = asyncio.ensure_future(call(worker, spec))
    await asyncio.sleep(0.1)
    await worker.retire("fn")
    assert value(await running) == "finished"
    await asyncio.sleep(0.05)
    assert worker.statistics().instances == 0


async def test_no_capacity_when_nothing_frees_up_within_the_timeout(tmp_path, function):
    w = Worker(worker_config(tmp_path, memory_budget_mb=256, prewarm=0))
    await w.start()
    try:
        hog = function("import time\ndef handler(e, c):\n    time.sleep(1)\n", memory_mb=256, name="hog")
        quick = function("def handler(e, c):\n    return 1\n", memory_mb=256, timeout_s=0.3, name="quick")
        running = asyncio.ensure_future(call(w, hog))
        await asyncio.sleep(0.1)
        with pytest.raises(NoCapacity, match="no instance of quick:.* became free within 0.30 seconds") as info:
            await call(w, quick)
        assert not info.value.queue_full
        await running
        assert value(await call(w, quick)) == 1  # the idle hog is evicted to make room
    finally:
        await w.stop()


async def test_a_full_wait_queue_is_refused_at_once(tmp_path, function):
    w = Worker(worker_config(tmp_path, memory_budget_mb=256, prewarm=0, queue_limit=1))
    await w.start()
    try:
        spec = function("import time\ndef handler(e, c):\n    time.sleep(0.5)\n    return e\n", memory_mb=256)
        first = asyncio.ensure_future(call(w, spec, 1))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(call(w, spec, 2))
        await asyncio.sleep(0.05)
        assert w.statistics().waiting == 1
        with pytest.raises(NoCapacity) as info:
            await call(w, spec, 3)
        assert info.value.queue_full
        assert (value(await first), value(await queued)) == (1, 2)  # the queued one got the slot
    finally:
        await w.stop()


async def test_function_bigger_than_the_budget_is_refused(worker, function):
    with pytest.raises(NoCapacity, match="needs 4096 MB"):
        await call(worker, function("def handler(e, c):\n    return 1\n", memory_mb=4096))


async def test_missing_code_dir_is_a_sandbox_failure(worker, function, tmp_path):
    from dataclasses import replace

    spec = replace(function("def handler(e, c):\n    return 1\n"), code_dir=tmp_path / "does-not-exist")
    with pytest.raises(SandboxFailed, match="does-not-exist"):
        await call(worker, spec)


async def test_statistics_reflect_instances_pool_and_budget(worker, function):
    assert await worker.wait_prewarmed()
    spec = function("def handler(e, c):\n    return 1\n", memory_mb=256)
    await call(worker, spec)
    await call(worker, spec)
    stats = worker.statistics()
    (fn,) = stats.functions
    assert (fn.name, fn.instances, fn.idle, fn.busy, fn.memory_mb) == ("fn", 1, 1, 0, 256)
    assert (stats.invocations, stats.cold_starts, stats.pool_cold_starts) == (2, 1, 1)
    assert await worker.wait_prewarmed()
    assert worker.statistics().memory_reserved_mb == 256 + 128 * worker.config.prewarm
    with pytest.raises(AttributeError):
        stats.instances = 5  # type: ignore[misc]


async def test_stop_leaves_no_process_and_no_cgroup(tmp_path, function):
    w = Worker(worker_config(tmp_path, prewarm=2))
    await w.start()
    try:
        spec = function("import subprocess\ndef handler(e, c):\n    subprocess.Popen(['/bin/sleep', '60'])\n    return 1\n")
        await call(w, spec)
        assert await w.wait_prewarmed()
        parents = w.cgroup_parents
        zygote = w.statistics().zygote_pid
        assert len(processes_in(parents)) >= 4  # the instance, its sleep, two prewarmed sandboxes
    finally:
        await w.stop()
    assert processes_in(parents) == []
    assert not any(Path(p).exists() for p in parents.values())
    assert zygote is not None and not Path(f"/proc/{zygote}").exists()


async def test_start_removes_what_a_crashed_run_left_behind(tmp_path):
    config = worker_config(tmp_path, prewarm=0)
    first = Worker(config)
    parents = first.cgroup_parents
    stale = {ctrl: Path(p) / "sold-1" for ctrl, p in parents.items()}
    orphan = subprocess.Popen(["/bin/sleep", "60"])
    try:
        for d in stale.values():
            d.mkdir(parents=True)
            (d / "tasks").write_text(str(orphan.pid))
        await first.start()
        assert orphan.wait(timeout=5) == -9
        assert not any(d.exists() for d in stale.values())
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
        await first.stop()


async def test_a_dead_zygote_is_replaced_and_warm_instances_keep_serving(worker, function):
    import signal

    warm = function("def handler(e, c):\n    return 'warm'\n", name="warm")
    await call(worker, warm)
    os.kill(worker.statistics().zygote_pid, signal.SIGKILL)
    await asyncio.sleep(0.1)
    assert value(await call(worker, warm)) == "warm"
    cold = await call(worker, function("def handler(e, c):\n    return 'new'\n", name="new"))
    assert value(cold) == "new"


async def test_stop_cuts_invocations_in_flight_short_with_a_clear_error(tmp_path, function):
    w = Worker(worker_config(tmp_path, prewarm=0))
    await w.start()
    spec = function("import time\ndef handler(e, c):\n    time.sleep(30)\n")
    running = asyncio.ensure_future(call(w, spec))
    await asyncio.sleep(0.3)
    await w.stop()
    result = await running
    assert result.error["errorMessage"] == "Runtime exited with error: signal: killed (the worker stopped this instance)"
    with pytest.raises(NoCapacity, match="not running"):
        await call(w, spec)


async def test_log_lines_beyond_the_cap_are_dropped_with_a_note(tmp_path, function):
    w = Worker(worker_config(tmp_path, prewarm=0, max_log_lines=5))
    await w.start()
    try:
        result = await call(w, function("def handler(e, c):\n    for i in range(20):\n        print(i)\n"))
        assert [line.text for line in result.logs] == ["0", "1", "2", "3", "4", "15 more log lines were dropped"]
        assert result.logs[-1].stream == "platform"
    finally:
        await w.stop()


async def test_start_kills_the_zygote_of_a_crashed_run_on_the_same_data_dir(tmp_path):
    from mist.worker.spawner import BOOTSTRAP

    config = worker_config(tmp_path, prewarm=0)
    root = config.data_dir / "sandbox-root"
    root.mkdir(parents=True)
    # Looks like a zygote of this data dir (argv) but only sleeps.
    fake = subprocess.Popen([config.python, "-c", "import time; time.sleep(60)", BOOTSTRAP.replace("\n", ";"),
                             "zygote.main", "-", "0", str(root)])
    (config.data_dir / "zygote.pid").write_text(f"{fake.pid}\n")
    while b"zygote.main" not in Path(f"/proc/{fake.pid}/cmdline").read_bytes():
        await asyncio.sleep(0.01)  # right after a vfork+exec, cmdline can still read empty
    w = Worker(config)
    try:
        await w.start()
        assert fake.wait(timeout=5) == -9
        assert w.statistics().zygote_pid != fake.pid
    finally:
        if fake.poll() is None:
            fake.kill()
            fake.wait()
        await w.stop()


async def test_the_worker_attaching_code_leaves_its_own_filesystem_view_as_it_was(worker, function):
    """The Worker enters each sandbox's mount namespace to attach the code (isolation.attach_code):
    afterwards the calling thread is back in the host's namespace, in its working directory."""
    cwd, ns = os.getcwd(), os.readlink("/proc/thread-self/ns/mnt")
    for _ in range(3):
        assert value(await call(worker, function("def handler(e, c):\n    return 1\n"))) == 1
    assert os.getcwd() == cwd and os.readlink("/proc/thread-self/ns/mnt") == ns
    assert Path("/proc/self/root").resolve() == Path("/")


async def test_the_pool_is_refilled_only_after_the_refill_delay(tmp_path, function):
    w = Worker(worker_config(tmp_path, prewarm=1, refill_delay_s=0.5))
    await w.start()
    try:
        assert await w.wait_prewarmed()
        cold = await call(w, function("def handler(e, c):\n    return 1\n"))
        assert cold.cold_start and w.statistics().prewarmed == 0
        await asyncio.sleep(0.2)
        assert w.statistics().prewarmed + w.statistics().prewarm_starting == 0  # not even started
        deadline = asyncio.get_running_loop().time() + 10
        while w.statistics().prewarmed == 0:
            assert asyncio.get_running_loop().time() < deadline, "the pool was never refilled"
            await asyncio.sleep(0.05)
    finally:
        await w.stop()
