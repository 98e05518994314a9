"""Copy-on-write bookkeeping used by the prewarm pool: which pages a process has its own copy
of (pagemap), copying chosen pages up front, and the zygote's clean inherited state."""

import mmap
import os
import sys

import pytest

from mist.worker import syscalls as sc

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's pagemap flags needs root")


def _child_writes(buf: mmap.mmap, pages: list[int]) -> tuple[int, int]:
    """Fork a child that writes to `pages` of buf then waits; returns (pid, go_w)."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        for p in pages:
            buf[p * sc.PAGE] = 1
        os.write(ready_w, b"x")
        os.read(go_r, 1)
        os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    os.read(ready_r, 1)
    os.close(ready_r)
    return pid, go_w


@needs_root
def test_exclusive_pages_are_the_ones_a_child_wrote_since_the_fork():
    buf = mmap.mmap(-1, 16 * sc.PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.write(b"\0" * len(buf))  # every page present and shared with the child after the fork
    base = _address(buf)
    assert any(s <= base < e for s, e in sc.writable_private_mappings())
    pid, go = _child_writes(buf, [2, 3, 7])
    try:
        runs = sc.exclusive_pages(pid, [(base, base + 16 * sc.PAGE)])
        assert runs == [(base + 2 * sc.PAGE, 2 * sc.PAGE), (base + 7 * sc.PAGE, sc.PAGE)]
    finally:
        os.write(go, b"x")
        os.waitpid(pid, 0)
        buf.close()


def test_populate_ranges_copies_those_pages_and_skips_unmapped_ones():
    buf = mmap.mmap(-1, 8 * sc.PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    base = _address(buf)
    assert sc.populate_ranges([(base, 2 * sc.PAGE), (base + 4 * sc.PAGE, sc.PAGE)]) == 3 * sc.PAGE
    assert sc.populate_ranges([(base + 64 * 1024 * 1024 * 1024, sc.PAGE)]) == 0
    assert sc.exclusive_pages(os.getpid(), [(base, base + 8 * sc.PAGE)]) == [
        (base, 2 * sc.PAGE), (base + 4 * sc.PAGE, sc.PAGE)]
    buf.close()


def _address(buf: mmap.mmap) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def test_runtime_warm_up_leaves_no_state_behind():
    from mist.worker import runtime

    out, err, env = sys.stdout, sys.stderr, dict(os.environ)
    fds = len(os.listdir("/proc/self/fd"))
    runtime.warm_up(rounds=3)
    assert (sys.stdout, sys.stderr, dict(os.environ)) == (out, err, env)
    assert len(os.listdir("/proc/self/fd")) == fds


@pytest.mark.sandbox
async def test_after_a_cold_start_pool_sandboxes_copy_only_the_pages_it_touched(worker, function):
    assert worker.config.prefault == "touched" and await worker.wait_prewarmed()
    first = await function_call(worker, function)
    assert first.cold_start and first.init_steps["page_faults"] > 0
    for _ in range(200):
        if worker._spawner.learned_kb:  # noqa: SLF001
            break
        await __import__("asyncio").sleep(0.01)
    learned = worker._spawner.learned_kb  # noqa: SLF001
    assert 256 <= learned <= 12 * 1024  # far less than every writable page of the zygote
    assert await worker.wait_prewarmed()  # the pool sandbox the cold start took is replaced in the background
    worker._discard(worker._pool[0])  # noqa: SLF001 - built before the zygote learned
    assert await worker.wait_prewarmed()
    assert worker._pool[0].build_steps["prefaulted_kb"] == learned  # noqa: SLF001
    second = await function_call(worker, function)
    assert second.cold_start and second.init_steps["page_faults"] < first.init_steps["page_faults"]


async def function_call(worker, function):
    from tests.worker.conftest import call

    result = await call(worker, function("def handler(e, c):\n    return 1\n"))
    assert result.ok
    return result


@pytest.mark.sandbox
async def test_a_sandbox_starts_without_the_zygotes_build_tools_loaded(worker, function):
    """Every module the zygote has loaded is mapped by every sandbox forked from it. pyseccomp
    (and ctypes.util, shutil, bz2, lzma it pulls in) only compiles the filters, in a child."""
    from tests.worker.conftest import call, value

    source = "import sys\ndef handler(e, c):\n    return sorted(sys.modules)\n"
    loaded = set(value(await call(worker, function(source))))
    assert {"json", "asyncio", "logging"} <= loaded  # the zygote's preloaded modules are there
    assert not loaded & {"pyseccomp", "ctypes.util", "shutil", "bz2", "lzma", "tempfile"}


def test_the_filters_compiled_in_a_child_are_the_ones_compiled_here():
    from mist.worker import seccomp

    assert seccomp.compile_in_child() == (seccomp.compile_filter(network=False), seccomp.compile_filter(network=True),
                                          seccomp.compile_layer_filter())  # fmt: skip


def test_a_filter_compile_that_fails_in_the_child_says_why(monkeypatch):
    from mist.worker import seccomp

    monkeypatch.setattr(seccomp, "DENIED", ("no_such_syscall_anywhere",))
    with pytest.raises(RuntimeError, match=r"(?s)compiling the seccomp filters failed:.*Traceback.*add_rule"):
        seccomp.compile_in_child()
