"""The zygote tree on real sandboxes: functions with a dependency layer fork from a zygote that
imported the layer; layer zygotes are shared, evicted, and fall back when they cannot serve.

The layers here are written by the tests (no PyPI); the numpy layer is in bench/cold_start_tree.py.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from mist.worker import Worker
from tests.worker.conftest import call, value, worker_config

pytestmark = pytest.mark.sandbox

# The handler's module tells whether the layer was imported before the handler's own import.
REPORT = """
import sys
PRE = {name!r} in sys.modules
import {name}
def handler(event, context):
    return {{"pre": PRE, "value": getattr({name}, "VALUE", None)}}
"""


def make_layer(root: Path, files: dict[str, str]) -> Path:
    """A layer directory as pip --target leaves it (here without dist-info: its names are read
    from the directory), readable by sandbox uids."""
    root.mkdir(parents=True, mode=0o755)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.write_text(textwrap.dedent(text))
        path.chmod(0o644)
    return root


def tree(worker: Worker):
    return worker.statistics().spawner


@pytest.fixture
async def tree_worker(tmp_path: Path):
    made: list[Worker] = []

    async def start(**overrides: object) -> Worker:
        w = Worker(worker_config(tmp_path / f"w{len(made)}", prewarm=0, **overrides))
        made.append(w)
        await w.start()
        return w

    yield start
    for w in made:
        await w.stop()


async def test_a_layer_function_forks_from_a_zygote_that_imported_the_layer(tree_worker, function, tmp_path):
    worker = await tree_worker()
    layer = make_layer(tmp_path / "layer", {"greeting/__init__.py": "VALUE = 'hi'\n"})
    spec = function(REPORT.format(name="greeting"), layer_dir=layer)
    result = await call(worker, spec)
    assert value(result) == {"pre": True, "value": "hi"} and result.cold_start
    stats = tree(worker)
    assert stats.layer_spawns == 1 and stats.layer_fallbacks == 0
    (zygote,) = stats.layer_zygotes
    assert (zygote.layer_dir, zygote.state, zygote.imported, zygote.sandboxes) == (str(layer), "ready", ("greeting",), 1)


MIST_MODULES = """
import sys
def handler(event, context):
    return sorted(m for m in sys.modules if m == "mist" or m.startswith(("mist.", "pyseccomp")))
