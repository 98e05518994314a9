"""The sandboxes' cpuset group (mist/worker/cgroups.py): the zygote joins it, so every sandbox
is in it, and `Worker.set_sandbox_cpus` moves running and future sandboxes alike."""

import os
from pathlib import Path

import pytest

from tests.worker.conftest import call, value, worker_config
from mist.worker import Worker

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(not Path("/sys/fs/cgroup/cpuset/cpuset.cpus").exists() or len(os.sched_getaffinity(0)) < 2,
                       reason="needs the cpuset cgroup hierarchy and 2+ CPUs"),
]

AFFINITY = "import os\n\ndef handler(event, context):\n    return sorted(os.sched_getaffinity(0))\n"


async def test_set_sandbox_cpus_moves_running_and_new_sandboxes(tmp_path, function):
    every = sorted(os.sched_getaffinity(0))
    w = Worker(worker_config(tmp_path))
    await w.start()
    try:
        group = w._cgroups.cpuset
        assert w.sandbox_cpus_settable
        assert str(w._spawner.pid) in (group / "cgroup.procs").read_text().split()
        warm = function(AFFINITY)
        assert value(await call(w, warm)) == every
        w.set_sandbox_cpus(frozenset(every[1:]))
        assert value(await call(w, warm)) == every[1:]  # the running instance was moved
        assert value(await call(w, function(AFFINITY))) == every[1:]  # a new one starts there
        w.set_sandbox_cpus(frozenset(every))
        assert value(await call(w, warm)) == every
    finally:
        await w.stop()
    assert not group.exists()  # removed with the worker's other groups