"""


async def test_the_tree_is_loaded_on_first_use_and_sandboxes_still_see_no_mist_modules(tree_worker, function, tmp_path):
    worker = await tree_worker()
    assert tree(worker).layer_zygotes == ()  # nothing loaded or started before a layer function
    assert value(await call(worker, function(MIST_MODULES, name="plain"))) == []
    layer = make_layer(tmp_path / "layer", {"greeting/__init__.py": "VALUE = 'hi'\n"})
    assert value(await call(worker, function(REPORT.format(name="greeting"), layer_dir=layer)))["pre"] is True
    assert value(await call(worker, function(MIST_MODULES, name="plain-after"))) == []  # forked after the tree loaded
    assert value(await call(worker, function(MIST_MODULES, name="layered", layer_dir=layer))) == []


async def test_functions_with_the_same_layer_share_one_layer_zygote(tree_worker, function, tmp_path):
    worker = await tree_worker()
    layer = make_layer(tmp_path / "layer", {"greeting/__init__.py": "VALUE = 'hi'\n"})
    a = function(REPORT.format(name="greeting"), layer_dir=layer, name="a")
    b = function(REPORT.format(name="greeting"), layer_dir=layer, name="b")
    results = await asyncio.gather(call(worker, a), call(worker, b), call(worker, a))
    assert all(value(r)["pre"] for r in results)
    stats = tree(worker)
    assert len(stats.layer_zygotes) == 1 and stats.layer_zygotes[0].sandboxes == 3 and stats.layer_zygotes_started == 1


async def test_without_the_tree_the_handler_imports_the_layer_itself(tree_worker, function, tmp_path):
    worker = await tree_worker(zygote_tree=False)
    layer = make_layer(tmp_path / "layer", {"greeting/__init__.py": "VALUE = 'hi'\n"})
    assert value(await call(worker, function(REPORT.format(name="greeting"), layer_dir=layer))) == {
        "pre": False, "value": "hi"}
    assert tree(worker).layer_zygotes == ()


async def test_a_layer_zygote_is_built_when_its_function_is_deployed_ahead_of_the_first_cold_start(
        tree_worker, function, tmp_path):
    worker = await tree_worker()
    layer = make_layer(tmp_path / "layer", {"greeting/__init__.py": "VALUE = 'hi'\n", "extra.py": "VALUE = 2\n"})
    spec = function(REPORT.format(name="extra"), layer_dir=layer)
    assert await worker.provision(spec) == 0  # what a deploy calls: no min instances, the layer zygote starts
    assert await worker._spawner.wait_layer(str(layer), 10.0)
    (zygote,) = tree(worker).layer_zygotes
    assert zygote.imported == ("extra", "greeting") and zygote.sandboxes == 0
    assert value(await call(worker, spec)) == {"pre": True, "value": 2}


async def test_a_package_that_fails_to_import_is_skipped_and_left_to_the_handler(tree_worker, function, tmp_path):
    worker = await tree_worker()
    layer = make_layer(tmp_path / "layer", {
        "good.py": "VALUE = 'good'\n",
        "needs_config.py": "import os\nVALUE = os.environ['AWS_LAMBDA_FUNCTION_NAME']\n",
    })
    good = await call(worker, function(REPORT.format(name="good"), layer_dir=layer))
    assert value(good) == {"pre": True, "value": "good"}
    late = await call(worker, function(REPORT.format(name="needs_config"), layer_dir=layer))
    assert value(late) == {"pre": False, "value": "fn"}  # imported by the handler, in its environment
    (zygote,) = tree(worker).layer_zygotes
    assert zygote.imported == ("good",) and zygote.skipped == {"needs_config": "KeyError: 'AWS_LAMBDA_FUNCTION_NAME'"}


async def test_a_layer_zygote_that_dies_importing_leaves_the_layer_to_the_ordinary_path(tree_worker, function, tmp_path):
    worker = await tree_worker()
    layer = make_layer(tmp_path / "layer", {
        "crashy.py": "import os\nif 'AWS_LAMBDA_FUNCTION_NAME' not in os.environ:\n    os._exit(3)\nVALUE = 1\n",
    })
    result = await call(worker, function(REPORT.format(name="crashy"), layer_dir=layer))
    assert value(result) == {"pre": False, "value": 1}
    stats = tree(worker)
    assert stats.layer_fallbacks == 1 and stats.layers_cooling_down == (str(layer),) and stats.layer_zygotes == ()
    again = await call(worker, function(REPORT.format(name="crashy"), layer_dir=layer))  # no second try for a while
    assert value(again) == {"pre": False, "value": 1} and tree(worker).layer_zygotes_started == 1


async def test_the_least_recently_used_layer_zygote_is_evicted_beyond_the_maximum(tree_worker, function, tmp_path):
    worker = await tree_worker(layer_zygotes_max=1)
    one = make_layer(tmp_path / "one", {"first.py": "VALUE = 1\n"})
    two = make_layer(tmp_path / "two", {"second.py": "VALUE = 2\n"})
    a = function(REPORT.format(name="first"), layer_dir=one, name="a")
    before = await call(worker, a)
    assert value(before) == {"pre": True, "value": 1}
    assert value(await call(worker, function(REPORT.format(name="second"), layer_dir=two, name="b")))["pre"]
    stats = tree(worker)
    assert [z.layer_dir for z in stats.layer_zygotes] == [str(two)] and stats.layer_evictions == 1
    after = await call(worker, a)  # the instance forked from the evicted zygote keeps serving
    assert value(after) == {"pre": True, "value": 1}
    assert not after.cold_start and after.instance_id == before.instance_id


async def test_idle_layer_zygotes_are_evicted_and_made_again_when_needed(tree_worker, function, tmp_path):
    worker = await tree_worker(layer_zygote_idle_s=0.3)
    layer = make_layer(tmp_path / "layer", {"greeting/__init__.py": "VALUE = 'hi'\n"})
    spec = function(REPORT.format(name="greeting"), layer_dir=layer)
    first = await call(worker, spec)
    for _ in range(50):
        if not tree(worker).layer_zygotes:
            break
        await asyncio.sleep(0.1)
    assert tree(worker).layer_zygotes == () and tree(worker).layer_evictions == 1
    warm = await call(worker, spec)
    assert not warm.cold_start and warm.instance_id == first.instance_id
    cold = await call(worker, function(REPORT.format(name="greeting"), layer_dir=layer))
    assert value(cold) == {"pre": True, "value": "hi"} and tree(worker).layer_zygotes_started == 2


async def test_layer_zygotes_over_their_memory_limit_are_evicted_least_recently_used_first(
        tree_worker, function, tmp_path):
    worker = await tree_worker(layer_zygotes_memory_mb=128)
    ballast = "DATA = bytearray(60 << 20)\nDATA[::4096] = b'x' * (len(DATA) // 4096)\nVALUE = len(DATA)\n"
    first = make_layer(tmp_path / "first", {"ballast_a.py": ballast})
    second = make_layer(tmp_path / "second", {"ballast_b.py": ballast})
    assert value(await call(worker, function(REPORT.format(name="ballast_a"), layer_dir=first, name="a")))["pre"]
    assert tree(worker).layer_zygotes[0].memory_mb > 60
    assert value(await call(worker, function(REPORT.format(name="ballast_b"), layer_dir=second, name="b")))["pre"]
    for _ in range(50):  # both together are over 128 MB: the one used longest ago goes
        if [z.layer_dir for z in tree(worker).layer_zygotes] == [str(second)]:
            break
        await asyncio.sleep(0.1)
    assert [z.layer_dir for z in tree(worker).layer_zygotes] == [str(second)]
    assert tree(worker).layer_evictions == 1


async def test_the_first_cold_start_teaches_the_layer_zygote_which_pages_to_copy_up_front(
        tree_worker, function, tmp_path):
    worker = await tree_worker()
    layer = make_layer(tmp_path / "layer", {"greeting/__init__.py": "VALUE = 'hi'\n"})
    first = await call(worker, function(REPORT.format(name="greeting"), layer_dir=layer))
    assert worker._all[first.instance_id].build_steps["prefaulted_kb"] == 0
    for _ in range(50):
        if tree(worker).layer_zygotes[0].touched_kb:
            break
        await asyncio.sleep(0.02)
    learned = tree(worker).layer_zygotes[0].touched_kb
    assert 256 <= learned <= 16 * 1024
    await asyncio.sleep(0.2)  # the next standby is made after the learning
    second = await call(worker, function(REPORT.format(name="greeting"), layer_dir=layer))
    assert value(second)["pre"] and worker._all[second.instance_id].build_steps["prefaulted_kb"] > 0


async def test_stopping_the_worker_leaves_no_layer_zygote_standby_or_cgroup(tree_worker, function, tmp_path):
    worker = await tree_worker()
    layer = make_layer(tmp_path / "layer", {"greeting/__init__.py": "VALUE = 'hi'\n"})
    assert value(await call(worker, function(REPORT.format(name="greeting"), layer_dir=layer)))["pre"]
    zygote_pid = tree(worker).layer_zygotes[0].pid
    parents = worker.cgroup_parents
    await worker.stop()
    assert not Path(f"/proc/{zygote_pid}").exists()
    assert not any(Path(p).exists() for p in parents.values())


@pytest.mark.network
async def test_numpy_from_pypi_is_imported_by_its_layer_zygote_and_works_in_the_sandbox(tree_worker, function, tmp_path):
    from mist.control.layers import LayerStore

    async def quiet(_: dict) -> None:
        pass

    store = LayerStore(tmp_path / "layers")
    layer = store.path(await store.ensure(b"numpy>=2,<3\n", quiet)) / "python"
    worker = await tree_worker()
    spec = function("""
        import sys
        PRE = "numpy" in sys.modules
        import numpy as np
        def handler(event, context):
            a = np.random.default_rng(1).random((200, 200))
            return {"pre": PRE, "inverse_ok": bool(np.allclose(np.linalg.inv(a) @ a, np.eye(200))),
                    "version": np.__version__}
    """, layer_dir=layer, memory_mb=512)
    result = value(await call(worker, spec))
    assert result["pre"] and result["inverse_ok"] and result["version"].startswith("2.")
    (zygote,) = tree(worker).layer_zygotes
    assert "numpy" in zygote.imported and tree(worker).layer_refused == 0


async def test_what_a_layers_import_sets_in_the_environment_is_gone_when_the_function_runs(
        tree_worker, function, tmp_path):
    """The layer zygote imports the layer with a minimal environment; what the import sets or
    changes there does not reach the functions forked from it: they get the environment every
    function gets, then their own."""
    worker = await tree_worker()
    layer = make_layer(tmp_path / "layer", {
        "setsenv.py": "import os\nos.environ.pop('HOME', None)\nos.environ['LEAKED'] = '1'\nos.environ['LANG'] = 'xx'\n",
    })
    spec = function("""
        import os, setsenv
        def handler(event, context):
            return {k: os.environ.get(k) for k in ("LEAKED", "LANG", "HOME", "AWS_REGION", "AWS_LAMBDA_FUNCTION_NAME")}
    """, layer_dir=layer)
    got = value(await call(worker, spec))
    (zygote,) = tree(worker).layer_zygotes
    assert zygote.imported == ("setsenv",)  # the function was forked from the layer zygote
    assert got == {"LEAKED": None, "LANG": "C.UTF-8", "HOME": "/tmp", "AWS_REGION": "local",
                   "AWS_LAMBDA_FUNCTION_NAME": "fn"}
